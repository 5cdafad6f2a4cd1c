"""DecoupleNet on MiniCity: source-only, AdaBN, phase 1, phase 2 and a target-trained oracle at the same budget
on the Cityscapes-like val split (mIoU19); the time per iteration of each phase relative to source-only; and
the compact soft labels against the release's float32 logits — bytes per pixel and the phase-2 mIoU of
each form with the same seed (decouplenet.md; issue 17 items 2 and 6)::

    OMP_NUM_THREADS=1 ADAPTSEG_MINICITY=/tmp/minicity-cache .venv/bin/python bench/decouplenet_minicity.py \\
        --out /tmp/bench-decouplenet [--seeds 0 1]

Run folders are ordinary ``adaptseg train`` run folders: finished stages are skipped on re-run. The run adds
two stages to the recipe: ``soft_f32`` (the float32 form) and ``phase2_f32`` (phase 2 on it, same seed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from adaptseg.train.config import Recipe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from umma_minicity import minicity, oracle_recipe, score, seeded_runs, timed_stages  # noqa: E402  (the MiniCity bench helpers)


def with_float32_variant(recipe: Recipe) -> Recipe:
    """The recipe plus ``soft_f32`` and ``phase2_f32``: the release's float32 soft labels and phase 2 on them."""
    soft = recipe.stage("soft")
    phase2 = recipe.stage("phase2")
    extra = [
        soft.model_copy(update={"name": "soft_f32", "options": {**soft.options, "form": "float32"}}),
        phase2.model_copy(
            update={"name": "phase2_f32", "options": {**phase2.options, "soft_labels": "soft_f32"}}
        ),
    ]
    return recipe.model_copy(update={"stages": [*recipe.stages, *extra]})


def bytes_per_pixel(run_dir: Path, recipe: Recipe) -> dict[str, float]:
    from adaptseg.data.pipeline import open_dataset
    from adaptseg.methods.decouplenet.soft_labels import soft_label_bytes

    spec = recipe.data["target_full"]
    dataset = open_dataset(spec.name, spec.root, spec.split, labels=False, minicity=minicity(recipe))
    pixels = sum(image.shape[0] * image.shape[1] for image in map(dataset.read_image, range(len(dataset))))
    compact, release = soft_label_bytes(run_dir / "soft"), soft_label_bytes(run_dir / "soft_f32")
    return {
        "top-k soft labels (what phase 2 reads)": compact["topk"] / pixels,
        "whole store (+ label and confidence PNGs)": sum(compact.values()) / pixels,
        "float32 logits (the release's form)": release["logits"] / pixels,
    }


def bench_seed(recipe: Recipe, recipe_path: Path, out: Path) -> dict:
    recipe = with_float32_variant(recipe)
    timing = timed_stages(recipe, out / "decouplenet", recipe_path)
    oracle = timed_stages(oracle_recipe(recipe, "source"), out / "oracle", recipe_path)
    run = out / "decouplenet"
    rows = {
        "source-only": score(recipe, run / "source" / "student.safetensors"),
        "AdaBN (source-only, target BN statistics)": score(
            recipe, run / "source" / "student.safetensors", adabn_batches=100
        ),
        "phase 1 (decoupled + adversarial + SD)": score(recipe, run / "phase1" / "student.safetensors"),
        "phase 2 (OEST, deployed)": score(recipe, run / "phase2" / "student.safetensors"),
        "phase 2 on float32 soft labels": score(recipe, run / "phase2_f32" / "student.safetensors"),
        "oracle (target-trained)": score(recipe, out / "oracle" / "oracle" / "student.safetensors"),
    }
    base = timing.get("source")
    per_iteration = (
        {k: v / base for k, v in {**timing, **oracle}.items() if not k.startswith("soft")} if base else {}
    )
    result = {
        "mIoU19": rows,
        "time_per_iteration_vs_source_only": per_iteration,
        "soft_label_bytes_per_pixel": bytes_per_pixel(run, recipe),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> None:
    default, out = (
        ROOT / "train" / "decouplenet" / "minicity.yaml",
        ROOT / "runs" / "bench-decouplenet-minicity",
    )
    for recipe_path, seed, result in seeded_runs(__doc__, default, out, bench_seed, argv):
        rows = result["mIoU19"]
        gap = rows["oracle (target-trained)"] - rows["source-only"]
        closed = (rows["phase 2 (OEST, deployed)"] - rows["source-only"]) / gap if gap > 0 else float("nan")
        print(f"\n{recipe_path.name}, seed {seed} (MiniCity Cityscapes-like val, mIoU19)\n")
        print("| model | mIoU19 |\n|---|---|")
        for label, value in rows.items():
            print(f"| {label} | {value:.2f} |")
        print(
            f"\nphase 2 closes {100 * closed:.0f} % of the source-only → oracle gap; compact − float32 phase 2: "
            f"{rows['phase 2 (OEST, deployed)'] - rows['phase 2 on float32 soft labels']:+.2f}"
        )
        print(
            "time per iteration vs a source-only iteration: "
            + ", ".join(f"{k} {v:.2f}×" for k, v in result["time_per_iteration_vs_source_only"].items())
        )
        print(
            "soft labels, bytes per image pixel: "
            + ", ".join(f"{k} {v:.4f}" for k, v in result["soft_label_bytes_per_pixel"].items())
        )


if __name__ == "__main__":
    main()
