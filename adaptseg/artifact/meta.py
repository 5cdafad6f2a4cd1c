"""The ``model.json`` sidecar of an exported artifact: what a runtime needs besides the graph.

The schema lives here, below both :mod:`adaptseg.infer` (which reads artifacts) and
:mod:`adaptseg.export` (which writes them), together with the value types it records: the precision,
the TensorRT batch profile and the parity bar an artifact was held to.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from adaptseg.config import StrictModel

Precision = Literal["fp32", "fp16", "int8"]

SIDECAR = "model.json"
SCHEMA_VERSION = 1
#: graph input/output names of ONNX and TensorRT artifacts
INPUT_NAME, OUTPUT_NAME = "image", "logits"


class ParityBar(StrictModel):
    """The least an artifact must reach against eager fp32 PyTorch on the parity crops.

    The logit bound is ``max(max_abs_diff, max_rel_diff × logit scale)``, the scale being the largest
    |logit| eager PyTorch gives on the parity crops: a trained model's logits (tens) are held to the
    absolute bound, while a model whose logits are huge (a randomly initialised ResNet-101 reaches
    1e5) is held to what float32 arithmetic in another order can reproduce.
    """

    min_agreement: float = Field(ge=0.0, le=1.0, description="fraction of pixels with the same argmax")
    max_abs_diff: float | None = Field(None, gt=0.0, description="largest |Δlogit| allowed; null = unbounded")
    max_rel_diff: float = Field(0.0, ge=0.0, description="|Δlogit| allowed per unit of logit scale")
    min_miou: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="least mIoU of the artifact's class map against eager's; null = unchecked",
    )

    def logit_bound(self, scale: float) -> float | None:
        """The largest |Δlogit| allowed when eager logits reach ``scale`` in magnitude."""
        if self.max_abs_diff is None:
            return None
        return max(self.max_abs_diff, self.max_rel_diff * scale)


class BatchProfile(StrictModel):
    """A TensorRT optimisation profile over the batch dimension (the crop is fixed)."""

    min: int = Field(1, ge=1)
    opt: int = Field(4, ge=1)
    max: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> BatchProfile:
        if not self.min <= self.opt <= self.max:
            raise ValueError(
                f"batch sizes must satisfy min <= opt <= max, got {self.min}, {self.opt}, {self.max}"
            )
        return self


class ParityFigures(StrictModel):
    """What export measured: the artifact against eager fp32 PyTorch on real crops."""

    images: int
    crops: int
    pixels: int
    max_abs_diff: float
    logit_scale: float = Field(description="largest |logit| of eager PyTorch on the crops")
    agreement: float = Field(description="fraction of pixels whose argmax class matches eager")
    miou: float | None = Field(None, description="mIoU of the artifact's class map, eager's as ground truth")
    bar: ParityBar
    device: str


class SourceInfo(StrictModel):
    model: str = Field(description="what was exported, as given to `adaptseg export`")
    preset: str
    weights_sha256: str = Field(description="sha256 of the state dict (names, dtypes, shapes, bytes)")


class ArtifactMeta(StrictModel):
    """The ``model.json`` sidecar of an exported artifact."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str
    format: str = Field(description="the runtime that runs the file (adaptseg.artifact.runtime registry)")
    file: str
    file_bytes: int = Field(ge=0)
    file_sha256: str
    precision: Precision
    exporter: str = Field(description="how the file was produced, e.g. 'torch.jit.script', 'onnx-legacy'")
    exporter_note: str = ""
    opset: int | None = None
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    crop: tuple[int, int] = Field(description="fixed input (h, w); batch is dynamic within `batch`")
    stride: tuple[int, int] = Field(description="sliding stride meant for this crop")
    batch: BatchProfile | None = Field(None, description="TensorRT optimisation profile; null = any batch")
    output_stride: int
    num_classes: int
    classes: list[str]
    palette: list[tuple[int, int, int]]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: SourceInfo
    parity: ParityFigures | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    created: str = ""
