"""`adaptseg export`."""

from __future__ import annotations

import typer

from adaptseg.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    @app.command("export", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def export(ctx: typer.Context) -> None:
        """Export a trained student to TorchScript, ONNX or TensorRT."""
        raise NotBuiltError(
            "`adaptseg export` is not built yet: it needs the export package (issue #6)", fix="see the open issues"
        )
