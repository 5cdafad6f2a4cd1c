"""`adaptseg pseudo-label`."""

from __future__ import annotations

import typer

from adaptseg.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    @app.command("pseudo-label", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def pseudo_label(ctx: typer.Context) -> None:
        """Write pseudo-labels (trainId + confidence PNGs) for a dataset split."""
        raise NotBuiltError(
            "`adaptseg pseudo-label` is not built yet: it needs the inference engine and pseudo-label store (issue #5)", fix="see the open issues"
        )
