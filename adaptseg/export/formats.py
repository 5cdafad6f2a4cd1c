"""Export formats by name: each format's module registers how it writes an artifact's model file.

::

    @register_format("onnx")
    def write_onnx_artifact(job: WriteJob) -> Written: ...

A format's name is also the name of the artifact runtime that runs its files
(:mod:`adaptseg.artifact.runtime`), which gives the model file's name and runs the parity check, so
adding a format is its writer module (+ its name in :data:`FORMATS`' module list) and its runtime module.
``adaptseg export --format`` accepts exactly the registered names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptseg._registry import Registry
from adaptseg.artifact.meta import BatchProfile, Precision
from adaptseg.errors import UserError

if TYPE_CHECKING:
    from torch import Tensor

    from adaptseg.export.profile import ExportProfile
    from adaptseg.export.source import EagerSource


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
    preflight: (
        Callable[[], None] | None
    )  # fails fast (before loading anything) when the format cannot run here


#: export formats by name, from modules that register one when imported (adaptseg's own: never skipped)
FORMATS: Registry[ExportFormat] = Registry(
    "export format", ("adaptseg.export.torchscript", "adaptseg.export.onnx", "adaptseg.export.tensorrt")
)


def register_format(
    name: str,
    *,
    precisions: Sequence[str] = ("fp32", "fp16"),
    parity_device: str = "cpu",
    preflight: Callable[[], None] | None = None,
) -> Callable[[Writer], Writer]:
    """Register the decorated writer as export format ``name`` (an artifact runtime of that name runs it)."""

    def decorator(write: Writer) -> Writer:
        FORMATS.add(name, ExportFormat(name, write, tuple(precisions), parity_device, preflight))
        return write

    return decorator


def export_formats() -> dict[str, ExportFormat]:
    """Every registered export format by name."""
    return FORMATS.entries()


def get_format(name: str) -> ExportFormat:
    """The export format called ``name`` (a one-line error naming the registered ones otherwise)."""
    formats = export_formats()
    if name not in formats:
        raise UserError(f"unknown export format '{name}'", fix=f"pass --format one of: {', '.join(formats)}")
    return formats[name]
