"""Images of a dataset in order, through a transform, in batches: for passes over data that are not training.

DDB's prototype estimation runs its training pipeline (random crop, flip) over the target train set in
dataset order, several passes; AdaBN re-estimates BatchNorm statistics on whole, only normalised images.
Both are :func:`ordered_batches` with another transform and per-image generator; a stage reaches it
through :meth:`adaptseg.train.context.StageContext.ordered_batches`, which opens a recipe stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: ``(pass, index) → generator`` for the transform's random draws of image ``index`` in pass ``pass``
SampleRng = Callable[[int, int], np.random.Generator]


def _fixed_rng(pass_index: int, index: int) -> np.random.Generator:
    return np.random.default_rng(0)


def ordered_batches(
    dataset: Any,
    transform: Callable[..., tuple[np.ndarray, Any]],
    *,
    batch_size: int,
    passes: int = 1,
    limit: int | None = None,
    sample_rng: SampleRng = _fixed_rng,
    device: str | torch.device = "cpu",
) -> Iterator[Tensor]:
    """Yield N×3×H×W tensors: ``passes`` unshuffled passes over the first ``limit`` images of ``dataset``.

    ``dataset`` is a reader (``len``, ``read_image``); ``transform(image, None, rng)`` returns the model
    input (normalised C×H×W) — a :func:`~adaptseg.data.pipeline.with_normalize` pipeline. Images of one
    batch must come out the same size (a fixed crop, or a dataset of one image size).
    """
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for pass_index in range(passes):
        for start in range(0, count, batch_size):
            images = [
                transform(dataset.read_image(i), None, sample_rng(pass_index, i))[0]
                for i in range(start, min(start + batch_size, count))
            ]
            yield torch.from_numpy(np.stack(images)).to(device)
