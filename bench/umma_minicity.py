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

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from adaptseg.allocator import tune_host_allocator
from adaptseg.config import load_recipe
from adaptseg.train.config import Recipe, StageSpec, StreamSpec

ROOT = Path(__file__).resolve().parents[1]


def timed_stages(recipe: Recipe, run_dir: Path, recipe_path: Path) -> dict[str, float]:
    """Run every stage (skipping finished ones); seconds per iteration of the training stages run now."""
    from adaptseg.train.pipeline import RecipeRunner, stage_complete

    runner = RecipeRunner(recipe, run_dir, recipe_path=recipe_path)
    per_iteration = {}
    for stage in recipe.stages:
        done = stage_complete(run_dir / stage.name)
        started = time.perf_counter()
        runner.run(stage=stage.name)
        if not done and stage.method != "umma_pseudo_label":
            per_iteration[stage.name] = (time.perf_counter() - started) / (
                stage.iters or recipe.schedule.iters
            )
    return per_iteration


def oracle_recipe(recipe: Recipe, source_stream: str) -> Recipe:
    """``source_only`` on the labelled target train split, with the stage-0 streams' batch and budget."""
    target = recipe.data["target"]
    stream = StreamSpec(
        **{**target.model_dump(), "labels": True, "batch_size": recipe.data[source_stream].batch_size}
    )
    return recipe.model_copy(
        update={"data": {"source": stream}, "stages": [StageSpec(name="oracle", method="source_only")]}
    )


def score(recipe: Recipe, weights: Path, adabn_batches: int = 0) -> float:
    """Target-val mIoU19 of a weights file (AdaBN first when ``adabn_batches``)."""
    from adaptseg.data.pipeline import open_dataset, with_normalize
    from adaptseg.methods.parts.adabn import adabn
    from adaptseg.models.loading import load_model
    from adaptseg.train.evaluation import evaluate_segmentor

    loaded = load_model(weights)
    model, preset = loaded.net, loaded.preset
    if adabn_batches:
        spec = recipe.data["target"]
        dataset = open_dataset(
            spec.name, spec.root, spec.split, labels=False, minicity=recipe.minicity.generator_options()
        )
        transform = with_normalize(spec.pipeline, preset.mean, preset.std)
        rng = np.random.default_rng(recipe.seed)
        adabn(
            model,
            (
                torch.from_numpy(transform(dataset[int(rng.integers(len(dataset)))].image, None, rng)[0])[
                    None
                ]
                for _ in range(adabn_batches)
            ),
        )
    spec = recipe.eval.dataset
    dataset = open_dataset(spec.name, spec.root, spec.split, minicity=recipe.minicity.generator_options())
    report = evaluate_segmentor(
        model,
        dataset,
        mean=preset.mean,
        std=preset.std,
        preset=recipe.eval.preset,
        protocol=recipe.eval.protocol,
    )
    return float(report.miou)


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


def seeded_runs(doc: str, recipe: Path, out: Path, bench_seed, argv: list[str] | None = None):
    """The MiniCity benches' command line (``--recipe --out --seeds --set``): yields ``(recipe path, seed, result)``.

    ``bench_seed(recipe, recipe_path, out_dir)`` runs one seed (evaluation during training off) and returns
    its result dict.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=recipe)
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override k=v")
    args = parser.parse_args(argv)
    tune_host_allocator()
    for seed in args.seeds:
        resolved = load_recipe(Recipe, args.recipe, ["eval.every=0", *args.overrides, f"seed={seed}"])
        yield args.recipe, seed, bench_seed(resolved, args.recipe, args.out / f"seed{seed}")


def main(argv: list[str] | None = None) -> None:
    default = ROOT / "train" / "umma" / "minicity-synscapes+gta5-p.yaml"
    for recipe_path, seed, result in seeded_runs(
        __doc__, default, ROOT / "runs" / "bench-umma-minicity", bench_seed, argv
    ):
        rows = result["mIoU19"]
        best = max(v for k, v in rows.items() if k.startswith("source-only"))
        gap = rows["oracle (target-trained)"] - best
        closed = (rows["UMMA stage 2 (final, deployed)"] - best) / gap if gap > 0 else float("nan")
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
    main()
