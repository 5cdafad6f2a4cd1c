"""EnD on MiniCity (issue 18 item 5): each teacher's mIoU19 and pixel accuracy on the labelled target train
split (read only for this report, from the teacher stores), the fused labels' accuracy and coverage, every
teacher's and the student's mIoU19 on the Cityscapes-like val split, AdaBN of the source-only model and a
target-trained oracle at the student's budget::

    OMP_NUM_THREADS=1 ADAPTSEG_MINICITY=/tmp/minicity-cache .venv/bin/python bench/end_minicity.py \\
        --out /tmp/bench-end [--seeds 0 1]

Run folders are ordinary ``adaptseg train`` run folders (finished stages are skipped on re-run). The
scoring helpers (val mIoU, AdaBN, oracle recipe) are bench/minicity_bench.py's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minicity_bench import open_split, oracle_recipe, score, seeded_runs, timed_stages  # noqa: E402

from adaptseg.train.config import Recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def label_scores(dataset, read) -> dict[str, float]:
    """mIoU19, pixel accuracy over kept pixels and coverage of the labels ``read(id)`` against the GT."""
    from adaptseg.eval import ConfusionMatrix

    cm = ConfusionMatrix(19)
    kept = total = 0
    for i, entry in enumerate(dataset.entries):
        gt = dataset.read_label(i)
        label = read(entry.id)
        valid = gt != 255
        kept += int((valid & (label != 255)).sum())
        total += int(valid.sum())
        cm.update(np.where(label == 255, 255, label), gt)  # a dropped pixel counts as a miss in the mIoU
    accuracy = float(np.trace(cm.matrix) / max(kept, 1))
    return {
        "mIoU19": 100 * cm.miou(),
        "pixel_accuracy": 100 * accuracy,
        "coverage": 100 * kept / max(total, 1),
    }


def bench_seed(recipe: Recipe, recipe_path: Path, out: Path) -> dict:
    from adaptseg.infer.store import PseudoLabelStore
    from adaptseg.io import read_label

    run = out / "end"
    timed_stages(recipe, run, recipe_path)
    student_iters = recipe.schedule.iters
    timed_stages(oracle_recipe(recipe, "source"), out / "oracle", recipe_path)
    teachers = list(recipe.stage("teachers").options["teachers"])
    dataset = open_split(recipe, recipe.data["target"], labels=True)
    train_rows = {
        f"teacher {t}": label_scores(
            dataset, lambda i, t=t: PseudoLabelStore(run / "teachers" / t).read(i).label
        )
        for t in teachers
    }
    train_rows["fused labels (PLF)"] = label_scores(
        dataset, lambda i: read_label(run / "fuse" / "labels" / f"{i}.png")
    )
    val_rows = {
        f"teacher {t}": score(
            recipe, run / recipe.stage("teachers").options["teachers"][t] / "student.safetensors"
        )
        for t in teachers
    }
    # DeepLabV3+'s image-pooling BatchNorm needs batches of more than one image
    val_rows["AdaBN of source-only"] = score(
        recipe, run / "source" / "student.safetensors", adabn_batches=25, adabn_batch_size=4
    )
    val_rows["EnD student"] = score(recipe, run / "student" / "student.safetensors")
    val_rows[f"oracle (target-trained, {student_iters} its)"] = score(
        recipe, out / "oracle" / "oracle" / "student.safetensors"
    )
    result = {
        "target_train": train_rows,
        "val_mIoU19": val_rows,
        "fusion": json.loads((run / "fuse" / "fusion.json").read_text()),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> None:
    default, out = ROOT / "train" / "end" / "minicity.yaml", ROOT / "runs" / "bench-end-minicity"
    for recipe_path, seed, result in seeded_runs(__doc__, default, out, bench_seed, argv):
        print(
            f"\n{recipe_path.name}, seed {seed}: labels on the target train split (read only for this report)\n"
        )
        print("| labels | mIoU19 | pixel accuracy (kept) | coverage |\n|---|---|---|---|")
        for name, row in result["target_train"].items():
            print(f"| {name} | {row['mIoU19']:.2f} | {row['pixel_accuracy']:.2f} | {row['coverage']:.1f} % |")
        print("\n| model | val mIoU19 |\n|---|---|")
        for name, value in result["val_mIoU19"].items():
            print(f"| {name} | {value:.2f} |")


if __name__ == "__main__":
    from adaptseg.cli.base import one_line_errors

    with one_line_errors():
        main()
