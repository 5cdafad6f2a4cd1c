"""`adaptseg train RECIPE|NAME [--set k=v ...] [--out RUN_DIR] [--stage NAME] [--resume] [--strict]`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        recipe: Path = typer.Argument(
            ...,
            help="Training recipe: a YAML path, or a shipped recipe's name (e.g. source_only/minicity-gta5).",
        ),
        set_: list[str] = typer.Option(
            [], "--set", help="Override a recipe key, e.g. --set optim.lr=1e-4 (repeatable)."
        ),
        out: Path | None = typer.Option(
            None, "--out", help="Run folder (default: runs/<method>-<recipe name>)."
        ),
        stage: str | None = typer.Option(None, "--stage", help="Run only this stage."),
        resume: bool = typer.Option(
            False, "--resume", help="Continue an interrupted stage from its last checkpoint."
        ),
        strict: bool = typer.Option(
            False,
            "--strict",
            help="Stop on label values outside the dataset's label map (default: warn, ignore them).",
        ),
    ) -> None:
        """Train a recipe's stages in order; finished stages are skipped. Multi-GPU: launch with torchrun."""
        from adaptseg.resources import TRAIN
        from adaptseg.train.pipeline import run_recipe

        run_recipe(TRAIN.find(recipe), set_, out=out, stage=stage, resume=resume, strict=strict)
