"""The ``adaptseg`` command line: one Typer app; each command lives in its own module.

Errors caused by input reach the user as one line on stderr (``error: …``) with exit status 2
(:mod:`adaptseg.cli.base`).
"""

from __future__ import annotations

from adaptseg.allocator import tune_host_allocator
from adaptseg.cli import data, demo, eval, export, infer, models, pseudo_label, train
from adaptseg.cli.base import make_typer, one_line_errors

app = make_typer(
    help="Domain-adaptive semantic segmentation: train, adapt, export and run segmentation models."
)

for _command in (train, pseudo_label, export, infer, eval, demo):
    _command.register(app)
app.add_typer(data.app, name="data", help="Generate MiniCity and check dataset trees.")
app.add_typer(models.app, name="models", help="List architecture presets.")


def main() -> None:
    """Console-script entry point (also ``python -m adaptseg``)."""
    tune_host_allocator()  # this process is ours: keep freed activations for the next step
    with one_line_errors():  # also what is raised outside a command (e.g. while parsing)
        app()
