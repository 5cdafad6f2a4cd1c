"""What the demo can adapt with: every recipe in ``train/demo/`` that has a ``demo:`` section.

Each demo recipe trains its own source-only stage first (the baseline and the method's starting point),
then the method's stages. The demo scores the weights of ``source_stage`` (source-only, and AdaBN from
it) and of ``adapted_stage`` (the adapted model that is exported and run from ONNX). A recipe says how the
demo presents it in its ``demo:`` section (the fields of :class:`DemoMethod`); adding a method to the demo
is adding its recipe there.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from pydantic import ConfigDict, Field

from adaptseg.config import StrictModel, load_yaml, validate
from adaptseg.errors import UserError
from adaptseg.resources import TRAIN, resource_dir

#: The method the demo runs unless told otherwise: the one that gains most in the time budget. Measured
#: with --quick (seed 0, same data and budget): DDB ca self-training 21.4 → 31.5 mIoU (AdaBN 27.8); ATP's
#: A→T→P on its shortened schedules 20.3 → 20.4 (AdaBN 20.5) — no gain in so few iterations.
DEFAULT_METHOD = "ddb"
DEMO_FOLDER = "demo"  # in train/


class DemoMethod(StrictModel):
    """A method as the demo runs it: its recipe's ``demo:`` section, plus the recipe's file and name."""

    model_config = ConfigDict(frozen=True)

    label: str = Field(description='the method in the "adapted" rows of the table')
    stages_note: str = Field(
        description="which of the method's stages the demo runs (honest about partial pipelines)"
    )
    source_stage: str = "source"
    adapted_stage: str
    adapted_file: str = Field(
        "student.safetensors", description="the model of the adapted stage scored and exported"
    )
    quick: list[str] = Field(
        default_factory=list, description="--set overrides of `adaptseg demo --quick` runs"
    )
    name: str = Field("", description="the recipe's file name without .yaml (set from the file)")
    recipe: str = Field("", description="the recipe's file name in train/demo/ (set from the file)")


def recipes_dir() -> Path:
    """``train/demo/``, found by the resource lookup (:mod:`adaptseg.resources`)."""
    return resource_dir(TRAIN) / DEMO_FOLDER


def demo_methods() -> dict[str, DemoMethod]:
    """The demo's methods by name: the recipes in ``train/demo/`` with a ``demo:`` section."""
    methods: dict[str, DemoMethod] = {}
    for name in TRAIN.names(f"{DEMO_FOLDER}/*"):
        path = TRAIN.find(name)
        section = load_yaml(path).get("demo")
        if section is None:
            continue
        if not isinstance(section, dict):
            raise UserError("'demo' must be a mapping of keys to values", path=path)
        method = validate(DemoMethod, section, source=f"{path} (demo section)")
        methods[path.stem] = method.model_copy(update={"name": path.stem, "recipe": path.name})
    return methods


def get_method(name: str) -> DemoMethod:
    """The demo entry of ``name``; an unknown name is a :class:`UserError` that lists the choices."""
    key = name.strip().lower()
    methods = demo_methods()
    if key in methods:
        return methods[key]
    close = difflib.get_close_matches(key, list(methods), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UserError(f"the demo has no method '{name}'", fix=f"{hint}choose one of: {', '.join(methods)}")
