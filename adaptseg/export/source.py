"""What ``adaptseg export MODEL`` exports: the eager deploy module of a run, weights file or preset.

Resolution is :func:`adaptseg.models.loading.load_model`, the one ``infer``/``eval`` use for eager
models, so every command reads a run folder, a weights file (+ ``--arch``) or a preset name (random
weights) the same way. An exported artifact is refused: export starts from the eager model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from adaptseg.artifact.folder import weights_sha256
from adaptseg.artifact.meta import SIDECAR
from adaptseg.artifact.runtime import runtime_for_suffix
from adaptseg.errors import UserError
from adaptseg.models.presets import ModelPreset

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
    from adaptseg.models.deploy import DeployModule
    from adaptseg.models.loading import load_model

    path = Path(model).expanduser()
    exported = (path / SIDECAR).is_file() if path.is_dir() else (path.parent / SIDECAR).is_file()
    if path.exists() and exported and (path.is_dir() or runtime_for_suffix(path.suffix) is not None):
        raise UserError(
            "is an exported artifact already; export starts from the eager model",
            path=model,
            fix="pass the run folder, a weights file (+ --arch) or a model preset name",
        )
    loaded = load_model(model, arch)
    net = loaded.net.float().eval()
    return EagerSource(
        module=DeployModule(net, loaded.preset.mean, loaded.preset.std).eval(),
        preset=loaded.preset,
        name=artifact_name(model, loaded.preset),
        given=str(model),
        weights_sha256=weights_sha256(net),
        num_classes=int(net.num_classes),
        output_stride=int(getattr(net, "output_stride", 1)),
    )
