"""int8 ONNX (``export/onnx-int8.yaml``): static QDQ quantisation calibrated on target crops, judged on
other images by argmax agreement and mIoU against eager fp32, and recorded in ``model.json``."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from adaptseg.artifact.runtime import open_runtime
from adaptseg.errors import UserError
from adaptseg.export.calibration import calibration_split
from adaptseg.export.exporter import export_model
from adaptseg.export.profile import DEFAULT_BARS, calibration_count, load_profile
from adaptseg.export.verify import ParityError, class_map_miou, measure_parity
from adaptseg.io import write_png
from tests.export.conftest import write_profile

#: few calibration images and a bar a random-weight model can meet (trained models meet the default)
SMALL_INT8 = {
    "precision": "int8",
    "onnx": {"int8": {"images": 6, "batch_size": 3}},
    "parity": {"images": 3, "batch_size": 2, "min_agreement": 0.5, "min_miou": 0.3},
}


def test_the_int8_profile_and_its_bar():
    profile = load_profile("onnx-int8")
    assert profile.precision == "int8" and profile.onnx.int8.per_channel
    bar = profile.parity.bar("int8")
    assert bar == DEFAULT_BARS["int8"] and (bar.min_agreement, bar.min_miou, bar.max_abs_diff) == (
        0.95,
        0.85,
        None,
    )
    assert calibration_count(profile, "onnx", "int8") == 32
    assert calibration_count(load_profile("trt-int8"), "trt", "int8") == 64
    assert calibration_count(profile, "onnx", "fp16") == 0  # --fp16 over an int8 profile calibrates nothing


def test_int8_onnx_is_quantised_and_records_its_parity(tmp_path, tiny_weights):
    profile = write_profile(tmp_path / "int8.yaml", **SMALL_INT8)
    artifact = export_model(tiny_weights, "onnx", out=tmp_path / "a", profile=profile, crop=(32, 64))

    assert sorted(p.name for p in artifact.folder.iterdir()) == ["model.json", "model.onnx"]
    assert [
        p.name for p in tmp_path.iterdir() if p.name.startswith(".")
    ] == []  # no staging or quantiser leftovers
    meta = json.loads((artifact.folder / "model.json").read_text())
    assert meta["precision"] == "int8" and meta["exporter"].endswith("+ort-quantize_static")
    assert "QDQ" in meta["exporter_note"] and "6 target crops" in meta["exporter_note"]
    parity = meta["parity"]
    assert parity["bar"]["min_miou"] == 0.3 and parity["crops"] == 3
    assert 0.5 <= parity["agreement"] <= 1.0 and 0.3 <= parity["miou"] <= 1.0

    graph = onnx.load(str(artifact.folder / "model.onnx")).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8_weights  # per-channel int8 convolution weights

    backend = open_runtime(artifact.folder, "cpu")  # runs like any ONNX artifact, dynamic batch included
    x = torch.rand(3, 3, 32, 64) * 255
    assert backend(x).shape == (3, backend.num_classes, 32, 64)


def test_below_the_int8_bar_nothing_is_left(tmp_path, tiny_weights):
    profile = write_profile(
        tmp_path / "strict.yaml", **{**SMALL_INT8, "parity": {"images": 3, "min_miou": 1.0}}
    )
    with pytest.raises(ParityError, match=r"mIoU .* \(bar: .*mIoU >= 100\.00%"):
        export_model(tiny_weights, "onnx", out=tmp_path / "a", profile=profile, crop=(32, 64))
    assert list(tmp_path.iterdir()) == [tmp_path / "strict.yaml"]


def test_calibration_and_parity_images_are_disjoint(tmp_path):
    calibrating, checked = calibration_split(None, 4, 2)  # MiniCity renders distinct images
    assert len(calibrating) == 4 and len(checked) == 2
    assert not any(np.array_equal(a, b) for a in calibrating for b in checked)

    for i in range(4):
        write_png(tmp_path / f"im{i}.png", np.full((8, 8, 3), i * 40, np.uint8))
    calibrating, checked = calibration_split(tmp_path, 5, 2)
    assert [p.name for p in checked] == ["im2.png", "im3.png"]
    assert [p.name for p in calibrating] == ["im0.png", "im1.png", "im0.png", "im1.png", "im0.png"]
    with pytest.raises(UserError, match="needs calibration images and 4 other images") as err:
        calibration_split(tmp_path, 5, 4)
    assert str(tmp_path) in str(err.value)  # names the folder


def test_class_map_miou_judges_the_classes_the_reference_predicts_enough():
    reference = lambda x: x  # noqa: E731 - logits = the input, argmax over 3 "classes"
    ref = torch.zeros(1, 3, 2, 2)
    ref[0, 0] = 1.0  # every pixel class 0
    cand = ref.clone()
    cand[0, 1, 0, 0] = 2.0  # one pixel class 1, which the reference never predicts
    measured = measure_parity(reference, lambda x: cand, ref, batch_size=1)
    assert measured.agreement == 0.75
    assert measured.miou == pytest.approx(3 / 4)  # class 0: 3 of 4; class 1 is not judged
    # 2000 pixels: class 0 on 1000, class 1 on 999 (wiped out by the candidate), class 2 on 1 (< 0.1 %)
    support = torch.tensor([1000, 999, 1])
    union = torch.tensor([2000, 999, 1])
    intersection = torch.tensor([1000, 0, 0])
    assert class_map_miou(intersection, union, support) == pytest.approx((1000 / 2000 + 0) / 2)
    assert class_map_miou(torch.zeros(3), torch.zeros(3), torch.zeros(3)) == 1.0
