"""Inference presets (``infer/*.yaml``): how the engine cuts, batches, averages and augments.

A preset is validated by :class:`InferenceConfig` (unknown keys are errors with the nearest valid key
named). ``extends:`` and ``--set`` overrides work as for recipes (:mod:`adaptseg.config`).

Example (``infer/cityscapes-slide.yaml``)::

    mode: slide
    resize: [2048, 1024]   # keep-ratio target scale (mmseg img_scale): long side <= 2048, short <= 1024
    crop: [1024, 1024]     # (h, w)
    stride: [512, 512]     # (h, w)
    batch_size: 4
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from adaptseg.config import StrictModel, apply_overrides, load_yaml, validate
from adaptseg.resources import INFER

Pair = tuple[int, int]


class BackendOptions(StrictModel):
    """Options of the eager PyTorch backend (exported artifacts fix their own precision)."""

    amp: bool = Field(False, description="autocast: float16 on CUDA, bfloat16 on CPU (see amp_dtype)")
    amp_dtype: Literal["float16", "bfloat16"] | None = Field(None, description="override autocast's dtype")
    channels_last: bool = Field(True, description="channels-last memory format (faster convolutions)")
    compile: bool = Field(False, description="torch.compile the model for the fixed crop shape (pays on GPU)")


class TTAConfig(StrictModel):
    """Test-time augmentation; variants are merged by averaging their probabilities (mmseg aug_test)."""

    flip: bool = False
    scales: list[float] = Field(default_factory=lambda: [1.0], min_length=1)

    @field_validator("scales")
    @classmethod
    def _positive(cls, scales: list[float]) -> list[float]:
        if any(s <= 0 for s in scales):
            raise ValueError("every scale ratio must be positive")
        return scales


class AutoBatch(StrictModel):
    """How ``batch_size: auto`` probes (see :mod:`adaptseg.infer.batching`)."""

    max_size: int = Field(32, ge=1, description="largest batch size tried")
    memory_mib: float = Field(2048, gt=0, description="cap on a batch's float32 crops + outputs, MiB")
    repeats: int = Field(2, ge=1, description="batches timed per size (the least time per crop counts)")


class InferenceConfig(StrictModel):
    """How the sliding-window engine runs (see :class:`adaptseg.infer.engine.SlidingWindow`).

    * ``mode``: ``whole`` (one window = the whole resized image) or ``slide`` (``crop``/``stride``).
    * ``resize``: keep-ratio target scale ``[long, short]`` as mmseg's ``img_scale`` with
      ``keep_ratio=True``; ``null`` keeps the native size. Outputs are always upsampled back to the
      original image size before the argmax. ``upscale: false`` leaves images that already fit the
      scale at their native size (so a Cityscapes preset also suits 256×128 MiniCity images).
    * ``average``: what overlapping windows average. ``logits`` (default) is mmseg's
      ``slide_inference`` — the protocol every published number in shared/datasets.md was measured
      with, so ``eval`` reproduces them; ``probs`` averages per-window softmax outputs, which bounds
      how much one over-confident window can outvote its neighbours.
    * ``weights``: ``uniform`` (mmseg: count-normalised) or ``gaussian`` (σ = ``sigma`` × crop side).
    * ``tta``: flips and scale ratios (of the resized size); always merged by averaging probabilities.
    * ``batch_size``: crops per forward, or ``auto``: the engine times its first batches at 1, 2, 4, …
      (up to ``auto_batch``'s caps) and keeps the fastest per crop (:mod:`adaptseg.infer.batching`).
    """

    mode: Literal["whole", "slide"] = "whole"
    crop: Pair | None = Field(None, description="slide window (h, w)")
    stride: Pair | None = Field(None, description="slide step (h, w); default half the crop")
    resize: Pair | None = Field(None, description="keep-ratio target [long, short]; null = native size")
    upscale: bool = True
    batch_size: int | Literal["auto"] = Field(4, description="crops per forward, or auto")
    auto_batch: AutoBatch = Field(default_factory=AutoBatch)
    weights: Literal["uniform", "gaussian"] = "uniform"
    sigma: float = Field(0.25, gt=0)
    average: Literal["logits", "probs"] = "logits"
    tta: TTAConfig = Field(default_factory=TTAConfig)
    workers: int = Field(2, ge=1, description="reader threads that decode and resize images ahead")
    prefetch: int = Field(4, ge=1, description="images decoded ahead of the model")
    backend: BackendOptions = Field(default_factory=BackendOptions)

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: object) -> object:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f"batch_size is a number of crops >= 1 or 'auto', not {value!r}")

    @model_validator(mode="after")
    def _check_windows(self) -> InferenceConfig:
        if self.mode == "slide" and self.crop is None:
            raise ValueError("mode 'slide' needs crop: [h, w]")
        if self.mode == "whole" and (self.crop is not None or self.stride is not None):
            raise ValueError("crop/stride only apply to mode 'slide' (whole-image mode uses the image size)")
        for name in ("crop", "stride", "resize"):
            value = getattr(self, name)
            if value is not None and min(value) < 1:
                raise ValueError(f"{name} must be positive, got {list(value)}")
        if (
            self.crop is not None
            and self.stride is not None
            and (self.stride[0] > self.crop[0] or self.stride[1] > self.crop[1])
        ):
            raise ValueError(
                f"stride {list(self.stride)} exceeds crop {list(self.crop)}: windows would leave gaps"
            )
        return self

    @property
    def slide_stride(self) -> Pair | None:
        """The stride slide mode uses (half the crop when not given)."""
        if self.crop is None:
            return None
        return self.stride or (max(self.crop[0] // 2, 1), max(self.crop[1] // 2, 1))


def preset_path(preset: str | Path) -> Path:
    """A preset file from a path or a name in the ``infer/`` folder (see :mod:`adaptseg.resources`)."""
    return INFER.find(preset)


def available_presets() -> list[str]:
    """Names of the shipped inference presets."""
    return INFER.names()


def load_preset(
    preset: str | Path | InferenceConfig | None, overrides: Iterable[str] = ()
) -> InferenceConfig:
    """Load and validate an inference preset (path or name); ``None`` gives the defaults."""
    if isinstance(preset, InferenceConfig):
        return validate(
            InferenceConfig, apply_overrides(preset.model_dump(mode="json"), overrides), source="--set"
        )
    if preset is None:
        return validate(InferenceConfig, apply_overrides({}, overrides), source="--set")
    path = preset_path(preset)
    return validate(InferenceConfig, apply_overrides(load_yaml(path), overrides), source=path)


def dataset_preset(name: str) -> Path | None:
    """The preset file of a dataset's evaluation protocol (the one its reader registered with), or ``None``
    (native whole-image inference) when it has none."""
    from adaptseg.data.datasets import eval_preset

    preset = eval_preset(name)
    return preset_path(preset) if preset else None
