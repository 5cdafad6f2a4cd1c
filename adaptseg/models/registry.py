"""Name → builder tables for the parts users pick by name in ``models/*.yaml`` presets.

A backbone builder returns an ``nn.Module`` whose ``forward(x)`` gives a list of feature maps (one per
stage, shallow to deep) and which has ``out_channels: list[int]`` and ``out_strides: list[int]``.
A head builder takes ``in_channels`` (the backbone's ``out_channels``) and ``num_classes`` plus its own
options and returns an ``nn.Module`` whose ``forward(features: list[Tensor])`` gives
``(logits, feature)``: logits at the head's output stride and the feature that prototype methods use
(DDB's 256-d adapter output, DAFormer's fused bottleneck, ATP's projection, …). A head whose logits are
not at the resolution of the last feature says which input sets it with ``output_index`` (an index into
the backbone's features: 0 for the stride-4 decoders of SegFormer/DAFormer/DeepLabV3+; default -1);
the segmentor's output stride is ``backbone.out_strides[head.output_index]``.
An auxiliary head is built the same way; its ``forward(features)`` gives a tensor (or ``(out, feature)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from adaptseg.errors import UserError

Builder = Callable[..., nn.Module]

BACKBONES: dict[str, Builder] = {}
HEADS: dict[str, Builder] = {}


def _register(table: dict[str, Builder], kind: str, name: str) -> Callable[[Builder], Builder]:
    def decorator(builder: Builder) -> Builder:
        if name in table:
            raise ValueError(f"{kind} {name!r} registered twice")
        table[name] = builder
        return builder

    return decorator


def register_backbone(name: str) -> Callable[[Builder], Builder]:
    return _register(BACKBONES, "backbone", name)


def register_head(name: str) -> Callable[[Builder], Builder]:
    return _register(HEADS, "head", name)


def load_builtin_parts() -> None:
    """Import the built-in backbone and head modules, which register themselves."""
    import adaptseg.models.backbones  # noqa: F401
    import adaptseg.models.heads  # noqa: F401


def _build(table: dict[str, Builder], kind: str, name: str, **kwargs: Any) -> nn.Module:
    load_builtin_parts()
    if name not in table:
        import difflib

        close = difflib.get_close_matches(name, list(table), n=1)
        fix = f"did you mean '{close[0]}'?" if close else f"choose from {', '.join(sorted(table))}"
        raise UserError(f"unknown {kind} '{name}'", fix=fix)
    return table[name](**kwargs)


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    return _build(BACKBONES, "backbone", name, **kwargs)


def build_head(name: str, **kwargs: Any) -> nn.Module:
    return _build(HEADS, "head", name, **kwargs)
