"""`adaptseg infer`."""

from __future__ import annotations

import typer

from adaptseg.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    @app.command("infer", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def infer(ctx: typer.Context) -> None:
        """Segment a folder of images with a model or exported artifact."""
        raise NotBuiltError(
            "`adaptseg infer` is not built yet: it needs the inference engine (issue #5)", fix="see the open issues"
        )
