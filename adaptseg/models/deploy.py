"""The deploy module: the one contract every export and backend runs (DESIGN.md, "Contracts").

Input: float RGB in 0–255, N×3×H×W. Output: N×C×H×W logits at the input size. Between them: normalise
with the preset's mean/std, run the segmentor, bilinearly upsample (align_corners=False). Batch is
dynamic; an exported artifact fixes H×W to its crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DeployModule(nn.Module):
    """Wrap a segmentor with normalisation and upsampling so that crops go in and crop-sized logits come out.

    ``mean``/``std`` are per RGB channel on the 0–255 scale. The buffers are not part of the state dict,
    so ``DeployModule(m, …).state_dict()`` is ``m``'s under the ``model.`` prefix. TorchScript-scriptable
    and ONNX-exportable (dynamic batch).
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {list(mean)} and {list(std)}")
        self.model = model
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model((x - self.mean) / self.std)
        return F.interpolate(logits, size=(x.shape[2], x.shape[3]), mode="bilinear", align_corners=False)


def deploy_module_for(model: nn.Module, preset: str | object) -> DeployModule:
    """:class:`DeployModule` with the mean/std of ``preset`` (a name, path or :class:`ModelPreset`)."""
    from adaptseg.models.presets import ModelPreset, load_preset

    p = preset if isinstance(preset, ModelPreset) else load_preset(preset)  # type: ignore[arg-type]
    return DeployModule(model, p.mean, p.std)
