"""`adaptseg eval`: score predictions (or, once the engine lands, a model) on a dataset split."""

from __future__ import annotations

import typer

from adaptseg.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    @app.command("eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def eval_(ctx: typer.Context) -> None:
        """Score a folder of prediction PNGs or a model on a dataset split (per-class IoU, mIoU)."""
        raise NotBuiltError("`adaptseg eval` is not built yet: it needs the metrics (issue #2)")
