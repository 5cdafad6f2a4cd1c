"""What the demo can adapt with: one entry per method, naming its recipe in ``train/demo/`` and its stages.

Each demo recipe trains its own source-only stage first (the baseline and the method's starting point),
then the method's stages. The demo scores the weights of ``source_stage`` (source-only, and AdaBN from
it) and of ``adapted_stage`` (the adapted student that is exported and run from ONNX).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from adaptseg.errors import UserError


@dataclass(frozen=True)
class DemoMethod:
    """A method as the demo runs it."""

    name: str
    recipe: str  # file name in train/demo/
    source_stage: str
    adapted_stage: str
    label: str  # the method in the "adapted" rows of the table
    stages_note: str  # which of the method's stages the demo runs (honest about partial pipelines)
    adapted_file: str = "student.safetensors"  # which model of the adapted stage is exported and scored


METHODS: dict[str, DemoMethod] = {
    "ddb": DemoMethod(
        name="ddb",
        recipe="ddb.yaml",
        source_stage="source",
        adapted_stage="r1_st_ca",
        label="DDB R1-ST class-mix (EMA)",
        stages_note=(
            "DDB round 1, class-mix (ca) self-training path only, started from the source-only model; the "
            "adapted model is the stage's EMA teacher (its student is scored too). The full method adds the "
            "cut-mix path, prototypes, CKD distillation and a second round"
        ),
        adapted_file="ema.safetensors",
    ),
    "atp": DemoMethod(
        name="atp",
        recipe="atp.yaml",
        source_stage="source",
        adapted_stage="propagate",
        label="ATP A→T→P",
        stages_note="ATP's whole source-free pipeline (align, teach, rank, propagate) on shortened schedules",
    ),
}

#: The method the demo runs unless told otherwise: the one that gains most in the time budget. Measured
#: with --quick (seed 0, same data and budget): DDB ca self-training 21.4 → 31.5 mIoU (AdaBN 27.8); ATP's
#: A→T→P on its shortened schedules 20.3 → 20.4 (AdaBN 20.5) — no gain in so few iterations.
DEFAULT_METHOD = "ddb"


def get_method(name: str) -> DemoMethod:
    """The demo entry of ``name``; an unknown name is a :class:`UserError` that lists the choices."""
    key = name.strip().lower()
    if key in METHODS:
        return METHODS[key]
    close = difflib.get_close_matches(key, list(METHODS), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UserError(f"the demo has no method '{name}'", fix=f"{hint}choose one of: {', '.join(METHODS)}")


def recipes_dir() -> Path:
    """``train/demo/`` of the adaptseg tree (found as the presets are: ``$ADAPTSEG_HOME`` or above the package)."""
    from adaptseg.models.presets import models_dir

    folder = models_dir().parent / "train" / "demo"
    if not folder.is_dir():
        raise UserError("cannot find the demo recipes", path=folder,
                        fix="run from the adaptseg repository, or set ADAPTSEG_HOME to its root")
    return folder
