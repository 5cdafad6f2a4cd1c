"""`adaptseg pseudo-label`: write a model's pseudo-labels for a dataset split into a store folder.

Resumable: images whose files are complete are skipped, so re-running after an interruption finishes
the rest. Exit status: 0 when every image is labelled; 1 when unreadable images were skipped
(reported by name); 2 for bad input.
"""

from __future__ import annotations

from pathlib import Path

import typer

#: exit status when some images were unreadable and skipped
EXIT_SKIPPED = 1


def register(app: typer.Typer) -> None:
    @app.command("pseudo-label")
    def pseudo_label(
        model: str = typer.Option(..., "--model", help="Run folder, weights file, model preset name or exported artifact."),
        dataset: str = typer.Option(..., "--dataset", help="Dataset name (cityscapes, acdc, darkzurich, …)."),
        root: Path = typer.Option(..., "--root", help="The dataset's root folder (official layout)."),
        split: str | None = typer.Option(None, "--split", help="Split to label (default: the dataset's default)."),
        out: Path = typer.Option(..., "--out", help="Store folder (label/, conf/, topk/, store.json)."),
        preset: str | None = typer.Option(None, "--preset", help="Inference preset (default: the dataset's protocol)."),
        topk: int | None = typer.Option(None, "--topk", min=0, help="Also keep the k most likely classes per pixel."),
        topk_stride: int | None = typer.Option(None, "--topk-stride", min=1, help="Subsampling of the top-k soft labels."),
        arch: str | None = typer.Option(None, "--arch", help="Model preset for weights that do not name theirs."),
        device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:1 … (auto: CUDA when available)."),
        batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Crops per forward (overrides the preset)."),
        overrides: list[str] = typer.Option([], "--set", help="Override a preset key, e.g. --set tta.flip=true."),
    ) -> None:
        """Write pseudo-labels (trainId + confidence PNGs, optional top-k soft labels) for a dataset split."""
        from rich.console import Console

        from adaptseg.data import build_dataset
        from adaptseg.errors import UserError
        from adaptseg.infer.backends import load_backend
        from adaptseg.infer.config import dataset_preset, load_preset
        from adaptseg.infer.engine import SlidingWindow
        from adaptseg.infer.sources import dataset_items, progress_bar
        from adaptseg.infer.store import PseudoLabelStore

        sets = [*overrides, *([f"batch_size={batch_size}"] if batch_size else [])]
        ds = build_dataset(dataset, root, split, labels=False)
        config = load_preset(preset if preset is not None else dataset_preset(ds.name), sets)
        store = PseudoLabelStore(
            out, topk=topk, topk_stride=topk_stride,
            meta={"model": str(model), "preset": str(preset), "dataset": ds.name, "split": ds.split},
        )
        backend = load_backend(model, device, config.backend, arch=arch)
        store.open_for_writing(int(backend.num_classes))
        todo = [i for i, entry in enumerate(ds.entries) if not store.is_complete(entry.id)]
        done = len(ds) - len(todo)
        if done:
            typer.echo(f"{done} of {len(ds)} image(s) already labelled in {out}; labelling {len(todo)}")
        engine = SlidingWindow(backend, config)
        console = Console(stderr=True)
        skipped: list[str] = []

        def report(image_id: str, error: UserError) -> None:
            skipped.append(image_id)
            console.print(f"[yellow]skipped[/] {error}", highlight=False, soft_wrap=True)

        with progress_bar("pseudo-labelling", len(todo), console) as progress:
            task = progress.add_task("pseudo-labelling", total=len(todo))
            for prediction in engine.run(dataset_items(ds, todo), on_error=report):
                store.write(prediction.id, prediction.output)
                prediction.release()
                progress.advance(task)
        typer.echo(f"wrote {len(todo) - len(skipped)} pseudo-label(s) to {out}")
        if skipped:
            typer.echo(f"skipped {len(skipped)} unreadable image(s): {', '.join(skipped)}", err=True)
            raise typer.Exit(EXIT_SKIPPED)
