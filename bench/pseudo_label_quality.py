"""How good are a pseudo-label stage's labels? Scores its store against the target split's ground truth::

    ADAPTSEG_MINICITY=/tmp/minicity-cache .venv/bin/python bench/pseudo_label_quality.py \\
        --recipe train/umma/minicity-synscapes+gta5-p.yaml RUN/pl1 RUN/pl2

Each argument is a pseudo-label stage folder (``store/`` and, for UMMA's, ``thresholds.json``). For each
it prints mIoU19 and pixel accuracy of the raw argmax over every labelled pixel, and — when the stage wrote
class thresholds — of the labels that survive them (conf ≥ t_ŷ, as the training stages read them) with the
share of pixels kept. A diagnosis for benches only: the ground truth of the target train split is read
here and nowhere in training. The split is the recipe's ``data.target`` stream, opened with labels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minicity_bench import open_split  # noqa: E402

from adaptseg.config import load_recipe  # noqa: E402
from adaptseg.errors import UserError  # noqa: E402
from adaptseg.eval.confusion import ConfusionMatrix  # noqa: E402
from adaptseg.infer.store import PseudoLabelStore  # noqa: E402
from adaptseg.methods.parts.thresholds import apply_class_thresholds  # noqa: E402
from adaptseg.train.config import Recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IGNORE = 255


def require_store(stage: Path) -> Path:
    """``stage/store``, or a one-line error when ``stage`` is not a finished pseudo-label stage folder."""
    store = stage / "store"
    if not store.is_dir():
        raise UserError(
            "not a pseudo-label stage folder (no store/ in it)",
            path=stage,
            fix="name a pseudo-label stage of a run, e.g. RUN/umma/pl1",
        )
    return store


def stage_quality(stage: Path, dataset) -> dict[str, float]:
    """Raw and thresholded label quality of one pseudo-label stage folder against ``dataset``'s labels."""
    store = PseudoLabelStore(require_store(stage))
    index = {entry.id: i for i, entry in enumerate(dataset.entries)}
    thresholds = stage / "thresholds.json"
    levels = torch.tensor(json.loads(thresholds.read_text())["levels"]) if thresholds.is_file() else None
    raw, kept = ConfusionMatrix(), ConfusionMatrix()
    kept_pixels = 0
    for image_id in store.ids():
        if image_id not in index:
            raise UserError(
                f"pseudo-label {image_id!r} is not an image of the recipe's target split",
                path=stage / "store",
                fix="pass the recipe whose run wrote this stage (--recipe)",
            )
        label, confidence, _ = store.read(image_id)
        truth = dataset.read_label(index[image_id])
        raw.update(label, truth)
        if levels is not None:
            # as umma's PseudoLabels.labels reads a batch: store levels against the class thresholds
            confidence_levels = torch.from_numpy(np.rint(confidence * 255).astype(np.int64))
            kept_label = apply_class_thresholds(
                torch.from_numpy(label.astype(np.int64)), confidence_levels, levels
            )
            keep = kept_label.numpy() != IGNORE
            kept.update(label, np.where(keep, truth, IGNORE))
            kept_pixels += int((keep & (truth != IGNORE)).sum())
    row = {"raw mIoU19": 100 * raw.miou(), "raw accuracy": 100 * raw.pixel_accuracy()}
    if levels is not None:
        row["kept mIoU19"] = 100 * kept.miou()
        row["kept accuracy"] = 100 * kept.pixel_accuracy()
        row["kept share"] = 100 * kept_pixels / max(raw.total, 1)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stages", type=Path, nargs="+", help="pseudo-label stage folders")
    parser.add_argument(
        "--recipe", type=Path, default=ROOT / "train" / "umma" / "minicity-synscapes+gta5-p.yaml"
    )
    args = parser.parse_args(argv)
    for stage in args.stages:  # before the target split is generated or read
        require_store(stage)
    recipe = load_recipe(Recipe, args.recipe, [])
    dataset = open_split(recipe, recipe.data["target"], labels=True)
    print("| stage | raw mIoU19 | raw accuracy | kept mIoU19 | kept accuracy | pixels kept |")
    print("|---|---:|---:|---:|---:|---:|")
    for stage in args.stages:
        q = stage_quality(stage, dataset)
        kept = (
            f"{q['kept mIoU19']:.1f} | {q['kept accuracy']:.1f} % | {q['kept share']:.0f} %"
            if "kept share" in q
            else "– | – | –"
        )
        print(f"| {stage} | {q['raw mIoU19']:.1f} | {q['raw accuracy']:.1f} % | {kept} |")


if __name__ == "__main__":
    from adaptseg.cli.base import one_line_errors

    with one_line_errors():
        main()
