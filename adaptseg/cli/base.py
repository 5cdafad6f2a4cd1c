"""What every command module builds on: the Typer app factory and the CLI's error handling.

Command modules import this, never :mod:`adaptseg.cli.app` (which imports every command module), so
each ``adaptseg.cli.<command>`` module imports on its own.

Errors caused by input reach the user as one line on stderr (``error: …``) with exit status 2; an
:class:`OSError` (no permission, no space left, device busy, a file where a folder should be) becomes
such a line too, naming the path and the cause.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from typer.core import TyperGroup

from adaptseg.errors import UserError

#: exit status of a run that wrote everything except unreadable images (each reported by name)
EXIT_SKIPPED = 1


def exit_if_skipped(skipped: list[str]) -> None:
    """After a run over many images: name the unreadable ones that were skipped, and exit with status 1."""
    if skipped:
        typer.echo(f"skipped {len(skipped)} unreadable image(s): {', '.join(skipped)}", err=True)
        raise typer.Exit(EXIT_SKIPPED)


def report(exc: UserError) -> None:
    """Print a user error as the one ``error: …`` line on stderr."""
    typer.echo(f"error: {exc}", err=True)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """A :class:`UserError` or :class:`OSError` raised inside ends the process as one ``error: …`` line on
    stderr and the error's exit status (2), not a traceback. The CLI's commands run inside it; so do the
    bench scripts that read recipes, run folders and datasets."""
    try:
        yield
    except UserError as exc:
        report(exc)
        raise SystemExit(exc.exit_code) from None
    except OSError as exc:
        error = UserError.from_os_error(exc)
        report(error)
        raise SystemExit(error.exit_code) from None


class ErrorReportingGroup(TyperGroup):
    """Runs every sub-command inside :func:`one_line_errors`."""

    def invoke(self, ctx):  # noqa: ANN001 - click's signature
        with one_line_errors():
            return super().invoke(ctx)


def make_typer(**kwargs) -> typer.Typer:
    """A Typer app/sub-app with adaptseg's error handling and help settings."""
    kwargs.setdefault("no_args_is_help", True)
    kwargs.setdefault("pretty_exceptions_enable", False)
    kwargs.setdefault("add_completion", False)
    return typer.Typer(
        cls=ErrorReportingGroup, context_settings={"help_option_names": ["-h", "--help"]}, **kwargs
    )


# ------------------------------------------------------------------ options the engine commands share
#: the model/engine options ``infer`` and ``pseudo-label`` both take (one definition, one help text)
ENGINE = {
    "arch": typer.Option(None, "--arch", help="Model preset for weights that do not name theirs."),
    "device": typer.Option("auto", "--device", help="cpu, cuda, cuda:1 … (auto: CUDA when available)."),
    "batch_size": typer.Option(None, "--batch-size", min=1, help="Crops per forward (overrides the preset)."),
    "overrides": typer.Option([], "--set", help="Override a preset key, e.g. --set tta.flip=true."),
}
