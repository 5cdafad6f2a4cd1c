"""Backends: what turns a crop batch into crop-sized logits, behind one protocol, and how ``--model`` resolves.

Every backend honours the deploy contract (DESIGN.md "Contracts"): float32 N×3×h×w crops of 0–255 RGB
in, N×C×h×w logits out. The engine never knows which one runs.

:func:`load_backend` turns what a user passes as ``--model`` into a backend:

===============================  ====================================================================
``models/<name>/`` + model.json   an exported artifact: the runtime its ``model.json`` ``format`` names
``model.onnx`` / ``model.pt`` …   an artifact's model file (a ``model.json`` beside it), same
``runs/<run>/``, weights, preset  eager PyTorch (:class:`TorchBackend`) of :func:`adaptseg.models.loading.load_model`
===============================  ====================================================================

Artifact runtimes (TorchScript, ONNX Runtime, TensorRT) register themselves in the artifact layer
(:mod:`adaptseg.artifact.runtime`), which export's parity check uses too: a new format plugs in there
without touching the engine or this resolver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from adaptseg.artifact.meta import SIDECAR
from adaptseg.artifact.runtime import open_runtime, resolve_device, runtime_for_suffix
from adaptseg.infer.config import BackendOptions

__all__ = ["Backend", "TorchBackend", "load_backend", "resolve_device"]


@runtime_checkable
class Backend(Protocol):
    """Crops in, crop-sized logits out.

    Attributes:
        crop: the fixed (h, w) input size of an artifact, or ``None`` when any size works.
        num_classes: channels of the output.
        device: where input crops should be placed (the engine copies them there).
        mean: RGB 0–255 colour that pads windows smaller than the crop (zero after normalisation).
    """

    crop: tuple[int, int] | None
    num_classes: int
    device: torch.device
    mean: tuple[float, float, float]

    def __call__(self, crops: Tensor) -> Tensor:
        """float32 N×3×h×w 0–255 RGB → N×C×h×w logits."""
        ...


class TorchBackend:
    """Eager PyTorch: a module honouring the deploy contract, with AMP, channels-last and compile options.

    ``module`` maps 0–255 RGB crops to crop-sized logits (an :class:`adaptseg.models.DeployModule`, or
    anything with the same contract). ``mean`` defaults to the module's ``mean`` buffer when it has one.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        num_classes: int,
        device: str | torch.device | None = None,
        options: BackendOptions | None = None,
        mean: Sequence[float] | None = None,
        crop: tuple[int, int] | None = None,
    ):
        self.options = options or BackendOptions()
        self.device = resolve_device(device)
        self.num_classes = int(num_classes)
        self.crop = crop
        if mean is None:
            buffer = getattr(module, "mean", None)
            mean = buffer.flatten().tolist() if isinstance(buffer, Tensor) else (0.0, 0.0, 0.0)
        self.mean = tuple(float(v) for v in mean)  # type: ignore[assignment]
        module = module.eval().to(self.device)
        if self.options.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self._forward: Callable[[Tensor], Tensor] = (
            torch.compile(module, dynamic=False) if self.options.compile else module
        )
        dtype = self.options.amp_dtype or ("float16" if self.device.type == "cuda" else "bfloat16")
        self.amp_dtype = getattr(torch, dtype)

    @classmethod
    def from_model(
        cls, model: nn.Module, mean: Sequence[float], std: Sequence[float], **kwargs: Any
    ) -> TorchBackend:
        """Wrap a segmentor (normalised input, logits at its output stride) in the deploy module."""
        from adaptseg.models import DeployModule

        kwargs.setdefault("num_classes", getattr(model, "num_classes", None))
        return cls(DeployModule(model, mean, std), **kwargs)

    def __call__(self, crops: Tensor) -> Tensor:
        x = crops.to(self.device, dtype=torch.float32, non_blocking=True)
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.options.amp),
        ):
            out = self._forward(x)
        return out.float()

    def __repr__(self) -> str:
        return f"TorchBackend(classes={self.num_classes}, device={self.device}, {self.options!r})"


# ------------------------------------------------------------------------------------------ resolution
def load_backend(
    model: str | Path,
    device: str | torch.device | None = None,
    options: BackendOptions | None = None,
    *,
    arch: str | None = None,
) -> Backend:
    """The backend for ``--model`` (an exported artifact, a run folder, weights + preset, or a preset name).

    ``arch`` names the model preset for weight files that do not record it in their header.
    """
    options = options or BackendOptions()
    device = resolve_device(device)
    path = Path(model).expanduser()
    if is_artifact_path(path):
        return open_runtime(path, device)
    return _load_eager(model, device=device, options=options, arch=arch)


def is_artifact_path(path: Path) -> bool:
    """An export folder (it has a ``model.json``), or a file a runtime reads with a ``model.json`` beside it."""
    if path.is_dir():
        return (path / SIDECAR).is_file()
    if not path.is_file() or runtime_for_suffix(path.suffix) is None:
        return False
    if (path.parent / SIDECAR).is_file():
        return True
    from adaptseg.models.loading import WEIGHT_SUFFIXES

    if path.suffix.lower() in WEIGHT_SUFFIXES:  # a .pt of weights, not a TorchScript export
        return False
    return True  # open_artifact explains that an artifact needs its model.json


def _load_eager(
    model: str | Path, *, device: torch.device, options: BackendOptions, arch: str | None
) -> Backend:
    """A run folder, weights file or preset name as eager PyTorch (:func:`adaptseg.models.loading.load_model`)."""
    from adaptseg.models.loading import load_model

    loaded = load_model(model, arch)
    return TorchBackend.from_model(
        loaded.net, loaded.preset.mean, loaded.preset.std, device=device, options=options
    )
