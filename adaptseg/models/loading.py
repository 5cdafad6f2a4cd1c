"""A trained model by reference: a run folder, a weights file (+ its preset), or a preset name.

What ``--model`` means to ``infer``/``eval``/``pseudo-label`` (eager PyTorch) and what ``export`` starts
from, resolved once here so both read a reference the same way:

===============================  ====================================================================
``runs/<run>/`` (a trained run)   ``student.safetensors`` (the run folder or its last stage folder that
                                  has one) + the preset named in its header or in ``recipe.yaml``
``weights.safetensors``/``.pth``  weights + the preset in the file's header, or ``arch`` (``--arch``)
``tiny-deeplabv2``                a model preset name: random weights (smoke tests, benchmarks)
===============================  ====================================================================
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from adaptseg.errors import UserError
from adaptseg.models.presets import ModelPreset, list_presets

log = logging.getLogger(__name__)

#: files a trained run keeps its deployable weights and recipe in (the trainer's layout)
RUN_WEIGHTS = "student.safetensors"
RUN_RECIPE = "recipe.yaml"
#: weight files read by :func:`adaptseg.models.load_checkpoint` (``.pt`` only without a ``model.json``
#: beside it: with one it is an exported TorchScript artifact)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
ARCH_FIX = "pass the model preset the weights were trained with: --arch NAME (see `adaptseg models list`)"


@dataclass(frozen=True)
class LoadedModel:
    """A segmentor with its weights loaded, its preset, and the file they came from (``None``: random)."""

    net: nn.Module
    preset: ModelPreset
    weights: Path | None


def load_model(model: str | Path, arch: str | None = None) -> LoadedModel:
    """The eager segmentor behind ``model`` (run folder, weights file + ``arch``, or preset name), on the CPU."""
    path = Path(model).expanduser()
    if path.is_dir():
        return load_weights_file(run_weights(path), arch)
    if path.is_file():
        return load_weights_file(path, arch)
    bare_name = path.suffix == "" and "/" not in str(model)
    if bare_name and str(model) in list_presets():
        return load_preset_name(str(model))
    close = difflib.get_close_matches(str(model), list_presets(), n=1) if bare_name else []
    raise UserError(
        "no such file or folder" + (", nor a model preset" if bare_name else ""),
        path=path,
        fix=(f"did you mean the preset '{close[0]}'? " if close else "")
        + "pass a run folder, a weights/artifact file, or a preset name from `adaptseg models list`",
    )


def run_weights(folder: Path) -> Path:
    """A trained run's ``student.safetensors``: in ``folder``, else in its most recent stage folder."""
    weights = folder / RUN_WEIGHTS
    if weights.is_file():
        return weights
    found = sorted(folder.glob(f"*/{RUN_WEIGHTS}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(
            f"no {RUN_WEIGHTS} in this folder or its stage folders",
            path=folder,
            fix="pass a finished run folder, a .safetensors file with --arch, or an export folder",
        )
    return found[-1]


def _recipe_preset(weights: Path) -> str | None:
    """The model preset named by the ``recipe.yaml`` beside the weights or one folder up."""
    import yaml

    for folder in (weights.parent, weights.parent.parent):
        recipe = folder / RUN_RECIPE
        if recipe.is_file():
            data = yaml.safe_load(recipe.read_text()) or {}
            model = data.get("model") if isinstance(data, dict) else None
            preset = model.get("preset") if isinstance(model, dict) else model
            if isinstance(preset, str):
                return preset
    return None


def load_weights_file(path: Path, arch: str | None = None) -> LoadedModel:
    """Weights (our safetensors, or any layout :func:`adaptseg.models.load_checkpoint` detects) + a preset.

    The preset is ``arch``, else the one the file's header or its run's ``recipe.yaml`` names. Weights
    that do not fit it (another architecture or class count) are one line naming ``--arch``.
    """
    from adaptseg.models.checkpoint import load_checkpoint
    from adaptseg.models.presets import build_model, load_preset
    from adaptseg.models.union import ARCHITECTURE, union_from_metadata

    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise UserError(
            f"'{path.suffix or path.name}' is not a weights file",
            path=path,
            fix=f"pass a run folder, a model preset name, or weights ending in {', '.join(WEIGHT_SUFFIXES)}",
        )
    meta: dict[str, str] = {}
    if path.suffix == ".safetensors":
        from adaptseg.models.weights import read_metadata

        try:
            meta = read_metadata(path)
        except Exception as exc:  # safetensors raises its own error types for a broken header
            raise UserError(
                f"unreadable safetensors file ({exc})", path=path, fix="re-export or re-train"
            ) from None
    name = arch or meta.get("preset") or _recipe_preset(path)
    if name is None:
        raise UserError("the weights do not say which model preset they belong to", path=path, fix=ARCH_FIX)
    preset = load_preset(name)
    classes = int(meta["num_classes"]) if meta.get("num_classes", "").isdigit() else None
    net = (
        build_model(preset, num_classes=classes)
        if meta.get("architecture") != ARCHITECTURE
        else union_from_metadata(preset, meta)
    )  # UMMA's backbones + per-source heads (models/union.py)
    report = load_checkpoint(
        net, path, format="adaptseg" if path.suffix == ".safetensors" else "auto", strict=False
    )
    if not report.ok:
        problem = report.summary().split("; ", 1)[-1]
        raise UserError(
            f"these weights do not fit model preset '{name}' ({problem})", path=path, fix=ARCH_FIX
        )
    return LoadedModel(net, preset, path)


def load_preset_name(name: str) -> LoadedModel:
    """A model preset with random weights (outputs are meaningless: smoke tests and benchmarks)."""
    from adaptseg.models.presets import build_model, load_preset

    preset = load_preset(name)
    log.warning("model preset %r has random weights: outputs are meaningless (pass trained weights)", name)
    return LoadedModel(build_model(preset), preset, None)
