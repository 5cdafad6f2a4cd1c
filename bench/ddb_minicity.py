"""DDB on MiniCity: source-only (and AdaBN) vs each DDB stage's student, target-val mIoU (19 classes).

Runs ``train/ddb/minicity.yaml`` (R1, or R1+R2 with ``--rounds 2``) and a source-only baseline built
from the same recipe (same preset, data, optimiser, schedule and seed; one ``source_only`` stage with as
many iterations as one ST path) and an oracle (the same stage on the labelled target train split),
then scores every stage's student on the MiniCity Cityscapes-like
val split and prints a Markdown table::

    OMP_NUM_THREADS=2 .venv/bin/python bench/ddb_minicity.py --out runs/bench-ddb-minicity \\
        [--rounds 1|2] [--seeds 0 1 2] [--set k=v ...]

Finished stages are skipped on re-run (the run folders are ordinary ``adaptseg train`` run folders).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minicity_bench import gap_closed, labelled_target, score  # noqa: E402

from adaptseg.allocator import tune_host_allocator  # noqa: E402
from adaptseg.config import load_recipe  # noqa: E402
from adaptseg.train.config import Recipe, StageSpec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "train" / "ddb" / "minicity.yaml"
R1_STAGES = ("r1_st_cu", "r1_st_ca", "r1_proto_cu", "r1_proto_ca", "r1_ckd")
#: rows of the table: (label, stage whose student is scored)
ORACLE = "Oracle (labelled target, same budget)"
ROWS = (
    ("R1 ST cu (cut-mix path)", "r1_st_cu"),
    ("R1 ST ca (class-mix path)", "r1_st_ca"),
    ("R1 CKD student", "r1_ckd"),
    ("R2 ST cu", "r2_st_cu"),
    ("R2 ST ca", "r2_st_ca"),
    ("R2 CKD student", "r2_ckd"),
)


def source_only_recipe(recipe: Recipe) -> Recipe:
    """The DDB recipe with one ``source_only`` stage as long as one ST path (everything else equal)."""
    iters = recipe.stages[0].iters or (recipe.schedule.iters if recipe.schedule else None)
    stage = StageSpec(name="source", method="source_only", iters=iters)
    return recipe.model_copy(update={"stages": [stage]})


def oracle_recipe(recipe: Recipe) -> Recipe:
    """The source-only baseline trained on the *labelled* target train split instead of the source.

    Same preset, initial weights, optimiser, schedule, iterations, seed and source pipeline and batch size:
    the upper bound that the gap-closed column divides by.
    """
    oracle = labelled_target(recipe, batch_from="source", pipeline_from="source")
    return source_only_recipe(recipe).model_copy(update={"data": {**recipe.data, "source": oracle}})


def run(recipe: Recipe, run_dir: Path, stages: tuple[str, ...] | None = None) -> None:
    """Run ``stages`` (all when None) of ``recipe`` into ``run_dir``; complete stages are skipped."""
    from adaptseg.train.pipeline import RecipeRunner

    runner = RecipeRunner(recipe, run_dir, recipe_path=RECIPE)
    if stages is None:
        runner.run()
    else:
        for name in stages:
            runner.run(stage=name)


def bench_seed(recipe: Recipe, out: Path, rounds: int) -> dict[str, float]:
    """Train (or reuse) the source-only baseline and the DDB stages of one seed under ``out``; score them."""
    run(source_only_recipe(recipe), out / "source_only")
    run(oracle_recipe(recipe), out / "oracle")
    run(recipe, out / "ddb", None if rounds == 2 else R1_STAGES)
    source = out / "source_only" / "source" / "student.safetensors"
    rows = {
        "Source-only": score(recipe, source),
        # BatchNorm statistics re-estimated on 100 target-train batches of the target stream (its pipeline
        # and batch size), weights unchanged
        "AdaBN (source-only, target BN statistics)": score(
            recipe, source, adabn_batches=100, adabn_batch_size=recipe.data["target"].batch_size
        ),
    }
    for label, stage in ROWS:
        weights = out / "ddb" / stage / "student.safetensors"
        if weights.is_file():
            rows[label] = score(recipe, weights)
    rows[ORACLE] = score(recipe, out / "oracle" / "source" / "student.safetensors")
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    return rows


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-ddb-minicity")
    parser.add_argument("--rounds", type=int, choices=(1, 2), default=2)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="recipe seeds (one run folder each)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override k=v")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    tune_host_allocator()  # as the adaptseg command does
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.time()
    table: dict[str, list[float]] = {}
    for seed in args.seeds:
        recipe = load_recipe(Recipe, RECIPE, [*args.overrides, f"seed={seed}"])
        out = args.out if args.seeds == [0] else args.out / f"seed{seed}"
        for label, miou in bench_seed(recipe, out, args.rounds).items():
            table.setdefault(label, []).append(miou)
    minutes = (time.time() - started) / 60

    print(
        f"\nDDB on MiniCity (GTA5-like → Cityscapes-like val, mIoU19), {RECIPE.relative_to(ROOT)}"
        f"{' ' + ' '.join(args.overrides) if args.overrides else ''}, seeds {args.seeds}; {minutes:.1f} min\n"
    )
    base = statistics.mean(table["Source-only"])
    oracle = statistics.mean(table[ORACLE])
    print("| model | mIoU (mean over seeds) | per seed | vs source-only | gap closed |")
    print("|---|---|---|---|---|")
    for label, values in table.items():
        mean = statistics.mean(values)
        per_seed = " / ".join(f"{v:.2f}" for v in values)
        closed = f"{gap_closed(mean, base, oracle):.2f}".replace("nan", "–")
        print(f"| {label} | {mean:.2f} | {per_seed} | {mean - base:+.2f} | {closed} |")
    return table


if __name__ == "__main__":
    from adaptseg.cli.base import one_line_errors

    with one_line_errors():
        main()
