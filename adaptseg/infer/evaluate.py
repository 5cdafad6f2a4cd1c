"""Score a model on a labelled dataset split with the sliding-window engine (``adaptseg eval --model``).

Protocol (shared/datasets.md §8): the engine infers at the preset's scale (e.g. Cityscapes whole-image
at 1024×512), upsamples the output bilinearly to the image's original size, and the argmax is compared
with the full-resolution ground truth; one confusion matrix is summed over the whole split. A ground
truth whose size differs from its image's is an error naming the label file (never rescaled silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from adaptseg.data.labels import NUM_CLASSES
from adaptseg.errors import UserError
from adaptseg.eval.confusion import ConfusionMatrix
from adaptseg.eval.predictions import ground_truth_size_error
from adaptseg.infer.backends import load_backend
from adaptseg.infer.config import InferenceConfig, dataset_preset, load_preset
from adaptseg.infer.engine import Prediction, SlidingWindow
from adaptseg.infer.ranks import DistInfo, shard
from adaptseg.infer.run import run_engine
from adaptseg.infer.sources import SideLoads, dataset_items


def evaluate_model(
    model: str | Path | Any,
    dataset: Any,
    preset: str | Path | InferenceConfig | None = None,
    *,
    device: str | None = None,
    arch: str | None = None,
    console: Console | None = None,
    dist: DistInfo | None = None,
) -> tuple[ConfusionMatrix, int]:
    """Run ``model`` over every image of ``dataset`` and count a confusion matrix at full GT resolution.

    Args:
        model: what :func:`~adaptseg.infer.backends.load_backend` resolves (run folder, weights,
            preset name, artifact), or an in-process backend/callable honouring the deploy contract.
        dataset: a reader from :func:`adaptseg.data.build_dataset` (``entries``, ``read_image``,
            ``read_label``, ``name``) on a labelled split.
        preset: an inference preset (path, name or config); ``None`` uses the dataset's protocol
            preset (:data:`~adaptseg.infer.config.DATASET_PRESETS`), or native whole-image inference.

        dist: under ``torchrun``, this rank scores its shard (:func:`~adaptseg.infer.ranks.shard`) and
            the matrices are summed over the ranks (every rank must call this).

    Returns:
        The split's confusion matrix and the number of images scored.
    """
    if len(dataset) == 0:
        raise UserError("the dataset split is empty; nothing to evaluate")
    config = load_preset(preset if preset is not None else dataset_preset(getattr(dataset, "name", "")))
    backend = (
        load_backend(model, device, config.backend, arch=arch) if isinstance(model, (str, Path)) else model
    )
    engine = SlidingWindow(backend, config)
    cm = ConfusionMatrix(max(int(getattr(backend, "num_classes", NUM_CLASSES)), NUM_CLASSES))
    labels = SideLoads()
    mine = shard(range(len(dataset)), dist or DistInfo())

    def score(prediction: Prediction) -> None:
        target = labels.pop(prediction.index)
        index = mine[prediction.index]
        if target is None:
            raise UserError(
                f"image {prediction.id!r} has no ground truth to evaluate against",
                path=dataset.entries[index].image_path,
                fix="evaluate on a labelled split (e.g. val)",
            )
        if tuple(prediction.shape[-2:]) != target.shape:  # predictions come at the image's own size
            raise ground_truth_size_error(dataset, index, target.shape)
        cm.update(prediction.label().cpu(), target)
        prediction.release()

    run_engine(
        engine,
        dataset_items(dataset, mine, labels=labels),
        len(mine),
        score,
        label="evaluating",
        console=console,
        skip_unreadable=False,
    )
    if dist is not None and dist.enabled:
        cm.all_reduce()
    return cm, len(dataset)
