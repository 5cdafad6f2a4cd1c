"""UMMA on MiniCity: each source-only model, AdaBN of the best one, stage 1, stage 2 and a target-trained
oracle at the same budget, all on the Cityscapes-like val split (mIoU19), plus the time per iteration
of each stage relative to a source-only iteration (umma.md; issue 16 item 8)::

    OMP_NUM_THREADS=1 ADAPTSEG_MINICITY=/tmp/minicity-cache .venv/bin/python bench/umma_minicity.py \\
        --recipe train/umma/minicity-synscapes+gta5-p.yaml --out /tmp/bench-umma-p [--seeds 0 1]

Run folders are ordinary ``adaptseg train`` run folders: finished stages are skipped on re-run. The
stage-0 models are scored as the 19-class models they export (non-owned classes get the spread "others"
probability); the oracle is ``source_only`` on the labelled target train split with the stage-0 budget.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minicity_bench import gap_closed, oracle_recipe, score, seeded_runs, timed_stages  # noqa: E402

from adaptseg.train.config import Recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def bench_seed(recipe: Recipe, recipe_path: Path, out: Path) -> dict:
    umma = timed_stages(recipe, out / "umma", recipe_path)
    sources = [s.name for s in recipe.stages if s.method == "umma_source"]
    stream = recipe.stages[0].options.get("source")
    oracle = timed_stages(oracle_recipe(recipe, stream), out / "oracle", recipe_path)
    rows = {
        f"source-only {name[3:]}": score(recipe, out / "umma" / name / "student.safetensors")
        for name in sources
    }
    best = max(sources, key=lambda n: rows[f"source-only {n[3:]}"])
    rows[f"AdaBN of {best[3:]}"] = score(
        recipe, out / "umma" / best / "student.safetensors", adabn_batches=100
    )
    rows["UMMA stage 1 (joint)"] = score(recipe, out / "umma" / "joint" / "student.safetensors")
    rows["UMMA stage 2 (final, deployed)"] = score(recipe, out / "umma" / "final" / "student.safetensors")
    rows["oracle (target-trained)"] = score(recipe, out / "oracle" / "oracle" / "student.safetensors")
    base = umma.get(sources[0]) or oracle.get("oracle")
    timing = {k: v / base for k, v in {**umma, **oracle}.items()} if base else {}
    result = {"mIoU19": rows, "time_per_iteration_vs_source_only": timing}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> None:
    default = ROOT / "train" / "umma" / "minicity-synscapes+gta5-p.yaml"
    for recipe_path, seed, result in seeded_runs(
        __doc__, default, ROOT / "runs" / "bench-umma-minicity", bench_seed, argv
    ):
        rows = result["mIoU19"]
        best = max(v for k, v in rows.items() if k.startswith("source-only"))
        closed = gap_closed(rows["UMMA stage 2 (final, deployed)"], best, rows["oracle (target-trained)"])
        print(f"\n{recipe_path.name}, seed {seed} (MiniCity Cityscapes-like val, mIoU19)\n")
        print("| model | mIoU19 |\n|---|---|")
        for label, value in rows.items():
            print(f"| {label} | {value:.2f} |")
        print(f"\nstage 2 closes {100 * closed:.0f} % of the best-source → oracle gap")
        print(
            "time per iteration vs a source-only iteration: "
            + ", ".join(f"{k} {v:.2f}×" for k, v in result["time_per_iteration_vs_source_only"].items())
        )


if __name__ == "__main__":
    from adaptseg.cli.base import one_line_errors

    with one_line_errors():
        main()
