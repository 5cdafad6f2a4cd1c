"""ATP on MiniCity: the source model, A, T and P on the Cityscapes-like target and on an ACDC-like fog target.

Runs ``train/atp/minicity.yaml`` (GTA5-like → Cityscapes-like) and ``train/atp/minicity-fog.yaml`` (same
source model → ACDC-like fog) for each seed, then scores every stage's student on the target's val split
(19-class mIoU, the recipe's evaluation protocol) and prints one table per target. Besides mIoU it shows
the mean normalised per-pixel entropy of the predictions on val (what A acts on) and two baselines: AdaBN
(the source model with its BatchNorm statistics re-estimated on the target train images) and an oracle —
the source stage (same preset, init, schedule and seed) trained on the *labelled* target train split —
with the fraction of the source → oracle gap each stage closes. ``--init random`` starts the source
stage (and the oracle) from the preset's seeded random init instead of the recipe's ``model.init`` (the
MiT encoder pre-trained on MiniCity's Synscapes-like domain, ``train/pretrain/minicity-synscapes-mit.yaml``);
``--set k=v`` overrides any recipe key for every run (e.g. ``optim.lr=6e-5``).

    OMP_NUM_THREADS=1 .venv/bin/python bench/atp_minicity.py --seeds 0 1 --out runs/bench-atp-minicity

The fog run reuses the source stage of the Cityscapes run of the same seed (the two recipes have the same
source stage; copying it saves its training time and gives both targets the same source model).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from minicity_bench import gap_closed, labelled_target, open_split, val_report  # noqa: E402

from adaptseg.allocator import tune_host_allocator  # noqa: E402
from adaptseg.config import load_recipe  # noqa: E402
from adaptseg.data.pipeline import with_normalize  # noqa: E402
from adaptseg.methods.parts.adabn import adabn as adabn_  # noqa: E402
from adaptseg.methods.parts.adabn import image_batches  # noqa: E402
from adaptseg.methods.parts.entropy import normalized_entropy  # noqa: E402
from adaptseg.models import build_model, load_preset, load_weights  # noqa: E402
from adaptseg.train.config import Recipe, stage_recipe  # noqa: E402
from adaptseg.train.pipeline import run_recipe  # noqa: E402

TARGETS = {"cityscapes": "train/atp/minicity.yaml", "fog": "train/atp/minicity-fog.yaml"}
STAGES = ("source", "align", "teach", "propagate")
LABELS = {
    "source": "source model",
    "adabn": "AdaBN (source)",
    "align": "A (align)",
    "teach": "T (teach)",
    "propagate": "P (propagate)",
    "prior": "P + test-time prior",
    "oracle": "oracle (labelled target)",
}
ROW_ORDER = ("source", "adabn", "align", "teach", "propagate", "prior", "oracle")
INITS = {"recipe": [], "random": ["model.init=null"]}


def stage_model(recipe: Recipe, run_dir: Path, stage: str) -> torch.nn.Module:
    resolved = stage_recipe(recipe, recipe.stage(stage))
    model = build_model(load_preset(resolved.model.preset))
    load_weights(model, run_dir / stage / "student.safetensors")
    return model.eval()


@torch.no_grad()
def mean_entropy(model: torch.nn.Module, dataset, mean, std) -> float:
    """Mean normalised per-pixel entropy of the model's predictions over a split (whole images)."""
    transform = with_normalize([], mean, std)
    rng = np.random.default_rng(0)
    total, count = 0.0, 0
    for i in range(len(dataset)):
        image, _ = transform(dataset[i].image, None, rng)
        logits = model(torch.from_numpy(image)[None])
        entropy = normalized_entropy(torch.softmax(logits.float(), dim=1))
        total, count = total + entropy.sum().item(), count + entropy.numel()
    return total / count


def adabn(model: torch.nn.Module, recipe: Recipe) -> torch.nn.Module:
    """AdaBN: every BatchNorm's statistics re-estimated on the target train images, one whole image per batch."""
    spec = recipe.data["target"]
    preset = load_preset(recipe.model.preset)
    adabn_(model, image_batches(open_split(recipe, spec), preset.mean, preset.std, batch_size=1))
    return model.eval()


def score(model: torch.nn.Module, recipe: Recipe, *, prior: bool = False) -> dict[str, float]:
    preset = load_preset(recipe.model.preset)
    val = open_split(recipe, recipe.eval.dataset)
    report = val_report(recipe, model, preset.mean, preset.std, test_time_prior=prior)
    return {
        "mIoU": round(float(report.miou), 2),
        "entropy": round(mean_entropy(model, val, preset.mean, preset.std), 4),
    }


