"""Parts shared by several methods, written once (shared/methods/README.md, fidelity policy 5)."""
