"""`adaptseg demo`: the whole pipeline on MiniCity."""

from __future__ import annotations

import typer

from adaptseg.errors import NotBuiltError


def register(app: typer.Typer) -> None:
    @app.command("demo", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def demo(ctx: typer.Context) -> None:
        """Run the whole story on MiniCity: source-only, adapt, export, infer, eval."""
        raise NotBuiltError("`adaptseg demo` is not built yet: it needs MiniCity (issue #2)")
