"""MIC and RCS on MiniCity (issue 19 item 5): paired runs with and without each switch, same data and seed.

Variants (everything else equal, including the seed and therefore the data order and the initialisation):

* DDB round-1 self-training, cut path (``train/ddb/minicity.yaml``, stage ``r1_st_cu``): base, +MIC,
  +RCS on the GTA5-like source stream, +MIC+RCS;
* ATP's T stage (``train/atp/minicity.yaml``: source → align → teach): base, +MIC, and +MIC with the
  masked pass keeping BatchNorm's running statistics (``running_stats: keep``, not in the release). The source and
  align stages are trained once per seed and copied into the +MIC run (finished stages are skipped), so
  the pair differs only in T.

MiniCity's crops are a quarter of the release's side, so MIC's block is 16 px (the release: 64 px on
512² crops, an 8×8 grid) and RCS's ``min_pixels`` is 50 (the release's 3000 px of a 1914×1052 GTA5 label,
0.15 %, of a 128×256 scene); the other settings are the released defaults (mask ratio 0.7, loss weight 1,
T = 0.01, min crop ratio 0.5).

Scores: Cityscapes-like val mIoU19, and the IoU of the five rarest classes of the source (pixel share in
the GTA5-like train labels: the statistics RCS samples by). The table gives, per variant, the mean over
seeds and each seed's difference to its paired base run::

    OMP_NUM_THREADS=2 .venv/bin/python bench/mic_rcs_minicity.py --out runs/bench-mic-rcs --seeds 0 1 2
    # one method's pairs only: --methods atp
    # a smoke run of the wiring (not a measurement): --iters-scale 0.01 --seeds 0

Run folders are ordinary ``adaptseg train`` run folders (finished stages are skipped on re-run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minicity_bench import open_split, weights_report  # noqa: E402

from adaptseg.allocator import tune_host_allocator  # noqa: E402
from adaptseg.config import deep_merge, load_recipe, validate  # noqa: E402
from adaptseg.train.config import Recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DDB_RECIPE = ROOT / "train" / "ddb" / "minicity.yaml"
ATP_RECIPE = ROOT / "train" / "atp" / "minicity.yaml"
MIC = {"block_size": 16}
RCS = {"min_pixels": 50}
RAREST = 5
#: (label, method, switches); the first of each method is its paired base
VARIANTS = (
    ("DDB R1 ST cu", "ddb", ()),
    ("DDB R1 ST cu + MIC", "ddb", ("mic",)),
    ("DDB R1 ST cu + RCS", "ddb", ("rcs",)),
    ("DDB R1 ST cu + MIC + RCS", "ddb", ("mic", "rcs")),
    ("ATP T", "atp", ()),
    ("ATP T + MIC", "atp", ("mic",)),
    ("ATP T + MIC, BN running stats kept", "atp", ("mic", "keep")),
)


def scaled(data: dict[str, Any], scale: float) -> dict[str, Any]:
    """The recipe with every stage's and the schedule's iterations multiplied by ``scale`` (at least 2)."""
    if scale == 1.0:
        return data

    def shrink(n: int) -> int:
        return max(2, round(n * scale))

    data = deep_merge(
        data,
        {
            "schedule": {
                "iters": shrink(data["schedule"]["iters"]),
                "warmup_iters": min(data["schedule"].get("warmup_iters", 0), 1),
            }
        },
    )
    data["stages"] = [{**s, "iters": shrink(s["iters"])} if s.get("iters") else s for s in data["stages"]]
    return data


def variant_recipe(
    method: str, switches: tuple[str, ...], seed: int, scale: float, overrides: list[str]
) -> Recipe:
    """The method's MiniCity recipe cut to the stages compared, with the switches on."""
    path, stages, stage = (
        (DDB_RECIPE, ("r1_st_cu",), "r1_st_cu")
        if method == "ddb"
        else (ATP_RECIPE, ("source", "align", "teach"), "teach")
    )
    data = load_recipe(Recipe, path, [*overrides, f"seed={seed}"]).model_dump(mode="json")
    data["stages"] = [s for s in data["stages"] if s["name"] in stages]
    for s in data["stages"]:
        if s["name"] == stage and "mic" in switches:
            mic = {**MIC, "running_stats": "keep"} if "keep" in switches else MIC
            s["options"] = {**s.get("options", {}), "mic": mic}
    if "rcs" in switches:
        data["data"]["source"]["rcs"] = RCS
    return validate(Recipe, scaled(data, scale))


def train(recipe: Recipe, run_dir: Path) -> None:
    from adaptseg.train.pipeline import RecipeRunner

    RecipeRunner(recipe, run_dir).run()


