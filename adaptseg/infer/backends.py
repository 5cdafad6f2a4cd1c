"""Backends: what turns a crop batch into crop-sized logits, behind one protocol, and how ``--model`` resolves.

Every backend honours the deploy contract (DESIGN.md "Contracts"): float32 N×3×h×w crops of 0–255 RGB
in, N×C×h×w logits out. The engine never knows which one runs.

:func:`load_backend` turns what a user passes as ``--model`` into a backend:

===============================  ====================================================================
``runs/<run>/`` (a trained run)   ``student.safetensors`` (the run folder or its last stage folder that
                                  has one) + the preset named in its header or in ``recipe.yaml``
``weights.safetensors``/``.pth``  weights + the preset in the file's header, or ``arch=`` (``--arch``)
``tiny-deeplabv2``                a model preset name: random weights (smoke tests, benchmarks)
``model.onnx`` / ``.pt`` / …      an exported artifact, by the backend kind registered for it
``models/<name>/`` + model.json   an export folder: the kind named by ``model.json``'s ``format``
===============================  ====================================================================

Artifact kinds (TorchScript, ONNX Runtime, TensorRT) register themselves with :func:`register_backend`
from modules listed in :data:`PLUGIN_MODULES`, imported on first use (a module not written yet is
skipped), so new formats plug in without touching the engine or this resolver.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from adaptseg.errors import UserError
from adaptseg.infer.config import BackendOptions

log = logging.getLogger(__name__)

#: modules that register more backend kinds when imported (a module not written yet is skipped)
PLUGIN_MODULES: tuple[str, ...] = ("adaptseg.export.backends",)

#: files a trained run keeps its deployable weights and recipe in (the trainer's layout)
RUN_WEIGHTS = "student.safetensors"
RUN_RECIPE = "recipe.yaml"


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


#: A loader builds a backend from a path: ``loader(path, device=…, options=…, arch=…)``.
BackendLoader = Callable[..., Backend]


@dataclass(frozen=True)
class BackendKind:
    name: str
    suffixes: tuple[str, ...]
    load: BackendLoader


#: registered backend kinds by name (``torch`` built in; artifact formats from plugins)
BACKEND_KINDS: dict[str, BackendKind] = {}


def register_backend(name: str, suffixes: Sequence[str] = ()) -> Callable[[BackendLoader], BackendLoader]:
    """Register a backend kind: files ending in ``suffixes``, and export folders whose ``model.json``
    says ``"format": name``, load through the decorated ``loader(path, *, device, options, arch)``."""

    def decorator(loader: BackendLoader) -> BackendLoader:
        if name in BACKEND_KINDS:
            raise ValueError(f"backend kind {name!r} registered twice")
        BACKEND_KINDS[name] = BackendKind(name, tuple(s.lower() for s in suffixes), loader)
        return loader

    return decorator


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` → CUDA when available, else CPU; anything else as given (checked)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device} asked for but CUDA is not available", fix="use --device cpu")
    return device


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
        self._forward: Callable[[Tensor], Tensor] = torch.compile(module, dynamic=False) if self.options.compile else module
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
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.options.amp):
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
    """The backend for ``--model`` (a run folder, weights + preset, a preset name, or an exported artifact).

    ``arch`` names the model preset for weight files that do not record it in their header.
    """
    _load_plugins()
    options = options or BackendOptions()
    device = resolve_device(device)
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "model.json").is_file():
            return _load_export_folder(path, device, options, arch)
        return _load_run(path, device, options, arch)
    if path.is_file():
        suffix = path.suffix.lower()
        for kind in BACKEND_KINDS.values():
            if suffix in kind.suffixes:
                return kind.load(path, device=device, options=options, arch=arch)
        known = sorted({s for k in BACKEND_KINDS.values() for s in k.suffixes})
        raise UserError(
            f"no backend reads '{suffix or path.name}' files",
            path=path,
            fix=f"pass a run folder, a model preset name, or a file ending in {', '.join(known)}",
        )
    if path.suffix == "" and "/" not in str(model):
        return _load_preset_name(str(model), device, options)
    raise UserError("model not found", path=path, fix="pass a run folder, a weights/artifact file or a preset name")


def _load_plugins() -> None:
    for name in PLUGIN_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the plugin exists but something it imports is missing
                raise


def _load_export_folder(path: Path, device: torch.device, options: BackendOptions, arch: str | None) -> Backend:
    try:
        meta = json.loads((path / "model.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable model.json ({exc})", path=path / "model.json", fix="re-export the model") from None
    fmt = str(meta.get("format", "")) if isinstance(meta, dict) else ""
    if fmt not in BACKEND_KINDS:
        known = ", ".join(sorted(BACKEND_KINDS))
        raise UserError(
            f"model.json names format {fmt!r}, which no installed backend runs (known: {known})",
            path=path / "model.json",
            fix="install the runtime for that format, or export again with another --format",
        )
    return BACKEND_KINDS[fmt].load(path, device=device, options=options, arch=arch)


def _load_run(path: Path, device: torch.device, options: BackendOptions, arch: str | None) -> Backend:
    """A trained run: its ``student.safetensors`` (root, else the last stage folder) + its preset."""
    weights = path / RUN_WEIGHTS
    if not weights.is_file():
        found = sorted(path.glob(f"*/{RUN_WEIGHTS}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise UserError(
                f"no {RUN_WEIGHTS} in this folder or its stage folders",
                path=path,
                fix="pass a finished run folder, a .safetensors file with --arch, or an export folder",
            )
        weights = found[-1]
    return _load_weights(weights, device=device, options=options, arch=arch)


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


@register_backend("torch", suffixes=(".safetensors", ".pth"))
def _load_weights(path: Path, *, device: torch.device, options: BackendOptions, arch: str | None = None) -> Backend:
    """Weights (our safetensors, or any layout :func:`adaptseg.models.load_checkpoint` detects) + a preset."""
    from adaptseg.models import build_model, load_checkpoint, load_preset

    meta: dict[str, str] = {}
    if path.suffix == ".safetensors":
        from adaptseg.models.weights import read_metadata

        try:
            meta = read_metadata(path)
        except Exception as exc:  # safetensors raises its own error types for a broken header
            raise UserError(f"unreadable safetensors file ({exc})", path=path, fix="re-export or re-train") from None
    name = arch or meta.get("preset") or _recipe_preset(path)
    if name is None:
        raise UserError(
            "the weights do not say which model preset they belong to",
            path=path,
            fix="pass the preset with --arch NAME (see `adaptseg models list`)",
        )
    preset = load_preset(name)
    classes = int(meta["num_classes"]) if meta.get("num_classes", "").isdigit() else None
    net = build_model(preset, num_classes=classes)
    load_checkpoint(net, path, format="adaptseg" if path.suffix == ".safetensors" else "auto")
    return TorchBackend.from_model(net, preset.mean, preset.std, device=device, options=options)


def _load_preset_name(name: str, device: torch.device, options: BackendOptions) -> Backend:
    from adaptseg.models import build_model, load_preset

    preset = load_preset(name)
    log.warning("model preset %r has random weights: outputs are meaningless (pass trained weights)", name)
    net = build_model(preset)
    return TorchBackend.from_model(net, preset.mean, preset.std, device=device, options=options)
