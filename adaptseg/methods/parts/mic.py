"""Masked image consistency (MIC, Hoyer et al., CVPR 2023) as a switch for mean-teacher methods.

The student predicts on a target image with random square blocks masked out and is supervised by the EMA
teacher's pseudo-label of the *un-masked* image, with the teacher's quality weight. Rules, from the
released ``lhoyer/MIC`` (``MaskingConsistencyModule`` with ``mask_mode='separatetrgaug'``,
``BlockMaskGenerator``, and the configs ``mask_generator=dict(type='block', mask_ratio=0.7,
mask_block_size=64)``, ``mask_lambda=1``, ``mask_alpha='same'``, ``mask_pseudo_threshold='same'``):

* **mask** (:func:`block_mask`): a grid of ``round(H/b) × round(W/b)`` cells per image, each cell *kept*
  when ``U > mask_ratio`` (so 70 % of the cells are masked in expectation), upsampled to H×W by nearest
  neighbour; the masked image is ``x · mask`` — masked pixels are 0 in the normalised space, i.e. the
  dataset's mean colour.
* **augmentation** (``'aug'`` in the mode): before masking, DACS's strong transform of the whole batch —
  one jitter switch (``U > 0.2``) and one blur switch (``U > 0.5``) for the batch, jitter factors per
  image, one σ (:func:`~adaptseg.methods.parts.augment.strong_augment`).
* **targets** (``'same'``): the host method's own teacher pseudo-label of the clean target image and its
  own pixel weight (DACS quality weight; with ATP's ``plcrop`` rows at 0 where the host has them) — MIC
  builds no teacher of its own.
* **loss**: the host's decode-head CE on the masked image — averaged over all pixels (mmseg), logits
  upsampled to the label size — times ``loss_weight`` (``mask_lambda = 1``).

Randomness: :meth:`MaskedConsistency.loss` draws the augmentation switches, jitter factors, σ and then
the mask cells from the generator it is given, in that order (the release's order); methods pass
``ctx.generator(it, "mic", device="cpu")`` so a resumed run replays the draws.

A method offers MIC by adding :class:`MICOption` to its options schema and :class:`MICMixin` to its bases,
and passing :meth:`MICMixin.with_mic_loss` its losses and the target it pseudo-labelled (DDB ``ddb_st``, ATP ``atp_teach``/``atp_propagate``); the
loss is one more named term that the Trainer sums, so AMP, channels-last, compile and DDP apply as to
the method's other terms. The recipe switch is per stage: ``options: {mic: {}}`` (released defaults) or
``options: {mic: {block_size: 16}}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from adaptseg.config import StrictModel
from adaptseg.methods.parts.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    sample_strong_aug_switches,
    strong_augment,
)
from adaptseg.methods.parts.losses import cross_entropy
from adaptseg.methods.parts.modes import kept_running_statistics
from adaptseg.methods.parts.precision import full_precision

MIC_MASK_RATIO = 0.7
MIC_BLOCK_SIZE = 64
MIC_LOSS_WEIGHT = 1.0


class MICOptions(StrictModel):
    """The MIC switch's settings; the defaults are the released ones (module docstring).

    ``block_size`` is in pixels of the student's input crop (64 at the release's 512² and 1024² crops;
    MiniCity's 128×256 crops call for about 16 to keep a similar grid).
    """

    mask_ratio: float = Field(MIC_MASK_RATIO, ge=0.0, lt=1.0)
    block_size: int = Field(MIC_BLOCK_SIZE, ge=1)
    loss_weight: float = Field(MIC_LOSS_WEIGHT, ge=0.0)
    augment: bool = True
    #: ``update`` (the release): the masked pass is an ordinary train-mode forward, so BatchNorm's running
    #: statistics also average over masked images. ``keep``: it normalises with its batch statistics but
    #: leaves the running ones to the method's clean passes — an addition, not in the release: on MiniCity
    #: ATP's T gain is the re-estimation of those statistics and the released pass undid it
    #: (bench/RESULTS.md, "MIC and RCS on MiniCity").
    running_stats: Literal["update", "keep"] = "update"


class MICOption(StrictModel):
    """Mixin for a method's options schema: ``mic: {...}`` turns masked image consistency on (off by default)."""

    mic: MICOptions | None = None


