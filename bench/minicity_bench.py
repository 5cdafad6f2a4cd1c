"""What the MiniCity method benches share: opening a recipe's splits, the target-trained oracle's stream,
AdaBN on target images, scoring on the recipe's val split, the share of the gap closed, and the
``--recipe --out --seeds --set`` command line that runs one seed after another.

The benches import it from their own folder (``sys.path.insert(0, <bench/>)``); it is not part of the
package. Every function reads the recipe as ``adaptseg train`` resolved it, so a bench scores exactly what
the trainer's periodic evaluation would.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from adaptseg.allocator import tune_host_allocator
from adaptseg.config import load_recipe
from adaptseg.train.config import DatasetSpec, Recipe, StageSpec, StreamSpec


# ------------------------------------------------------------------------------------------------ data
def open_split(recipe: Recipe, spec: DatasetSpec, *, labels: bool | None = None):
    """The reader of one of the recipe's dataset specs (a ``minicity:`` root generated with the recipe's
    generator options); ``labels`` overrides the spec's. Plain splits only: a spec with ``ids`` or
    ``concat`` is the trainer's business (``StageContext.open_dataset``)."""
    from adaptseg.data.pipeline import open_dataset

    if spec.ids or spec.concat:
        raise ValueError(f"{spec.name}: the MiniCity benches read plain splits (no ids/concat)")
    return open_dataset(
        spec.name,
        spec.root,
        spec.split,
        labels=spec.labels if labels is None else labels,
        options=spec.options,
        minicity=recipe.minicity.generator_options(),
    )


def labelled_target(recipe: Recipe, *, batch_from: str, pipeline_from: str = "target") -> StreamSpec:
    """The target stream with its labels read: the oracle's training data, with stream ``batch_from``'s
    batch size and stream ``pipeline_from``'s augmentation pipeline (everything else the target's)."""
    target = recipe.data["target"]
    return target.model_copy(
        update={
            "labels": True,
            "batch_size": recipe.data[batch_from].batch_size,
            "pipeline": recipe.data[pipeline_from].pipeline,
        }
    )


def oracle_recipe(recipe: Recipe, batch_from: str) -> Recipe:
    """One ``source_only`` stage named ``oracle`` on :func:`labelled_target` (the target stream's pipeline,
    stream ``batch_from``'s batch size); preset, init, optimiser, schedule and seed are the recipe's."""
    return recipe.model_copy(
        update={
            "data": {"source": labelled_target(recipe, batch_from=batch_from)},
            "stages": [StageSpec(name="oracle", method="source_only")],
        }
    )


# ------------------------------------------------------------------------------------------------ AdaBN
def target_batches(recipe: Recipe, mean, std, *, batches: int, batch_size: int) -> Iterator[Tensor]:
    """``batches`` batches of ``batch_size`` target-train images drawn at random (seeded by the recipe's
    seed) and passed through the target stream's pipeline, normalised with ``mean``/``std``."""
    from adaptseg.data.pipeline import with_normalize

    spec = recipe.data["target"]
    dataset = open_split(recipe, spec, labels=False)
    transform = with_normalize(spec.pipeline, mean, std)
    rng = np.random.default_rng(recipe.seed)
    for _ in range(batches):
        picks = rng.integers(len(dataset), size=batch_size)
        yield torch.stack([torch.from_numpy(transform(dataset[int(i)].image, None, rng)[0]) for i in picks])


# ------------------------------------------------------------------------------------------------ scores
def val_report(recipe: Recipe, model: nn.Module, mean, std, **options: Any):
    """The recipe's evaluation (val split, inference preset, protocol) of ``model``; ``options`` go to
    :func:`~adaptseg.train.evaluation.evaluate_segmentor` (e.g. ``test_time_prior``)."""
    from adaptseg.train.evaluation import evaluate_segmentor

    return evaluate_segmentor(
        model,
        open_split(recipe, recipe.eval.dataset),
        mean=mean,
        std=std,
        preset=recipe.eval.preset,
        protocol=recipe.eval.protocol,
        **options,
    )


def weights_report(recipe: Recipe, weights: Path, *, adabn_batches: int = 0, adabn_batch_size: int = 1):
    """:func:`val_report` of an exported weights file; with ``adabn_batches``, after AdaBN (its BatchNorm
    statistics re-estimated on :func:`target_batches`, weights unchanged)."""
    from adaptseg.methods.parts.adabn import adabn
    from adaptseg.models.loading import load_model

    loaded = load_model(weights)
    mean, std = loaded.preset.mean, loaded.preset.std
    if adabn_batches:
        adabn(
            loaded.net, target_batches(recipe, mean, std, batches=adabn_batches, batch_size=adabn_batch_size)
        )
    return val_report(recipe, loaded.net, mean, std)


def score(recipe: Recipe, weights: Path, *, adabn_batches: int = 0, adabn_batch_size: int = 1) -> float:
    """Val mIoU (under the recipe's protocol) of :func:`weights_report`."""
    return float(
        weights_report(recipe, weights, adabn_batches=adabn_batches, adabn_batch_size=adabn_batch_size).miou
    )


def gap_closed(miou: float, source: float, oracle: float) -> float:
    """The share of the source → oracle gap a model closes (1 = oracle, 0 = source, < 0 = below source;
    NaN when the oracle is not above the source)."""
    return (miou - source) / (oracle - source) if oracle > source else math.nan


# ------------------------------------------------------------------------------------------------ runs
def timed_stages(recipe: Recipe, run_dir: Path, recipe_path: Path) -> dict[str, float]:
    """Run every stage (skipping finished ones); seconds per iteration of the training stages run now."""
    from adaptseg.methods.base import get_method
    from adaptseg.train.pipeline import RecipeRunner, stage_complete

    runner = RecipeRunner(recipe, run_dir, recipe_path=recipe_path)
    per_iteration = {}
    for stage in recipe.stages:
        done = stage_complete(run_dir / stage.name)
        started = time.perf_counter()
        runner.run(stage=stage.name)
        if not done and get_method(stage.method).kind == "train":
            per_iteration[stage.name] = (time.perf_counter() - started) / (
                stage.iters or recipe.schedule.iters
            )
    return per_iteration


def seeded_runs(
    doc: str,
    recipe: Path,
    out: Path,
    bench_seed: Callable[[Recipe, Path, Path], dict],
    argv: list[str] | None = None,
) -> Iterator[tuple[Path, int, dict]]:
    """The MiniCity benches' command line (``--recipe --out --seeds --set``): yields ``(recipe path, seed,
    result)``. ``bench_seed(recipe, recipe_path, out_dir)`` runs one seed (evaluation during training off)
    and returns its result dict."""
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
