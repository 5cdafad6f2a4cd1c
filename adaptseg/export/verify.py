"""Parity: an exported artifact against eager fp32 PyTorch on real crops, or no artifact at all.

Export runs the artifact *through the runtime the engine will use* (:func:`adaptseg.artifact.runtime.
open_runtime`, so the check covers loading, providers and bindings too) and compares with the eager deploy module: the largest |Δlogit| and the
fraction of pixels whose argmax class agrees. Below the precision's bar
(:data:`~adaptseg.export.profile.DEFAULT_BARS`; the logit bound scales with the logits' magnitude, see
:class:`~adaptseg.export.profile.ParityBar`) the artifact folder is deleted and export fails.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from adaptseg.artifact.meta import ParityBar, ParityFigures
from adaptseg.artifact.runtime import open_runtime
from adaptseg.errors import UserError

Predict = Callable[[Tensor], Tensor]


class ParityError(UserError):
    """The artifact's outputs differ from eager PyTorch by more than the bar allows."""


@dataclass(frozen=True)
class Measured:
    max_abs_diff: float
    agreement: float
    pixels: int
    logit_scale: float  # largest |logit| of the reference
    miou: float = 0.0  # the candidate's class map against the reference's (classes it predicts enough)


#: a class enters the class-map mIoU when the reference predicts it on at least this share of the parity
#: pixels; below it, a few boundary pixels decide its IoU. On the demo's trained model (64×128 crops)
#: the classes under 0.1 % had 3-31 pixels and IoUs of 0.33-0.69 under int8, which pulled the mean over
#: all classes to 0.82-0.87 while val mIoU moved by 0.02 points; such pixels still count in the agreement
MIN_CLASS_SHARE = 1e-3


def class_map_miou(intersection: Tensor, union: Tensor, support: Tensor) -> float:
    """Mean IoU over the classes the reference predicts on ≥ :data:`MIN_CLASS_SHARE` of its pixels.

    ``support`` is each class's pixel count in the reference's class map. A class the candidate wipes
    out scores 0 there; 1.0 when no class has that support (an empty map).
    """
    judged = (support > 0) & (support >= MIN_CLASS_SHARE * support.sum())
    return float((intersection[judged].double() / union[judged].double()).mean()) if judged.any() else 1.0


@torch.inference_mode()
def measure_parity(
    reference: Predict,
    candidate: Predict,
    crops: Tensor,
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> Measured:
    """Max |Δlogit|, argmax agreement and pixel count of ``candidate`` against ``reference`` over ``crops``.

    Both get the same float32 0–255 batches of ``batch_size`` crops (the last may be smaller, which
    also exercises the dynamic batch).
    """
    device = torch.device(device)
    max_abs, agree, pixels, scale = 0.0, 0, 0, 0.0
    intersection = union = support = None
    for start in range(0, crops.shape[0], batch_size):
        x = crops[start : start + batch_size].to(device)
        ref = reference(x).float()
        out = candidate(x).to(ref.device).float()
        if out.shape != ref.shape:
            raise ParityError(
                f"the artifact returned {tuple(out.shape)} where eager PyTorch gives {tuple(ref.shape)}"
            )
        scale = max(scale, float(ref.abs().max()))
        if not torch.isfinite(out).all():
            return Measured(float("inf"), 0.0, pixels + ref[:, 0].numel(), scale)
        max_abs = max(max_abs, float((out - ref).abs().max()))
        got, want = out.argmax(1).flatten().cpu(), ref.argmax(1).flatten().cpu()
        classes = ref.shape[1]
        both = torch.bincount(want[got == want], minlength=classes)
        counts = torch.bincount(want, minlength=classes)
        either = counts + torch.bincount(got, minlength=classes) - both
        intersection = both if intersection is None else intersection + both
        union = either if union is None else union + either
        support = counts if support is None else support + counts
        agree += int(both.sum())
        pixels += ref[:, 0].numel()
    miou = class_map_miou(intersection, union, support) if intersection is not None else 0.0
    return Measured(max_abs, agree / max(pixels, 1), pixels, scale, miou)


def passes(measured: Measured, bar: ParityBar) -> bool:
    """Whether measured figures reach ``bar``."""
    bound = bar.logit_bound(measured.logit_scale)
    return (
        measured.agreement >= bar.min_agreement
        and (bound is None or measured.max_abs_diff <= bound)
        and (bar.min_miou is None or measured.miou >= bar.min_miou)
    )


def verify_artifact(
    folder: Path,
    reference: nn.Module,
    crops: Tensor,
    bar: ParityBar,
    *,
    images: int,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> ParityFigures:
    """Load the artifact in ``folder`` through its runtime and compare it with ``reference`` (eager fp32).

    On failure the whole artifact folder is deleted and :class:`ParityError` says by how much it
    missed; on success the figures for ``model.json`` are returned.
    """
    device = torch.device(device)
    try:
        backend = open_runtime(folder, device)
        reference = reference.eval().to(device)
        measured = measure_parity(reference, backend, crops, batch_size=batch_size, device=device)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if not passes(measured, bar):
        shutil.rmtree(folder, ignore_errors=True)
        bound = bar.logit_bound(measured.logit_scale)
        limit = f", max |Δlogit| <= {bound:.3g}" if bound is not None else ""
        limit += f", mIoU >= {bar.min_miou:.2%}" if bar.min_miou is not None else ""
        raise ParityError(
            f"the exported model differs from eager PyTorch: argmax agreement {measured.agreement:.4%}, "
            f"mIoU {measured.miou:.2%}, max |Δlogit| {measured.max_abs_diff:.3g} of logits up to "
            f"{measured.logit_scale:.3g} (bar: agreement >= {bar.min_agreement:.2%}{limit}); artifact deleted",
            path=folder,
            fix="check the model's export capabilities, or try another exporter/precision in the export profile",
        )
    return ParityFigures(
        images=images,
        crops=int(crops.shape[0]),
        pixels=measured.pixels,
        max_abs_diff=measured.max_abs_diff,
        logit_scale=measured.logit_scale,
        agreement=measured.agreement,
        miou=measured.miou,
        bar=bar,
        device=str(device),
    )
