"""Evaluation during training: the model being trained over a labelled split → an ``adaptseg.eval.Report``.

:func:`evaluate_segmentor` is the one function the Trainer's evaluation hook calls. It wraps the model in
the deploy contract (normalisation + upsampling, :class:`adaptseg.models.DeployModule`) and runs it through
the sliding-window engine (:func:`adaptseg.infer.evaluate_model`) with an inference preset — by default
the dataset's evaluation protocol (Cityscapes: whole image at 1024×512, logits upsampled to the full
resolution ground truth; shared/datasets.md §8) — so training-time numbers are the numbers ``adaptseg
eval`` reports. The model's train/eval modes and memory format are restored afterwards.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from rich.console import Console
from torch import Tensor, nn

from adaptseg.eval import Report
from adaptseg.methods.parts.entropy import apply_class_prior, class_prior_weights
from adaptseg.methods.parts.losses import resize_logits


class ClassPriorSegmentor(nn.Module):
    """The hidden test-time class prior around a segmentor (atp.md §5): softmax at input size × ``w_c``.

    ``forward(x)`` returns the re-weighted probabilities at the input resolution (not logits); anything
    that upsamples and takes the argmax (this evaluation, the inference engine) then scores exactly what
    ATP's release (from SePiCo/DANNet) does. It shares the wrapped model's parameters and is only ever
    used for evaluation (recipe ``eval.test_time_prior``).
    """

    def __init__(self, model: nn.Module, weights: Tensor | None = None):
        super().__init__()
        self.model = model
        self.num_classes = getattr(model, "num_classes", 19)
        self.register_buffer(
            "weights", class_prior_weights() if weights is None else weights, persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        logits = resize_logits(self.model(x).float(), tuple(x.shape[-2:]))
        return apply_class_prior(torch.softmax(logits, dim=1), self.weights)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore each submodule's mode afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


def first_images(dataset, n: int | None):
    """A shallow copy of a reader that holds only its first ``n`` entries (all when ``n`` is None)."""
    if n is None or n >= len(dataset):
        return dataset
    subset = copy.copy(dataset)
    subset.entries = list(dataset.entries[:n])
    return subset


def evaluate_segmentor(
    model: nn.Module,
    dataset,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    preset: str | Path | None = None,
    protocol: int = 19,
    device: torch.device | str = "cpu",
    max_images: int | None = None,
    amp: str = "off",
    channels_last: bool = False,
    console: Console | None = None,
    test_time_prior: bool = False,
) -> Report:
    """Score ``model`` (normalised input → logits at its output stride) on a labelled dataset reader.

    Args:
        preset: an inference preset (``infer/<name>.yaml`` name or path); ``None`` = the dataset's protocol.
        amp: ``"off"``, ``"bf16"`` or ``"fp16"`` (the training switch; inference autocasts the same way).
        channels_last: the memory format the model is already in (kept, so training is unaffected).
        test_time_prior: score through :class:`ClassPriorSegmentor` (atp.md §5; opt-in, never a default).
    """
    from adaptseg.infer import TorchBackend, evaluate_model, load_preset
    from adaptseg.infer.config import BackendOptions, dataset_preset

    options = BackendOptions(
        amp=amp != "off",
        amp_dtype={"bf16": "bfloat16", "fp16": "float16"}.get(amp),
        channels_last=channels_last,
    )
    config = load_preset(preset if preset is not None else dataset_preset(getattr(dataset, "name", "")))
    subset = first_images(dataset, max_images)
    with eval_mode(model):
        scored = ClassPriorSegmentor(model).to(device) if test_time_prior else model
        backend = TorchBackend.from_model(scored, mean, std, device=device, options=options)
        cm, n = evaluate_model(backend, subset, config, console=console)
    return Report.from_confusion(cm, protocol=protocol, n_images=n)
