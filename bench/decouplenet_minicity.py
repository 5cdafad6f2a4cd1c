"""DecoupleNet on MiniCity: source-only, AdaBN, phase 1, phase 2 and a target-trained oracle at the same budget
on the Cityscapes-like val split (mIoU19); the time per iteration of each phase relative to source-only; and
the compact soft labels (float16 logits, deployed; top-k probabilities) against the release's float32 logits —
bytes per pixel and the phase-2 mIoU of each form with the same seed (decouplenet.md; issue 17 items 2 and 6)::

    OMP_NUM_THREADS=1 ADAPTSEG_MINICITY=/tmp/minicity-cache .venv/bin/python bench/decouplenet_minicity.py \\
        --out /tmp/bench-decouplenet [--seeds 0 1]

Run folders are ordinary ``adaptseg train`` run folders: finished stages are skipped on re-run. The run adds
two stages per other soft-label form: ``soft_f32`` (the release's float32 logits), ``soft_topk`` (top-4
probabilities in the pseudo-label store) and ``phase2_<form>`` (phase 2 on it, same seed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from adaptseg.train.config import Recipe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from umma_minicity import minicity, oracle_recipe, score, seeded_runs, timed_stages  # noqa: E402  (the MiniCity bench helpers)

#: the soft-label forms compared with the recipe's own (``soft`` → ``phase2``): stage suffix → form
VARIANTS = {"f32": "float32", "topk": "topk"}


def with_form_variants(recipe: Recipe) -> Recipe:
    """The recipe plus ``soft_<v>`` and ``phase2_<v>`` per :data:`VARIANTS`: the other forms and phase 2 on them."""
    soft = recipe.stage("soft")
    phase2 = recipe.stage("phase2")
    extra = []
    for suffix, form in VARIANTS.items():
        if form == soft.options.get("form"):
            continue
        options = {**soft.options, "form": form, **({"topk": 4} if form == "topk" else {})}
        extra += [
            soft.model_copy(update={"name": f"soft_{suffix}", "options": options}),
            phase2.model_copy(
                update={
                    "name": f"phase2_{suffix}",
                    "options": {**phase2.options, "soft_labels": f"soft_{suffix}"},
                }
            ),
        ]
    return recipe.model_copy(update={"stages": [*recipe.stages, *extra]})


def bytes_per_pixel(run_dir: Path, recipe: Recipe) -> dict[str, float]:
    from adaptseg.data.pipeline import open_dataset
    from adaptseg.methods.decouplenet.soft_labels import soft_label_bytes

    spec = recipe.data["target_full"]
    dataset = open_dataset(spec.name, spec.root, spec.split, labels=False, minicity=minicity(recipe))
    pixels = sum(image.shape[0] * image.shape[1] for image in map(dataset.read_image, range(len(dataset))))
    out = {}
    for stage in ["soft", *(f"soft_{suffix}" for suffix in VARIANTS)]:
        if not (run_dir / stage).is_dir():
            continue
        form = recipe.stage(stage).options.get("form", "float16")
        found = soft_label_bytes(run_dir / stage)
        if "topk" in found:
            out["top-k probabilities (what phase 2 reads)"] = found["topk"] / pixels
            out["top-k store (+ label and confidence PNGs)"] = sum(found.values()) / pixels
        else:
            out[f"{form} logits"] = found["logits"] / pixels
    return out


def bench_seed(recipe: Recipe, recipe_path: Path, out: Path) -> dict:
    recipe = with_form_variants(recipe)
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
        **{
            f"phase 2 on {form} soft labels": score(recipe, run / f"phase2_{suffix}" / "student.safetensors")
            for suffix, form in VARIANTS.items()
            if (run / f"phase2_{suffix}").is_dir()
        },
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