def block_mask(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    *,
    mask_ratio: float = MIC_MASK_RATIO,
    block_size: int = MIC_BLOCK_SIZE,
    device: torch.device | str | None = None,
) -> Tensor:
    """N×1×H×W float mask of kept (1) and masked (0) pixels: square cells, each kept when ``U > mask_ratio``.

    The grid is ``max(1, round(H/b)) × max(1, round(W/b))`` (the release rounds; a crop smaller than half a
    block keeps one cell); drawn on the generator's device (the CPU), then moved to ``device``.
    """
    grid = (max(1, round(height / block_size)), max(1, round(width / block_size)))
    cells = torch.rand((batch, 1, *grid), generator=generator, device=generator.device)
    kept = (cells > mask_ratio).float().to(device)
    return F.interpolate(kept, size=(height, width), mode="nearest")


@full_precision
def masked_view(
    images: Tensor,
    generator: torch.Generator,
    options: MICOptions,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """The student's MIC input: the strong-augmented (when ``options.augment``) images, block-masked."""
    if options.augment:
        images = strong_augment(images, generator, sample_strong_aug_switches(generator), mean=mean, std=std)
    n, _, height, width = images.shape
    mask = block_mask(
        n,
        height,
        width,
        generator,
        mask_ratio=options.mask_ratio,
        block_size=options.block_size,
        device=images.device,
    )
    return images * mask.to(images.dtype)


@dataclass
class PseudoLabelledTarget:
    """Clean target crops with the teacher's pseudo-labels of them and the quality weight of those labels.

    ``images``: normalised N×3×H×W, un-masked and un-augmented (what the teacher saw); ``labels``: the
    teacher's argmax (N×H×W); ``weight``: the host method's pixel weight (a scalar or N×H×W).
    """

    images: Tensor
    labels: Tensor
    weight: Tensor | float


class MaskedConsistency:
    """The MIC term of a mean-teacher step (module docstring); built from a method's ``options.mic``."""

    def __init__(self, options: MICOptions, *, mean: Sequence[float], std: Sequence[float]):
        self.options = options
        self.mean = tuple(mean)
        self.std = tuple(std)

    def loss(
        self, student: Callable[[Tensor], Tensor], target: PseudoLabelledTarget, generator: torch.Generator
    ) -> Tensor:
        """``loss_weight · CE(student(masked(x_t)), ŷ_t)`` with the teacher's pixel weight, over all pixels.

        Where ``target.weight`` is 0 a pixel adds nothing (its share of the mean stays in the denominator).
        """
        masked = masked_view(target.images, generator, self.options, mean=self.mean, std=self.std)
        ce = cross_entropy(student(masked), target.labels, normalize="all_pixels", pixel_weight=target.weight)
        return self.options.loss_weight * ce


def masked_consistency(options: MICOptions | None, preset: Any) -> MaskedConsistency | None:
    """The MIC term a method's ``options.mic`` asks for, normalising with the model preset's mean/std; None when off."""
    if options is None:
        return None
    return MaskedConsistency(options, mean=preset.mean, std=preset.std)


class MICMixin:
    """Mixin for a :class:`~adaptseg.methods.parts.mean_teacher.MeanTeacherMethod` whose options include
    :class:`MICOption`: put it first in the bases; the step calls :meth:`with_mic_loss`."""

    options: MICOption
    ctx: Any
    student: Callable[[Tensor], Tensor]

    def setup(self, models: Mapping[str, Any]) -> None:
        super().setup(models)  # type: ignore[misc]
        self.mic = masked_consistency(self.options.mic, self.ctx.preset)

    def with_mic_loss(
        self, losses: dict[str, Tensor], target: PseudoLabelledTarget, it: int
    ) -> dict[str, Tensor]:
        """``losses`` plus ``"mic"`` when the switch is on, drawn from ``ctx.generator(it, "mic")``."""
        if self.mic is not None:
            keep = self.mic.options.running_stats == "keep"
            with kept_running_statistics(self.student.module) if keep else nullcontext():
                losses["mic"] = self.mic.loss(
                    self.student, target, self.ctx.generator(it, "mic", device="cpu")
                )
        return losses


__all__ = [
    "MIC_BLOCK_SIZE",
    "MIC_LOSS_WEIGHT",
    "MIC_MASK_RATIO",
    "MICMixin",
    "MICOption",
    "MICOptions",
    "MaskedConsistency",
    "PseudoLabelledTarget",
    "block_mask",
    "masked_consistency",
    "masked_view",
]
