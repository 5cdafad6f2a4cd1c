"""Artifact runtimes: what runs an exported artifact, registered by format from each runtime's own module.

A runtime opens a checked :class:`~adaptseg.artifact.folder.Artifact` on a device and returns a callable
that honours the deploy contract (float32 N×3×h×w crops of 0–255 RGB in, N×C×h×w logits out) and
carries ``crop``, ``num_classes``, ``device`` and ``mean`` — the inference engine's backend protocol.
Both sides use this one registry: :func:`adaptseg.infer.backends.load_backend` runs artifacts through
it, and :mod:`adaptseg.export.verify` measures parity through the very same code.

Adding a format's runtime is one module with one :func:`register_runtime` and its name in
:data:`RUNTIMES`' module list. Third-party runtimes (onnxruntime, tensorrt) are imported when an artifact is
opened, so every format registers on any machine; a missing one is a one-line "not installed" error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adaptseg._registry import Registry
from adaptseg.artifact.folder import Artifact, open_artifact
from adaptseg.artifact.meta import SIDECAR
from adaptseg.errors import UserError

#: ``opener(artifact, device)`` → a backend running the artifact
Opener = Callable[[Artifact, "torch.device | None"], Any]


@dataclass(frozen=True)
class Runtime:
    format: str  # what model.json's "format" says
    model_file: str  # the model file's name inside an artifact folder
    suffixes: tuple[str, ...]  # model files that load without naming their folder
    open: Opener


#: runtimes by format, from modules that register one when imported (adaptseg's own: never skipped)
RUNTIMES: Registry[Runtime] = Registry(
    "artifact runtime",
    ("adaptseg.artifact.torchscript", "adaptseg.artifact.onnx", "adaptseg.artifact.tensorrt"),
)


def register_runtime(
    fmt: str, *, model_file: str, suffixes: Sequence[str] = ()
) -> Callable[[Opener], Opener]:
    """Register the decorated ``opener(artifact, device)`` as the runtime of artifacts of format ``fmt``."""

    def decorator(opener: Opener) -> Opener:
        RUNTIMES.add(fmt, Runtime(fmt, model_file, tuple(s.lower() for s in suffixes), opener))
        return opener

    return decorator


def runtimes() -> dict[str, Runtime]:
    """Every registered runtime by format."""
    return RUNTIMES.entries()


def runtime_for(fmt: str, *, sidecar: Path | None = None) -> Runtime:
    """The runtime of format ``fmt`` (a one-line error naming the known ones otherwise)."""
    known = runtimes()
    if fmt not in known:
        raise UserError(
            f"{SIDECAR} names format {fmt!r}, which no runtime here runs (known: {', '.join(sorted(known))})",
            path=sidecar,
            fix="re-export the model with `adaptseg export --format` one of those",
        )
    return known[fmt]


def runtime_for_suffix(suffix: str) -> Runtime | None:
    """The runtime whose model files end in ``suffix`` (``.onnx``, ``.pt``, ``.engine`` …), if any."""
    return next((r for r in runtimes().values() if suffix.lower() in r.suffixes), None)


def open_runtime(path: str | Path, device: str | torch.device | None = None) -> Any:
    """Open the artifact at ``path`` (its folder or model file), checked, on ``device`` with its runtime."""
    artifact = open_artifact(path)
    return runtime_for(artifact.meta.format, sidecar=artifact.sidecar_path).open(artifact, device)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` → CUDA when available, else CPU; anything else as given (checked)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device} asked for but CUDA is not available", fix="use --device cpu")
    return device


def missing_dependency(exc: ModuleNotFoundError, package: str) -> bool:
    """Whether ``exc`` says the third-party ``package`` itself is absent (not a module it or we import)."""
    return exc.name is not None and exc.name.split(".")[0] == package