def oracle_overrides(recipe: Recipe) -> list[str]:
    """``--set`` overrides that make the source stage the oracle: the labelled target train split as the source
    stream, through the source stream's pipeline and batch size (same preset, init, schedule and seed)."""
    oracle = labelled_target(recipe, batch_from="source", pipeline_from="source")
    return [f"data.source={json.dumps(oracle.model_dump(mode='json'))}"]


def run_target(name: str, seed: int, out: Path, overrides: list[str], source_from: Path | None) -> dict:
    path = REPO / TARGETS[name]
    sets = [f"seed={seed}", *overrides]
    run_dir = out / name
    if (
        source_from is not None
        and (source_from / "source" / "DONE").is_file()
        and not (run_dir / "source").exists()
    ):
        shutil.copytree(source_from / "source", run_dir / "source")
    started = time.time()
    run_recipe(path, sets, out=run_dir)
    seconds = time.time() - started
    recipe = load_recipe(Recipe, path, sets)
    oracle_sets = [*sets, *oracle_overrides(recipe)]
    run_recipe(path, oracle_sets, out=out / f"{name}-oracle", stage="source")
    rows = {stage: score(stage_model(recipe, run_dir, stage), recipe) for stage in STAGES}
    rows["adabn"] = score(adabn(stage_model(recipe, run_dir, "source"), recipe), recipe)
    rows["prior"] = score(stage_model(recipe, run_dir, "propagate"), recipe, prior=True)
    rows["oracle"] = score(stage_model(recipe, out / f"{name}-oracle", "source"), recipe)
    return {"rows": rows, "seconds": round(seconds, 1), "run_dir": str(run_dir)}


def table(results: dict, target: str) -> str:
    seeds = sorted(results)
    rows = {key: [results[s][target]["rows"][key] for s in seeds] for key in ROW_ORDER}
    lines = [
        f"\n{target} target, 19-class mIoU on val; gap = share of the source → oracle gap closed (mean);"
        " entropy = mean normalised entropy on val",
        f"{'stage':<26}"
        + "".join(f"{'seed ' + str(s):>10}" for s in seeds)
        + f"{'mean':>9}{'± sd':>7}"
        + f"{'Δ source':>10}{'gap':>7}{'entropy':>9}",
    ]
    source = statistics.mean(r["mIoU"] for r in rows["source"])
    oracle = statistics.mean(r["mIoU"] for r in rows["oracle"])
    for key in ROW_ORDER:
        values = [r["mIoU"] for r in rows[key]]
        mean = statistics.mean(values)
        sd = statistics.stdev(values) if len(values) > 1 else math.nan
        entropy = statistics.mean(r["entropy"] for r in rows[key])
        lines.append(
            f"{LABELS[key]:<26}"
            + "".join(f"{v:>10.2f}" for v in values)
            + f"{mean:>9.2f}{sd:>7.2f}"
            + f"{mean - source:>+10.2f}{gap_closed(mean, source, oracle):>7.2f}{entropy:>9.3f}"
        )
    seconds = [results[s][target]["seconds"] for s in seeds]
    lines.append(f"(wall time of the recipe run per seed: {', '.join(f'{x:.0f} s' for x in seconds)})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-atp-minicity")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=list(TARGETS))
    parser.add_argument(
        "--init",
        choices=sorted(INITS),
        default="recipe",
        help="recipe: the recipe's model.init (pre-trained encoder); random: the preset's seeded init",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="recipe override k=v (every run)"
    )
    args = parser.parse_args(argv)
    tune_host_allocator()  # as the adaptseg command does
    torch.set_num_threads(1)
    overrides = [*INITS[args.init], *args.overrides]
    results: dict = {}
    for seed in args.seeds:
        results[seed] = {}
        for target in args.targets:
            out = args.out / f"s{seed}"
            shared = out / "cityscapes" if target != "cityscapes" else None
            results[seed][target] = run_target(target, seed, out, overrides, shared)
            (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"init: {args.init}; overrides: {' '.join(overrides) or 'none'}")
    for target in args.targets:
        print(table(results, target))


if __name__ == "__main__":
    from adaptseg.cli.base import one_line_errors

    with one_line_errors():
        main()
