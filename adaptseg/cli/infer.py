"""`adaptseg infer`: segment every image of a folder (recursive, any sizes) with a model or artifact.

Exit status: 0 when every image was written; 1 when some images could not be read (each is reported
by name and skipped, the rest are written); 2 for bad input (``error: …``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from adaptseg.cli.base import ENGINE, exit_if_skipped


def register(app: typer.Typer) -> None:
    @app.command("infer")
    def infer(
        model: str = typer.Option(
            ..., "--model", help="Run folder, weights file, model preset name or exported artifact."
        ),
        folder: Path = typer.Option(
            ..., "--folder", help="Folder of images (searched recursively; jpg/png/…)."
        ),
        out: Path = typer.Option(..., "--out", help="Output folder: label/, colour/, overlay/, confidence/."),
        colour: bool = typer.Option(False, "--colour", help="Also write palette colour PNGs."),
        overlay: bool = typer.Option(False, "--overlay", help="Also write image + colour overlays."),
        confidence: bool = typer.Option(
            False, "--confidence", help="Also write confidence maps (255 × max prob)."
        ),
        preset: str | None = typer.Option(
            None, "--preset", help="Inference preset (infer/<name>.yaml or a path)."
        ),
        arch: str | None = ENGINE["arch"],
        device: str = ENGINE["device"],
        batch_size: int | None = ENGINE["batch_size"],
        overrides: list[str] = ENGINE["overrides"],
    ) -> None:
        """Segment a folder of images: trainId PNGs, and on request colour, overlay and confidence PNGs.

        Outputs mirror the folder (``a.jpg`` → ``label/a.png``); inputs that share a stem keep their
        whole name (``a.jpg`` and ``a.png`` → ``label/a.jpg.png``, ``label/a.png.png``). Unreadable images
        are reported by name and skipped; the exit status is then 1.
        """
        from adaptseg.infer.backends import load_backend
        from adaptseg.infer.config import load_preset
        from adaptseg.infer.run import check_model_path, input_images, segment_folder

        config = load_preset(preset, [*overrides, *([f"batch_size={batch_size}"] if batch_size else [])])
        input_images(folder)  # fail on a bad folder before the model loads
        check_model_path(model)
        backend = load_backend(model, device, config.backend, arch=arch)
        kinds = [
            "label",
            *(k for k, on in (("colour", colour), ("overlay", overlay), ("confidence", confidence)) if on),
        ]
        summary = segment_folder(backend, folder, out, config, kinds=kinds)
        typer.echo(f"wrote {summary.written} image(s) to {out} ({', '.join(kinds)})")
        exit_if_skipped(summary.skipped)
