"""DecoupleNet's networks around the recipe's segmentor (decouplenet.md §1, §2.1, §4).

The student is the recipe's :class:`~adaptseg.models.segmentor.Segmentor` (a ResNet and the DeepLab-v2 head
with a feature, ``decode_head.channels``): its stem + ``layer1`` is the target stem ``g_tgt``, ``layer2..4``
is ``g_share``, the head's summed ASPP branches give the feature ``f`` and its ``conv_seg`` is ``C``. So the
student *is* the inference path ``g_tgt → g_share → head → C`` and exports, evaluates and deploys as any
model of its preset. Phase 1 adds:

* :class:`DomainStem` — ``g_src``, an independent copy of the student's stem + ``layer1``;
* :class:`AuxClassifier` — ``C_aux``, a 1×1 convolution initialised from ``C``'s weights.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from adaptseg.errors import UserError

#: the modules of a ResNet that make the decoupled low-level part (``--layer 1``: stem and layer1)
STEM_PARTS = ("stem", "conv1", "bn1", "relu", "maxpool", "layer1")


def check_decouplable(model: nn.Module, preset: str) -> None:
    """A one-line error unless ``model`` is a ResNet segmentor whose head has a feature before its classifier."""
    backbone, head = getattr(model, "backbone", None), getattr(model, "decode_head", None)
    if backbone is None or not all(
        hasattr(backbone, part) for part in (*STEM_PARTS, "layer2", "layer3", "layer4")
    ):
        raise UserError(
            f"DecoupleNet decouples a ResNet's stem and layer1; preset '{preset}' has no ResNet backbone",
            fix="use a ResNet DeepLab-v2 preset such as deeplabv2-128-r101",
        )
    if getattr(head, "conv_seg", None) is None:
        raise UserError(
            f"DecoupleNet's auxiliary classifier reads the head feature; preset '{preset}' has none",
            fix="set decode_head.channels (deeplabv2-128-r101: 128)",
        )


def low_level_features(parts: nn.Module, x: Tensor) -> Tensor:
    """Stem + ``layer1`` of a ResNet (or of a :class:`DomainStem`): the stride-4 ``layer1`` output φ."""
    return parts.layer1(parts.maxpool(parts.relu(parts.bn1(parts.conv1(parts.stem(x))))))


def head_outputs(model: nn.Module, low_level: Tensor) -> tuple[Tensor, Tensor]:
    """``(logits, feature)`` of ``g_share → head → C`` on a ``layer1`` output (either domain's stem)."""
    backbone = model.backbone
    c3 = backbone.layer2(low_level)
    c4 = backbone.layer3(c3)
    c5 = backbone.layer4(c4)
    return model.decode_head([low_level, c3, c4, c5])


class DomainStem(nn.Module):
    """A domain's own stem + ``layer1`` (``g_src``), copied from a ResNet backbone."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        for part in STEM_PARTS:
            setattr(self, part, copy.deepcopy(getattr(backbone, part)))

    def forward(self, x: Tensor) -> Tensor:
        return low_level_features(self, x)


class AuxClassifier(nn.Module):
    """``C_aux``: a 1×1 classifier on the head feature, started from a copy of ``C`` (``conv_seg``)."""

    def __init__(self, classifier: nn.Conv2d):
        super().__init__()
        self.head = copy.deepcopy(classifier)

    def forward(self, feature: Tensor) -> Tensor:
        return self.head(feature)


__all__ = ["AuxClassifier", "DomainStem", "check_decouplable", "head_outputs", "low_level_features"]
