"""`adaptseg train`."""

from __future__ import annotations

import typer

from adaptseg.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    @app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def train(ctx: typer.Context) -> None:
        """Train a recipe's stages (source-only and every adaptation method)."""
        raise NotBuiltError(
            "`adaptseg train` is not built yet: it needs the trainer (issue #4)", fix="see the open issues"
        )
