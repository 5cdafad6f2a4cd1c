"""Suite-wide settings."""

from hypothesis import settings

# CI machines are shared: a property test's example may take longer than hypothesis' default 200 ms
# deadline without anything being wrong. Speed lives in bench/, never in timed unit tests.
settings.register_profile("adaptseg", deadline=None)
settings.load_profile("adaptseg")
