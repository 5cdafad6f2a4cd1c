"""`adaptseg models …`: list architecture presets."""

from __future__ import annotations

import typer

from adaptseg.cli.base import make_typer

app = make_typer()


@app.command("list")
def list_presets(pattern: str = typer.Argument("*", help="Glob over preset names.")) -> None:
    """List the architecture presets in models/*.yaml with their parameter counts and capabilities."""
    from adaptseg.models.presets import print_presets

    print_presets(pattern)
