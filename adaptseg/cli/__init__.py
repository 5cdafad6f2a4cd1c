"""Typer commands: thin wrappers that parse arguments, load recipes and call the library."""
