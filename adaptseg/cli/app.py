"""The ``adaptseg`` command line: one Typer app; each command lives in its own module.

Errors caused by input reach the user as one line on stderr (``error: …``) with exit status 2.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from adaptseg.allocator import tune_host_allocator
from adaptseg.errors import UserError


class _Group(TyperGroup):
    """Turns :class:`UserError` from any sub-command into one line and exit status 2."""

    def invoke(self, ctx):  # noqa: ANN001 - click's signature
        try:
            return super().invoke(ctx)
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None


def make_typer(**kwargs) -> typer.Typer:
    """A Typer app/sub-app with adaptseg's error handling and help settings."""
    kwargs.setdefault("no_args_is_help", True)
    kwargs.setdefault("pretty_exceptions_enable", False)
    kwargs.setdefault("add_completion", False)
    return typer.Typer(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, **kwargs)


app = make_typer(help="Domain-adaptive semantic segmentation: train, adapt, export and run segmentation models.")


def _register() -> None:
    from adaptseg.cli import data, demo, eval, export, infer, models, pseudo_label, train

    for module in (train, pseudo_label, export, infer, eval, demo):
        module.register(app)
    app.add_typer(data.app, name="data", help="Generate MiniCity and check dataset trees.")
    app.add_typer(models.app, name="models", help="List architecture presets.")


_register()


def main() -> None:
    """Console-script entry point (also ``python -m adaptseg``)."""
    tune_host_allocator()  # this process is ours: keep freed activations for the next step
    try:
        app()
    except UserError as exc:  # raised outside a command (e.g. while parsing)
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
