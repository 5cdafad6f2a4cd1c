"""`adaptseg demo [--out DIR] [--method ddb|atp] [--seed N] [--quick]`: the whole story on MiniCity.

Thin: parse the options and call :func:`adaptseg.demo.run_demo` (which generates the data, trains,
adapts, exports, runs the ONNX artifact, evaluates and writes the report).
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Path | None = typer.Option(
            None,
            "--out",
            "-o",
            help="Demo folder: data, runs, artifacts, report (default runs/demo, runs/demo-quick).",
        ),
        method: str | None = typer.Option(
            None, "--method", "-m", help="Adaptation method: ddb (default: gains most in the time) or atp."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the MiniCity data and of every training stage."),
        quick: bool = typer.Option(
            False,
            "--quick",
            help="Reduced size (fewer images and iterations, ~3 min): the end-to-end test's setting.",
        ),
        threads: int | None = typer.Option(
            None,
            "--threads",
            help="torch CPU threads (default: torch's; 1 is faster on a machine that is busy).",
        ),
        overlays: int = typer.Option(4, "--overlays", min=0, help="How many val images the report shows."),
        pretrained: bool | None = typer.Option(
            None,
            "--pretrained/--no-pretrained",
            help="Start every model's encoder from MiniCity's pre-trained one (pretrained:minicity-synscapes, "
            "the stand-in for ImageNet) or from random weights (default: as the method's recipe says; "
            "ATP pre-trained, DDB random).",
        ),
        int8: bool = typer.Option(
            False,
            "--int8",
            help="Also export the adapted model as static int8 ONNX (export/onnx-int8.yaml) and score it.",
        ),
    ) -> None:
        """Run the whole story on MiniCity: source-only, adapt, export, infer, eval, report."""
        from rich.console import Console

        from adaptseg.demo import DEFAULT_METHOD, DemoOptions, run_demo

        options = DemoOptions(
            out=out or Path("runs/demo-quick" if quick else "runs/demo"),
            method=method or DEFAULT_METHOD,
            seed=seed,
            quick=quick,
            overlays=overlays,
            threads=threads,
            pretrained=pretrained,
            int8=int8,
        )
        table = Console()
        if not table.is_terminal:  # a log file: keep the table's rows on one line each
            table = Console(width=160)
        run_demo(options, table_console=table)
