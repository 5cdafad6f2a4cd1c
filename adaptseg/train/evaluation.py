"""Evaluation during training: a model over a labelled split → an ``adaptseg.eval.Report``.

:func:`evaluate_segmentor` is the one function the Trainer's evaluation hook calls. Today it runs
whole-image inference (the evaluation pipeline, e.g. a keep-ratio resize, then the model; logits
upsampled bilinearly to the full-resolution label, as mmseg's ``whole_inference``); when the
sliding-window engine (``adaptseg.infer``) lands, this is the single place to route through it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adaptseg.data.labels import IGNORE_INDEX
from adaptseg.data.pipeline import with_normalize
from adaptseg.eval import ConfusionMatrix, Report


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Put ``model`` in eval mode for the block and restore each submodule's mode afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


@torch.no_grad()
def evaluate_segmentor(
    model: nn.Module,
    dataset,
    *,
    pipeline: Sequence[Mapping[str, Any]] = (),
    mean: Sequence[float],
    std: Sequence[float],
    protocol: int = 19,
    device: torch.device | str = "cpu",
    max_images: int | None = None,
    autocast: contextlib.AbstractContextManager | None = None,
    channels_last: bool = False,
) -> Report:
    """Score ``model`` on a labelled reader; returns the Report of the dataset-level confusion matrix.

    Each image goes through ``pipeline`` (geometric steps without randomness, e.g. ``resize``) and
    normalisation, the logits are resized to the label's full resolution and argmax'ed.
    """
    transform = with_normalize(pipeline, mean, std)
    rng = np.random.default_rng(0)  # the evaluation pipeline should not draw; fixed in case it does
    cm = ConfusionMatrix(getattr(model, "num_classes", 19), ignore_index=IGNORE_INDEX)
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    with eval_mode(model):
        for i in range(n):
            sample = dataset[i]
            if sample.label is None:
                raise ValueError(f"{dataset!r} sample {sample.id!r} has no label to evaluate against")
            image, _ = transform(sample.image, None, rng)
            x = torch.from_numpy(image).unsqueeze(0).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast or contextlib.nullcontext():
                logits = model(x)
            logits = F.interpolate(logits.float(), size=sample.label.shape, mode="bilinear", align_corners=False)
            cm.update(logits.argmax(1)[0].cpu().numpy(), sample.label)
    return Report.from_confusion(cm, protocol=protocol, n_images=n)
