"""Checkpoint import by path: each external layout round-trips strictly to identical outputs (the external
state dict is built from our own module through the format's inverse map); errors name keys and fixes."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from adaptseg.errors import UserError
from adaptseg.models.checkpoint import (
    CheckpointFormat,
    KeyMap,
    get_format,
    list_formats,
    load_checkpoint,
    read_state_dict,
    register_format,
)
from adaptseg.models.presets import ModelPreset
from tests.models.helpers import normalised_batch, seeded_model, tiny_preset

TINY_V1B = tiny_preset(
    {"type": "resnet18_v1b", "base_channels": 8, "stem_channels": 8},
    {"type": "deeplabv2", "dilations": [1, 2]},
)
TINY_CAFFE = tiny_preset(
    {
        "type": "resnet50_v1b",
        "base_channels": 4,
        "stem_channels": 8,
        "blocks": [1, 1, 1, 1],
        "style": "caffe",
        "ceil_mode": True,
        "contract_dilation": False,
    },
    {"type": "deeplabv2", "dilations": [1, 2, 3, 4]},
)
TINY_DRN = tiny_preset(
    {"type": "drn_d_54", "channels": [4, 4, 4, 4, 8, 8, 8, 8]},
    {
        "type": "deeplabv3plus",
        "channels": 8,
        "low_level_channels": 4,
        "decoder_channels": 8,
        "dilations": [1, 2, 3, 4],
    },
)


def _outputs_equal(a, b) -> None:
    x = normalised_batch(2, (32, 64), seed=5)
    with torch.no_grad():
        fa, fb = a.forward_features(x), b.forward_features(x)
    for key in fa:
        torch.testing.assert_close(fa[key], fb[key], atol=0, rtol=0)


def _backbone_outputs_equal(a, b) -> None:
    x = normalised_batch(1, (32, 64), seed=6)
    with torch.no_grad():
        for fa, fb in zip(a.backbone(x), b.backbone(x), strict=True):
            torch.testing.assert_close(fa, fb, atol=0, rtol=0)


def _external(model, fmt: str) -> dict[str, torch.Tensor]:
    return get_format(fmt).to_external(model.state_dict())


# ------------------------------------------------------------------------------ backbone-only (ImageNet)
@pytest.mark.parametrize(
    ("fmt", "preset", "classifier"),
    [
        ("torchvision", TINY_V1B, "fc"),
        ("mmseg-resnet-v1c", "tiny-deeplabv2", "fc"),
        ("fyu-drn", TINY_DRN, "fc"),
    ],
)
def test_imagenet_backbone_round_trip(tmp_path, fmt: str, preset, classifier: str) -> None:
    source = seeded_model(preset, seed=1)
    external = _external(source, fmt)
    assert not any(k.startswith(("backbone.", "decode_head.")) for k in external)
    external |= {f"{classifier}.weight": torch.randn(10, 4), f"{classifier}.bias": torch.randn(10)}
    path = tmp_path / "imagenet.pth"
    torch.save(external, path)

    target = seeded_model(preset, seed=2)
    head_before = {k: v.clone() for k, v in target.decode_head.state_dict().items()}
    with pytest.raises(UserError, match=r"missing from a backbone-only checkpoint: decode_head\..*--partial"):
        load_checkpoint(target, path)
    report = load_checkpoint(target, path, partial=True)
    assert report.format == fmt
    assert sorted(report.dropped) == [f"{classifier}.bias", f"{classifier}.weight"]
    assert report.missing and all(k.startswith("decode_head.") for k in report.missing)
    assert not report.unexpected and not report.mismatched
    _backbone_outputs_equal(source.eval(), target.eval())
    for k, v in target.decode_head.state_dict().items():
        assert torch.equal(v, head_before[k]), "a partial load must leave the head alone"


def test_old_checkpoints_without_num_batches_tracked_are_not_missing(tmp_path) -> None:
    source = seeded_model("tiny-deeplabv2", seed=1)
    external = {
        k: v for k, v in _external(source, "mmseg-resnet-v1c").items() if "num_batches_tracked" not in k
    }
    torch.save({"state_dict": external, "meta": {"mmcv_version": "1.4.7"}}, tmp_path / "v1c.pth")
    report = load_checkpoint(seeded_model("tiny-deeplabv2", seed=2), tmp_path / "v1c.pth", partial=True)
    assert not any("num_batches_tracked" in k for k in report.missing)


# -------------------------------------------------------------------------------------- whole segmentors
@pytest.mark.parametrize(
    ("fmt", "preset"),
    [
        ("mmseg-segmentor", "tiny-dlv2red-adapter"),
        ("mmseg-segmentor", "tiny-deeplabv2"),
        ("end-deeplabv3plus", TINY_DRN),
        ("adaptsegnet", TINY_CAFFE),
        ("adaptseg", "tiny-deeplabv3plus"),
    ],
)
def test_segmentor_round_trip_is_strict_and_exact(tmp_path, fmt: str, preset) -> None:
    source = seeded_model(preset, seed=1)
    path = tmp_path / "release.pth"
    torch.save({"state_dict": _external(source, fmt), "meta": {"iter": 40000}}, path)
    target = seeded_model(preset, seed=2)
    report = load_checkpoint(target, path)  # format auto-detected, strict
    # our ResNet/DeepLab names are mmseg's, so an mmseg segmentor is also our own layout
    assert report.format in ((fmt, "adaptseg") if fmt == "mmseg-segmentor" else (fmt,)) and report.ok
    assert len(report.loaded) == len(source.state_dict())
    _outputs_equal(source, target)


def test_bgr_trained_layouts_flip_the_first_conv() -> None:
    """EnD / AdaptSegNet nets see BGR; ours see RGB: the external stem is ours with its input channels reversed."""
    drn = seeded_model(TINY_DRN)
    ext = _external(drn, "end-deeplabv3plus")
    assert torch.equal(ext["backbone.layer0.0.weight"], drn.state_dict()["backbone.layer0.0.weight"].flip(1))
    assert "decode_head.aspp.aspp1.atrous_conv.weight" not in ext and "aspp.aspp1.atrous_conv.weight" in ext
    caffe = seeded_model(TINY_CAFFE)
    ext = _external(caffe, "adaptsegnet")
    assert torch.equal(ext["conv1.weight"], caffe.state_dict()["backbone.conv1.weight"].flip(1))
    assert {"layer5.conv2d_list.3.weight", "layer5.conv2d_list.0.bias"} <= set(ext)


def test_wrapped_models_need_a_prefix_when_there_are_several(tmp_path) -> None:
    """DDB ST checkpoints hold ``model.*`` and ``ema_model.*``; CKD ones ``stu_model.*`` and two teachers."""
    student, ema = seeded_model("tiny-dlv2red-adapter", seed=1), seeded_model("tiny-dlv2red-adapter", seed=3)
    state = {f"model.{k}": v for k, v in student.state_dict().items()}
    state |= {f"ema_model.{k}": v for k, v in ema.state_dict().items()}
    path = tmp_path / "st.pth"
    torch.save({"state_dict": state}, path)
    target = seeded_model("tiny-dlv2red-adapter", seed=2)
    with pytest.raises(UserError, match=r"several models \(ema_model\., model\.\).*prefix="):
        load_checkpoint(target, path)
    report = load_checkpoint(target, path, prefix="ema_model")
    assert report.prefix == "ema_model." and report.ok
    _outputs_equal(ema, target)
    with pytest.raises(UserError, match="no key starts with 'teacher.'"):
        load_checkpoint(target, path, prefix="teacher.")


def test_single_wrapper_and_ddp_module_prefix_are_found_automatically(tmp_path) -> None:
    source = seeded_model("tiny-deeplabv2", seed=1)
    torch.save(
        {"state_dict": {f"stu_model.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "a.pth"
    )
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "b.pth")
    for name in ("a.pth", "b.pth"):
        target = seeded_model("tiny-deeplabv2", seed=2)
        load_checkpoint(target, tmp_path / name)
        _outputs_equal(source, target)


def test_safetensors_checkpoints_are_read_too(tmp_path) -> None:
    source = seeded_model("tiny-dlv2red-adapter", seed=1)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    target = seeded_model("tiny-dlv2red-adapter", seed=2)
    assert load_checkpoint(target, tmp_path / "w.safetensors").ok
    _outputs_equal(source, target)


# ------------------------------------------------------------------------------------------------ errors
def test_missing_key_is_named_and_nothing_is_loaded(tmp_path) -> None:
    source = seeded_model("tiny-dlv2red-adapter", seed=1)
    state = source.state_dict()
    del state["decode_head.bottleneck.bn.running_var"]
    torch.save(state, tmp_path / "cut.pth")
    target = seeded_model("tiny-dlv2red-adapter", seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(
        UserError, match=r"cut\.pth: 1 model tensors are missing .*decode_head\.bottleneck\.bn\.running_var"
    ):
        load_checkpoint(target, tmp_path / "cut.pth")
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    report = load_checkpoint(target, tmp_path / "cut.pth", partial=True)
    assert report.missing == ["decode_head.bottleneck.bn.running_var"]


def test_unexpected_key_is_named(tmp_path) -> None:
    state = seeded_model("tiny-deeplabv2").state_dict() | {"decode_head.extra.weight": torch.zeros(1)}
    torch.save(state, tmp_path / "extra.pth")
    target = seeded_model("tiny-deeplabv2")
    with pytest.raises(UserError, match=r"no place in the model .*decode_head\.extra\.weight"):
        load_checkpoint(target, tmp_path / "extra.pth")
    assert load_checkpoint(target, tmp_path / "extra.pth", strict=False).unexpected == [
        "decode_head.extra.weight"
    ]


def test_other_num_classes_is_a_shape_error_unless_not_strict(tmp_path) -> None:
    source = seeded_model("tiny-dlv2red-adapter", num_classes=19)
    torch.save(source.state_dict(), tmp_path / "19.pth")
    target = seeded_model("tiny-dlv2red-adapter", num_classes=16, seed=4)
    with pytest.raises(UserError, match=r"decode_head\.conv_seg\.\w+ \(19, .*\) vs model \(16,.*num_classes"):
        load_checkpoint(target, tmp_path / "19.pth")
    report = load_checkpoint(target, tmp_path / "19.pth", strict=False)
    assert sorted(k for k, _, _ in report.mismatched) == [
        "decode_head.conv_seg.bias",
        "decode_head.conv_seg.weight",
    ]
    assert torch.equal(target.backbone.layer1[0].conv1.weight, source.backbone.layer1[0].conv1.weight)


def test_unknown_layout_and_format_are_user_errors(tmp_path) -> None:
    torch.save({"encoder.w": torch.zeros(2)}, tmp_path / "odd.pth")
    model = seeded_model("tiny-deeplabv2")
    with pytest.raises(UserError, match="cannot tell the checkpoint layout .*encoder.w.*format="):
        load_checkpoint(model, tmp_path / "odd.pth")
    with pytest.raises(UserError, match="unknown checkpoint format 'mmseg'"):
        load_checkpoint(model, tmp_path / "odd.pth", format="mmseg")


def test_unreadable_files_are_user_errors(tmp_path) -> None:
    model = seeded_model("tiny-deeplabv2")
    with pytest.raises(UserError, match="checkpoint file not found"):
        load_checkpoint(model, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pth: not a readable torch checkpoint"):
        load_checkpoint(model, tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_checkpoint(model, tmp_path / "junk.safetensors")


class _Meta:  # a pickled Python object, as old mmcv checkpoints carry in ``meta``
    def __init__(self) -> None:
        self.version = "0.22.1"


def test_pickled_objects_need_trust(tmp_path) -> None:
    source = seeded_model("tiny-deeplabv2", seed=1)
    torch.save({"state_dict": source.state_dict(), "meta": _Meta()}, tmp_path / "old.pth")
    target = seeded_model("tiny-deeplabv2", seed=2)
    with pytest.raises(UserError, match="pickled Python objects.*trusted=True"):
        load_checkpoint(target, tmp_path / "old.pth")
    assert load_checkpoint(target, tmp_path / "old.pth", trusted=True).ok
    _outputs_equal(source, target)


# --------------------------------------------------------------------------------------------- registry
def test_key_maps_invert_with_placeholders() -> None:
    km = KeyMap(
        renames=(("layer5.conv2d_list.{i}.", "decode_head.aspp_modules.{i}.conv."), ("", "backbone.")),
        drop=("fc.",),
    )
    state = {
        "layer5.conv2d_list.12.bias": torch.zeros(1),
        "layer1.0.conv1.weight": torch.zeros(1),
        "fc.weight": torch.zeros(1),
    }
    ours, dropped = km.to_ours(state)
    assert set(ours) == {"decode_head.aspp_modules.12.conv.bias", "backbone.layer1.0.conv1.weight"}
    assert dropped == ["fc.weight"]
    assert set(km.to_external(ours)) == set(state) - {"fc.weight"}


def test_formats_are_pluggable(tmp_path) -> None:
    name = "test-only-layout"
    if name not in list_formats():
        register_format(
            CheckpointFormat(
                name=name,
                detect=lambda keys: "net.encoder.stem.0.weight" in keys,
                key_map=KeyMap(renames=(("net.encoder.", "backbone."), ("net.decoder.", "decode_head."))),
            )
        )
    with pytest.raises(ValueError, match="registered twice"):
        register_format(get_format(name))
    source = seeded_model("tiny-deeplabv2", seed=1)
    torch.save(get_format(name).to_external(source.state_dict()), tmp_path / "x.pth")
    assert set(read_state_dict(tmp_path / "x.pth")) >= {"net.encoder.stem.0.weight"}
    target = seeded_model("tiny-deeplabv2", seed=2)
    assert load_checkpoint(target, tmp_path / "x.pth").format == name
    _outputs_equal(source, target)


def test_builtin_formats_are_listed() -> None:
    assert {
        "adaptseg",
        "mmseg-segmentor",
        "torchvision",
        "mmseg-resnet-v1c",
        "fyu-drn",
        "end-deeplabv3plus",
        "adaptsegnet",
    } <= set(list_formats())
    assert isinstance(TINY_DRN, ModelPreset)
