"""Checkpoint layouts of the MiT family, registered with :mod:`adaptseg.models.checkpoint` on import.

Our MiT encoder and heads use the release's parameter names, so the maps only add or drop prefixes:

``segformer-mit``        SegFormer's ImageNet ``mit_b*.pth`` (bare, or under ``state_dict``): keys such as
                         ``patch_embed1.proj.weight``, ``block1.0.attn.kv.weight``, ``norm4.bias`` go under
                         ``backbone.``; the ImageNet classifier ``head.*`` is dropped (every seed loads these
                         files that way). Backbone scope: loading into a segmentor needs ``partial=True``.
``segformer-segmentor``  NVlabs/SegFormer's trained segmentors (``backbone.*``, ``decode_head.linear_c{1..4}``,
                         ``linear_fuse``, ``linear_pred``): their ``decode_head.conv_seg.*`` is an mmseg
                         leftover that the SegFormer head never uses, so it is dropped.

DAFormer and ATP segmentors (``backbone.*``, ``decode_head.embed_layers/fuse_layer/conv_seg``,
``auxiliary_head.convs``) need no map at all: they load through the generic ``mmseg-segmentor`` format
(or are recognised as our own layout).
"""

from __future__ import annotations

from adaptseg.models.checkpoint import CheckpointFormat, KeyMap, register_format

#: keys every MiT state dict has (B0–B5 and mit_tiny alike)
_MIT_KEYS = (
    "patch_embed1.proj.weight",
    "block1.0.attn.q.weight",
    "block1.0.mlp.dwconv.dwconv.weight",
    "norm4.weight",
)

SEGFORMER_MIT = register_format(
    CheckpointFormat(
        name="segformer-mit",
        detect=lambda keys: all(k in keys for k in _MIT_KEYS),
        key_map=KeyMap(renames=(("", "backbone."),), drop=("head.",)),
        scope="backbone",
        description="SegFormer ImageNet MiT encoder (mit_b0..b5.pth; classifier head.* dropped)",
    )
)

SEGFORMER_SEGMENTOR = register_format(
    CheckpointFormat(
        name="segformer-segmentor",
        detect=lambda keys: (
            "decode_head.linear_pred.weight" in keys and "backbone.patch_embed1.proj.weight" in keys
        ),
        key_map=KeyMap(drop=("decode_head.conv_seg.",)),
        description="NVlabs/SegFormer segmentor (MiT + all-MLP head; unused decode_head.conv_seg dropped)",
    )
)
