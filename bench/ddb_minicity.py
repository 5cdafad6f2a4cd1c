"""DDB on MiniCity: source-only vs each DDB stage's student, target-val mIoU (19 classes).

Runs ``train/ddb/minicity.yaml`` (R1, or R1+R2 with ``--rounds 2``) and a source-only baseline built
from the same recipe (same preset, data, optimiser, schedule and seed; one ``source_only`` stage with as
many iterations as one ST path), then scores every stage's student on the MiniCity Cityscapes-like
val split and prints a Markdown table::

    .venv/bin/python bench/ddb_minicity.py --out runs/bench-ddb-minicity [--rounds 2] [--set k=v ...]

Finished stages are skipped on re-run (the run folders are ordinary ``adaptseg train`` run folders).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from adaptseg.config import load_recipe
from adaptseg.train.config import Recipe, StageSpec

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "train" / "ddb" / "minicity.yaml"
R1_STAGES = ("r1_st_cu", "r1_st_ca", "r1_proto_cu", "r1_proto_ca", "r1_ckd")
#: rows of the table: (label, stage whose student is scored)
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


def run(recipe: Recipe, run_dir: Path, stages: tuple[str, ...] | None = None) -> None:
    """Run ``stages`` (all when None) of ``recipe`` into ``run_dir``; complete stages are skipped."""
    from adaptseg.train.pipeline import RecipeRunner

    runner = RecipeRunner(recipe, run_dir, recipe_path=RECIPE)
    if stages is None:
        runner.run()
    else:
        for name in stages:
            runner.run(stage=name)


def score(recipe: Recipe, weights: Path) -> float:
    """Target-val mIoU of the weights in ``weights`` (the recipe's evaluation, as the Trainer runs it)."""
    from adaptseg.data.pipeline import open_dataset
    from adaptseg.models import build_model, load_preset, load_weights
    from adaptseg.train.evaluation import evaluate_segmentor

    preset = load_preset(recipe.model.preset)
    model = build_model(preset)
    load_weights(model, weights)
    spec = recipe.eval.dataset
    m = recipe.minicity
    dataset = open_dataset(spec.name, spec.root, spec.split,
                           minicity={"seed": m.seed, "size": tuple(m.size), "images": m.images, "cache": m.cache})
    report = evaluate_segmentor(model, dataset, mean=preset.mean, std=preset.std, preset=recipe.eval.preset,
                                protocol=recipe.eval.protocol)
    return float(report.miou)


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-ddb-minicity")
    parser.add_argument("--rounds", type=int, choices=(1, 2), default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override k=v")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    recipe = load_recipe(Recipe, RECIPE, args.overrides)
    started = time.time()
    run(source_only_recipe(recipe), args.out / "source_only")
    run(recipe, args.out / "ddb", None if args.rounds == 2 else R1_STAGES)
    seconds = time.time() - started

    rows = [("Source-only", score(recipe, args.out / "source_only" / "source" / "student.safetensors"))]
    for label, stage in ROWS:
        weights = args.out / "ddb" / stage / "student.safetensors"
        if weights.is_file():
            rows.append((label, score(recipe, weights)))
    base = rows[0][1]
    print(f"\nDDB on MiniCity (GTA5-like → Cityscapes-like val, mIoU19), recipe {RECIPE.relative_to(ROOT)}"
          f"{' ' + ' '.join(args.overrides) if args.overrides else ''}; {seconds / 60:.1f} min of training\n")
    print("| model | mIoU | vs source-only |")
    print("|---|---|---|")
    for label, miou in rows:
        print(f"| {label} | {miou:.2f} | {miou - base:+.2f} |")
    (args.out / "results.json").write_text(json.dumps(dict(rows), indent=2))
    return rows


if __name__ == "__main__":
    main()
