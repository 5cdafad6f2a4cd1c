"""The training loop every method plugs into: recipes, stages, the Trainer and its parts.

* ``config`` — the recipe schema (``Recipe``, stages, data streams, optimiser, schedule, switches).
* ``pipeline`` — runs a recipe's stages under ``RUN_DIR/<stage>/`` (``run_recipe``; ``adaptseg train``).
* ``trainer`` — the ``Trainer``: devices, AMP, channels-last, compile, DDP, checkpoints, hooks.
* ``optim`` / ``schedule`` — mmcv-style parameter groups and poly + warmup lr (``build_optimizer``,
  ``poly_warmup_lr``).
* ``checkpoint``, ``hooks``, ``logger``, ``evaluation``, ``distributed``, ``precision``, ``context``.

Names are imported lazily so that ``import adaptseg.train`` stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adaptseg._lazy import lazy_getattr

_EXPORTS = {
    "Recipe": "adaptseg.train.config",
    "StageContext": "adaptseg.train.context",
    "Trainer": "adaptseg.train.trainer",
    "build_optimizer": "adaptseg.train.optim",
    "poly_warmup_lr": "adaptseg.train.schedule",
    "PolyWarmupSchedule": "adaptseg.train.schedule",
    "run_recipe": "adaptseg.train.pipeline",
    "RecipeRunner": "adaptseg.train.pipeline",
    "evaluate_segmentor": "adaptseg.train.evaluation",
}

__all__ = [
    "PolyWarmupSchedule", "Recipe", "RecipeRunner", "StageContext", "Trainer", "build_optimizer",
    "evaluate_segmentor", "poly_warmup_lr", "run_recipe",
]  # fmt: skip

if TYPE_CHECKING:
    from adaptseg.train.config import Recipe
    from adaptseg.train.context import StageContext
    from adaptseg.train.evaluation import evaluate_segmentor
    from adaptseg.train.optim import build_optimizer
    from adaptseg.train.pipeline import RecipeRunner, run_recipe
    from adaptseg.train.schedule import PolyWarmupSchedule, poly_warmup_lr
    from adaptseg.train.trainer import Trainer


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
