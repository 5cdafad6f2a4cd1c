"""Export formats by name: each format's module registers how it writes an artifact's model file.

::

    @register_format("onnx")
    def write_onnx_artifact(job: WriteJob) -> Written: ...

A format's name is also the name of the artifact runtime that runs its files
(:mod:`adaptseg.artifact.runtime`), which gives the model file's name and runs the parity check, so
adding a format is its writer module (+ a line in :data:`FORMAT_MODULES`) and its runtime module.
``adaptseg export --format`` accepts exactly the registered names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptseg.artifact.meta import BatchProfile, Precision
from adaptseg.errors import UserError

if TYPE_CHECKING:
    from torch import Tensor

    from adaptseg.export.profile import ExportProfile
    from adaptseg.export.source import EagerSource

#: modules that register an export format when imported (adaptseg's own: never skipped when missing)
FORMAT_MODULES: tuple[str, ...] = ("adaptseg.export.torchscript", "adaptseg.export.onnx", "adaptseg.export.tensorrt")


@dataclass(frozen=True)
class WriteJob:
    """What a writer gets: the eager model, the profile and precision, and where the file goes."""

    source: EagerSource
    profile: ExportProfile
    precision: Precision
    example: Tensor  # one float32 N×3×h×w crop batch (N >= 2) at the artifact's crop
    model_path: Path
    images: list[Any]  # calibration sources (int8)
    crop: tuple[int, int]


@dataclass(frozen=True)
class Written:
    """The sidecar fields that depend on how the file was written."""

    exporter: str
    note: str
    opset: int | None = None
    batch: BatchProfile | None = None
    versions: dict[str, str] = field(default_factory=dict)


Writer = Callable[[WriteJob], Written]


@dataclass(frozen=True)
class ExportFormat:
    name: str
    write: Writer
    precisions: tuple[str, ...]
    parity_device: str  # where the parity check runs the artifact
    preflight: Callable[[], None] | None  # fails fast (before loading anything) when the format cannot run here


_FORMATS: dict[str, ExportFormat] = {}
_modules_loaded = False


def register_format(
    name: str,
    *,
    precisions: Sequence[str] = ("fp32", "fp16"),
    parity_device: str = "cpu",
    preflight: Callable[[], None] | None = None,
) -> Callable[[Writer], Writer]:
    """Register the decorated writer as export format ``name`` (an artifact runtime of that name runs it)."""

    def decorator(write: Writer) -> Writer:
        if name in _FORMATS:
            raise ValueError(f"export format {name!r} registered twice")
        _FORMATS[name] = ExportFormat(name, write, tuple(precisions), parity_device, preflight)
        return write

    return decorator


def export_formats() -> dict[str, ExportFormat]:
    """Every registered export format by name (importing :data:`FORMAT_MODULES` on first use)."""
    global _modules_loaded
    if not _modules_loaded:
        for module in FORMAT_MODULES:
            importlib.import_module(module)
        _modules_loaded = True
    return dict(_FORMATS)


def get_format(name: str) -> ExportFormat:
    """The export format called ``name`` (a one-line error naming the registered ones otherwise)."""
    formats = export_formats()
    if name not in formats:
        raise UserError(f"unknown export format '{name}'", fix=f"pass --format one of: {', '.join(formats)}")
    return formats[name]
