"""What ``adaptseg export MODEL`` exports: the eager deploy module of a run, weights file or preset.

Resolution is the inference engine's (:func:`adaptseg.infer.backends.load_backend`), so ``export`` and
``infer``/``eval`` read a run folder, a ``.safetensors``/``.pth`` file (+ ``--preset``) or a preset
name (random weights) the same way; the eager backend it returns holds the deploy module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from adaptseg.errors import UserError
from adaptseg.export.artifact import weights_sha256
from adaptseg.models.presets import ModelPreset, load_preset

#: weight file stems that say nothing about the model: the artifact is named after the run instead
_GENERIC_STEMS = {"student", "teacher", "model", "weights", "checkpoint-last", "checkpoint"}


@dataclass(frozen=True)
class EagerSource:
    """An eager fp32 deploy module on the CPU and what the sidecar says about where it came from."""

    module: nn.Module  # DeployModule: 0–255 RGB crops in, crop-sized logits out
    preset: ModelPreset
    name: str  # a default artifact name
    given: str  # MODEL as the user wrote it
    weights_sha256: str
    num_classes: int
    output_stride: int


def artifact_name(model: str | Path, preset: ModelPreset) -> str:
    """A default artifact name: the run folder's, the weights file's, or the preset's name."""
    path = Path(model)
    if not path.exists():
        return preset.name or path.name
    path = path.resolve()
    if path.is_dir():
        return path.name
    if path.stem not in _GENERIC_STEMS:
        return path.stem
    run = path.parent
    if not (run / "recipe.yaml").is_file() and (run.parent / "recipe.yaml").is_file():
        return f"{run.parent.name}-{run.name}"
    return run.name


def load_source(model: str | Path, arch: str | None = None) -> EagerSource:
    """The eager model behind ``model`` (run folder, weights + ``arch``, or preset name), fp32 on the CPU."""
    from adaptseg.infer.backends import TorchBackend, load_backend
    from adaptseg.infer.config import BackendOptions

    backend = load_backend(model, device="cpu", options=BackendOptions(channels_last=False), arch=arch)
    if not isinstance(backend, TorchBackend):
        raise UserError(
            "is an exported artifact already; export starts from the eager model",
            path=model,
            fix="pass the run folder, a weights file (+ --preset) or a model preset name",
        )
    deploy = backend.module.float().eval()
    net = getattr(deploy, "model", deploy)
    preset_name = arch or getattr(net, "preset_name", None)
    if not preset_name:
        raise UserError("cannot tell which model preset this is", path=model, fix="pass --preset NAME")
    preset = load_preset(preset_name)
    return EagerSource(
        module=deploy,
        preset=preset,
        name=artifact_name(model, preset),
        given=str(model),
        weights_sha256=weights_sha256(net),
        num_classes=int(backend.num_classes),
        output_stride=int(getattr(net, "output_stride", 1)),
    )