def rarest_classes(recipe: Recipe, k: int = RAREST) -> list[int]:
    """The ``k`` classes with the smallest (non-zero) pixel share in the source train labels."""
    from adaptseg.data.rcs import ClassStatistics

    reader = open_split(recipe, recipe.data["source"])
    totals = ClassStatistics.compute(reader).counts.sum(0)
    present = np.flatnonzero(totals)
    return [int(c) for c in present[np.argsort(totals[present], kind="stable")][:k]]


def score(recipe: Recipe, weights: Path) -> dict[str, Any]:
    """Val mIoU19 and per-class IoU (by class name) of ``weights`` under the recipe's evaluation."""
    report = weights_report(recipe, weights)
    return {"mIoU": float(report.miou), "per_class": {k: float(v) for k, v in report.per_class.items()}}


def bench_seed(
    seed: int, out: Path, scale: float, overrides: list[str], methods: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """Train (or reuse) every variant of ``methods`` for one seed under ``out/seed<k>``; scores by label."""
    results = {}
    for label, method, switches in VARIANTS:
        if method not in methods:
            continue
        recipe = variant_recipe(method, switches, seed, scale, overrides)
        run_dir = out / f"seed{seed}" / f"{method}-{'+'.join(switches) or 'base'}"
        if method == "atp" and switches:  # share source and align with the paired base run
            for shared in ("source", "align"):
                base = out / f"seed{seed}" / "atp-base" / shared
                if base.is_dir() and not (run_dir / shared).exists():
                    shutil.copytree(base, run_dir / shared)
        started = time.time()
        train(recipe, run_dir)
        stage = recipe.stages[-1].name
        results[label] = {
            **score(recipe, run_dir / stage / "student.safetensors"),
            "minutes": (time.time() - started) / 60,
        }
    (out / f"seed{seed}" / f"results-{'+'.join(methods)}.json").write_text(json.dumps(results, indent=2))
    return results


def table(by_seed: dict[int, dict[str, dict[str, Any]]], rare: list[str], methods: tuple[str, ...]) -> str:
    """Markdown: mean mIoU, per-seed Δ to the paired base, mean Δ, and the mean Δ IoU of each rare class."""
    seeds = sorted(by_seed)
    head = [
        "variant",
        "mIoU19 (mean)",
        "Δ per seed " + "/".join(map(str, seeds)),
        "Δ mean",
        *(f"Δ {c}" for c in rare),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base_of = {}
    for label, method, switches in VARIANTS:
        if method not in methods:
            continue
        if not switches:
            base_of[method] = label
        base = base_of[method]
        mious = [by_seed[s][label]["mIoU"] for s in seeds]
        deltas = [by_seed[s][label]["mIoU"] - by_seed[s][base]["mIoU"] for s in seeds]
        rare_deltas = [
            statistics.mean(
                by_seed[s][label]["per_class"][c] - by_seed[s][base]["per_class"][c] for s in seeds
            )
            for c in rare
        ]
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    f"{statistics.mean(mious):.2f}",
                    "—" if not switches else " / ".join(f"{d:+.2f}" for d in deltas),
                    "—" if not switches else f"{statistics.mean(deltas):+.2f}",
                    *("—" if not switches else f"{d:+.1f}" for d in rare_deltas),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-mic-rcs-minicity")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--iters-scale",
        type=float,
        default=1.0,
        help="multiply every stage's iterations (a smoke run of the wiring: 0.01)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=("ddb", "atp"),
        default=["ddb", "atp"],
        help="which paired variants to run (each method's pairs are independent)",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override k=v")
    args = parser.parse_args(argv)
    tune_host_allocator()  # as the adaptseg command does

    started = time.time()
    methods = tuple(args.methods)
    by_seed = {
        seed: bench_seed(seed, args.out, args.iters_scale, args.overrides, methods) for seed in args.seeds
    }
    from adaptseg.data.labels import CLASSES

    rare = [CLASSES[c] for c in rarest_classes(variant_recipe("ddb", (), args.seeds[0], 1.0, args.overrides))]
    text = table(by_seed, rare, methods)
    print(
        f"\nMIC / RCS on MiniCity (GTA5-like → Cityscapes-like val), seeds {args.seeds}, iterations ×"
        f"{args.iters_scale:g}; {(time.time() - started) / 60:.1f} min. Rarest source classes: {', '.join(rare)}\n"
    )
    print(text)
    return text


if __name__ == "__main__":
    from adaptseg.cli.base import one_line_errors

    with one_line_errors():
        main()
