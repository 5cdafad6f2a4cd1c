"""`adaptseg infer`: segment every image of a folder (recursive, any sizes) with a model or artifact.

Exit status: 0 when every image was written; 1 when some images could not be read (each is reported
by name and skipped, the rest are written); 2 for bad input (``error: …``).
"""

from __future__ import annotations

from pathlib import Path

import typer

#: exit status when some images were unreadable and skipped
EXIT_SKIPPED = 1


def output_names(files: list[Path], folder: Path) -> list[str]:
    """Relative output names (no extension) for input files; ``a.jpg`` and ``a.png`` side by side keep
    their extensions (``a.jpg``, ``a.png``) so that neither overwrites the other."""
    rel = [f.relative_to(folder).as_posix() for f in files]
    stems = [r.rsplit(".", 1)[0] for r in rel]
    seen: dict[str, int] = {}
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
    return [s if seen[s] == 1 else r for s, r in zip(stems, rel, strict=True)]


def register(app: typer.Typer) -> None:
    @app.command("infer")
    def infer(
        model: str = typer.Option(..., "--model", help="Run folder, weights file, model preset name or exported artifact."),
        folder: Path = typer.Option(..., "--folder", help="Folder of images (searched recursively; jpg/png/…)."),
        out: Path = typer.Option(..., "--out", help="Output folder: label/, colour/, overlay/, confidence/."),
        colour: bool = typer.Option(False, "--colour", help="Also write palette colour PNGs."),
        overlay: bool = typer.Option(False, "--overlay", help="Also write image + colour overlays."),
        confidence: bool = typer.Option(False, "--confidence", help="Also write confidence maps (255 × max prob)."),
        preset: str | None = typer.Option(None, "--preset", help="Inference preset (infer/<name>.yaml or a path)."),
        arch: str | None = typer.Option(None, "--arch", help="Model preset for weights that do not name theirs."),
        device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:1 … (auto: CUDA when available)."),
        batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Crops per forward (overrides the preset)."),
        overrides: list[str] = typer.Option([], "--set", help="Override a preset key, e.g. --set tta.flip=true."),
    ) -> None:
        """Segment a folder of images: trainId PNGs, and on request colour, overlay and confidence PNGs.

        Unreadable images are reported by name and skipped; the exit status is then 1.
        """
        from rich.console import Console

        from adaptseg.errors import UserError
        from adaptseg.infer.backends import load_backend
        from adaptseg.infer.config import load_preset
        from adaptseg.infer.engine import SlidingWindow
        from adaptseg.infer.sources import SideLoads, file_items, progress_bar
        from adaptseg.infer.writers import PredictionWriter
        from adaptseg.io import list_images

        config = load_preset(preset, [*overrides, *([f"batch_size={batch_size}"] if batch_size else [])])
        files = list_images(folder)
        if not files:
            raise UserError("no images in this folder", path=folder, fix="pass a folder holding .png/.jpg images")
        names = output_names(files, folder)
        ids = [f.relative_to(folder).as_posix() for f in files]
        backend = load_backend(model, device, config.backend, arch=arch)
        engine = SlidingWindow(backend, config)
        kinds = ["label", *(k for k, on in (("colour", colour), ("overlay", overlay), ("confidence", confidence)) if on)]
        writer = PredictionWriter(out, kinds)
        images = SideLoads() if overlay else None
        console = Console(stderr=True)
        skipped: list[str] = []

        def report(image_id: str, error: UserError) -> None:
            skipped.append(image_id)
            console.print(f"[yellow]skipped[/] {error}", highlight=False, soft_wrap=True)

        with progress_bar("segmenting", len(files), console) as progress:
            task = progress.add_task("segmenting", total=len(files))
            for prediction in engine.run(file_items(files, ids, images=images), on_error=report):
                label = prediction.label().to("cpu").numpy()
                conf = prediction.confidence().cpu() if confidence else None
                prediction.release()
                image = images.pop(prediction.index) if images is not None else None
                writer.write(names[prediction.index], label, conf, image)
                progress.advance(task)
            if images is not None:  # unreadable images stored nothing; nothing else may be left
                assert len(images) == 0
        written = len(files) - len(skipped)
        typer.echo(f"wrote {written} image(s) to {out} ({', '.join(writer.kinds)})")
        if skipped:
            typer.echo(f"skipped {len(skipped)} unreadable image(s): {', '.join(skipped)}", err=True)
            raise typer.Exit(EXIT_SKIPPED)
