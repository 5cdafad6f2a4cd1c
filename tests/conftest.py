"""Suite-wide settings."""

from hypothesis import settings

from adaptseg.allocator import tune_host_allocator

# The suite runs with the allocator setting of the `adaptseg` command (tests/test_allocator.py checks
# both settings in fresh processes): large freed activations are reused instead of faulted in again.
tune_host_allocator()

# CI machines are shared: a property test's example may take longer than hypothesis' default 200 ms
# deadline without anything being wrong. Speed lives in bench/, never in timed unit tests.
settings.register_profile("adaptseg", deadline=None)
settings.load_profile("adaptseg")
