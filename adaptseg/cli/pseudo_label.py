"""`adaptseg pseudo-label`: write a model's pseudo-labels for a dataset split into a store folder.

Resumable: images whose files are complete are skipped, so re-running after an interruption finishes
the rest. The store records what made it (the model and its weights' hash, dataset, split, inference
settings, top-k); a run with other ones is refused unless ``--force`` starts the store over — which
deletes only a folder that is provably a pseudo-label store.

Exit status: 0 when every image is labelled; 1 when unreadable images were skipped (reported by
name); 2 for bad input.

Under ``torchrun --nproc_per_node=N`` each process labels its shard of the split into the same store
(:mod:`adaptseg.infer.ranks`); rank 0 reports the totals.
"""

from __future__ import annotations

from pathlib import Path

import typer

from adaptseg.cli.base import ENGINE, exit_if_skipped


def register(app: typer.Typer) -> None:
    @app.command("pseudo-label")
    def pseudo_label(
        model: str = typer.Option(
            ..., "--model", help="Run folder, weights file, model preset name or exported artifact."
        ),
        dataset: str = typer.Option(..., "--dataset", help="Dataset name (cityscapes, acdc, darkzurich, …)."),
        root: Path = typer.Option(..., "--root", help="The dataset's root folder (official layout)."),
        split: str | None = typer.Option(
            None, "--split", help="Split to label (default: the dataset's default)."
        ),
        out: Path = typer.Option(..., "--out", help="Store folder (label/, conf/, topk/, store.json)."),
        preset: str | None = typer.Option(
            None, "--preset", help="Inference preset (default: the dataset's protocol)."
        ),
        topk: int | None = typer.Option(
            None, "--topk", min=0, help="Also keep the k most likely classes per pixel."
        ),
        topk_stride: int | None = typer.Option(
            None, "--topk-stride", min=1, help="Subsampling of the top-k soft labels."
        ),
        arch: str | None = ENGINE["arch"],
        device: str = ENGINE["device"],
        batch_size: int | None = ENGINE["batch_size"],
        overrides: list[str] = ENGINE["overrides"],
        force: bool = typer.Option(
            False,
            "--force",
            help="Start an existing store over (only a pseudo-label store folder is deleted).",
        ),
    ) -> None:
        """Write pseudo-labels (trainId + confidence PNGs, optional top-k soft labels) for a dataset split."""
        from adaptseg.data import build_dataset
        from adaptseg.infer.backends import load_backend
        from adaptseg.infer.config import dataset_preset, load_preset
        from adaptseg.infer.ranks import barrier, inference_processes
        from adaptseg.infer.run import check_model_path, pseudo_label_split
        from adaptseg.infer.store import PseudoLabelStore, StoreOrigin, remove_store

        sets = [*overrides, *([f"batch_size={batch_size}"] if batch_size else [])]
        ds = build_dataset(dataset, root, split, labels=False)
        config = load_preset(preset if preset is not None else dataset_preset(ds.name), sets)
        check_model_path(model)
        with inference_processes(device) as (dist, run_device):
            backend = load_backend(model, run_device, config.backend, arch=arch)
            # everything is checked first: a bad argument deletes nothing
            if force and dist.is_main and remove_store(out):
                typer.echo(f"removed the pseudo-label store in {out} (--force)")
            barrier(dist)
            origin = StoreOrigin.of(model, ds, preset, config)
            store = PseudoLabelStore(out, topk=topk, topk_stride=topk_stride, origin=origin)
            summary = pseudo_label_split(backend, ds, store, config, dist=dist)
        if not dist.is_main:
            return
        if summary.already:
            typer.echo(f"{summary.already} of {len(ds)} image(s) already labelled in {out}")
        typer.echo(f"wrote {summary.written} pseudo-label(s) to {out}")
        exit_if_skipped(summary.skipped)
