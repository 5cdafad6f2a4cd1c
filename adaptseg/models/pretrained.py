"""Named initial weights that ship with adaptseg: MiniCity's stand-in for ImageNet pre-training.

The real recipes start their encoders from ImageNet checkpoints given by path. MiniCity has no ImageNet,
so adaptseg ships tiny encoders pre-trained once, with labels, on MiniCity's Synscapes-like domain (neither
source nor target of any MiniCity benchmark; ``train/pretrain/minicity-synscapes-*.yaml`` make them). A recipe names them instead of a file::

    model:
      init: pretrained:minicity-synscapes   # or: adaptseg train R --set model.init=pretrained:minicity-synscapes

and gets the encoder that matches its preset's backbone type, loaded as an ImageNet backbone is: the
``backbone.*`` tensors only, the heads from their seeded init (``prefix: backbone.``, ``partial: true``).
``adaptseg demo --pretrained`` sets it on every model the demo trains.
"""

from __future__ import annotations

from adaptseg.errors import UserError

SCHEME = "pretrained:"

#: name → backbone type → the shipped weights (relative to the checkout or the installed package)
ENCODERS: dict[str, dict[str, str]] = {
    "minicity-synscapes": {
        "mit_tiny": "models/pretrained/tiny-daformer-minicity-synscapes.safetensors",
        "resnet18_v1c": "models/pretrained/tiny-resnet18-v1c-minicity-synscapes.safetensors",
        "resnet18_v1b": "models/pretrained/tiny-resnet18-v1b-minicity-synscapes.safetensors",
    },
}


def is_named(path: str) -> bool:
    """Whether a recipe's weights path names shipped weights (``pretrained:<name>``) rather than a file."""
    return path.startswith(SCHEME)


def encoder_path(path: str, backbone_type: str) -> str:
    """The shipped file that ``pretrained:<name>`` means for a model whose backbone is ``backbone_type``."""
    name = path[len(SCHEME) :]
    if name not in ENCODERS:
        raise UserError(
            f"unknown pre-trained weights '{path}'",
            fix=f"use one of: {', '.join(SCHEME + n for n in ENCODERS)}",
        )
    by_type = ENCODERS[name]
    if backbone_type not in by_type:
        raise UserError(
            f"'{path}' has no encoder for backbone type '{backbone_type}' (it ships for {', '.join(by_type)})",
            fix="pick a preset with one of those backbones, or set model.init=null (random weights)",
        )
    return by_type[backbone_type]


__all__ = ["ENCODERS", "SCHEME", "encoder_path", "is_named"]
