"""`adaptseg eval`: score a folder of prediction PNGs, or a model, on a labelled dataset split."""

from __future__ import annotations

from pathlib import Path

import typer

from adaptseg.errors import UserError


def _parse_compare(items: list[str]) -> dict[str, dict[str, float]]:
    """``[NAME=]REPORT.json`` items → {name: per-class IoU}; the name defaults to the file's stem."""
    from adaptseg.eval import Report

    out: dict[str, dict[str, float]] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).stem, item
        if not name:
            raise UserError(f"--compare {item!r} has an empty name", fix="write --compare NAME=REPORT.json")
        out[name] = Report.read_json(path).per_class
    return out


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        pred: Path | None = typer.Option(
            None,
            "--pred",
            help="Folder of prediction PNGs: uint8 trainIds named <image stem>.png, searched recursively.",
        ),
        model: str | None = typer.Option(
            None, "--model", help="Model to run instead of reading predictions."
        ),
        preset: Path | None = typer.Option(None, "--preset", help="Inference preset YAML (with --model)."),
        dataset: str = typer.Option(..., "--dataset", help="Dataset name (cityscapes, acdc, darkzurich, …)."),
        root: Path = typer.Option(..., "--root", help="The dataset's root folder (official layout)."),
        split: str = typer.Option("val", "--split", help="Labelled split to score."),
        protocol: int = typer.Option(19, "--protocol", help="Classes in the mean: 19, 16 or 13 (SYNTHIA)."),
        json_path: Path | None = typer.Option(None, "--json", help="Write the metrics as JSON here."),
        plots: Path | None = typer.Option(
            None, "--plots", help="Write confusion_matrix.png and per_class_iou.png into this folder."
        ),
        compare: list[str] = typer.Option(
            [], "--compare", help="[NAME=]REPORT.json of another model to draw beside this one (repeatable)."
        ),
        name: str | None = typer.Option(None, "--name", help="This model's name in the plots."),
        strict: bool = typer.Option(
            False, "--strict", help="Stop on label values outside the dataset's label map."
        ),
    ) -> None:
        """Score prediction PNGs (--pred) or a model (--model) on a dataset split: per-class IoU, mIoU, aAcc."""
        from adaptseg.data import build_dataset
        from adaptseg.data.labels import PROTOCOLS
        from adaptseg.eval import Report
        from adaptseg.eval.plots import write_plots
        from adaptseg.eval.predictions import evaluate_predictions

        if (pred is None) == (model is None):
            raise UserError(
                "give exactly one of --pred DIR and --model M",
                fix="--pred scores a folder of prediction PNGs, --model runs a model",
            )
        if preset is not None and model is None:
            raise UserError("--preset only applies to --model", fix="drop --preset when scoring --pred PNGs")
        if compare and plots is None:
            raise UserError("--compare only applies to the --plots bar chart", fix="add --plots DIR")
        if protocol not in PROTOCOLS:
            raise UserError(
                f"--protocol {protocol} is not one of {sorted(PROTOCOLS, reverse=True)}",
                fix="use 19 (all classes), 16 or 13 (the SYNTHIA protocols)",
            )
        others = _parse_compare(compare) if compare else None  # read early: fail before the long part

        ds = build_dataset(dataset, root, split)
        ds.strict_labels = strict  # else unknown label values are ignored with a warning per file
        if pred is not None:
            cm, n_images = evaluate_predictions(pred, ds)
        else:  # under torchrun each process scores its shard; rank 0 reports the summed matrix
            from adaptseg.infer.evaluate import evaluate_model
            from adaptseg.infer.ranks import inference_processes
            from adaptseg.infer.run import check_model_path

            check_model_path(model)
            with inference_processes("auto") as (dist, run_device):
                ranks = {"device": run_device, "dist": dist} if dist.enabled else {}
                cm, n_images = evaluate_model(model=model, dataset=ds, preset=preset, **ranks)
            if not dist.is_main:
                return

        report = Report.from_confusion(cm, protocol=protocol, n_images=n_images)
        report.print()
        if json_path is not None:
            report.write_json(json_path)
            typer.echo(f"wrote {json_path}")
        if plots is not None:
            label = name or (Path(model).stem if model is not None else Path(pred).resolve().name)
            for path in write_plots(report, cm, plots, compare=others, name=label).values():
                typer.echo(f"wrote {path}")
