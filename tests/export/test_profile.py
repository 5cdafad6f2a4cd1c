"""Export profiles: the shipped ones validate, bars per precision, overrides and one-line errors."""

import pytest

from adaptseg.errors import UserError
from adaptseg.export.profile import DEFAULT_BARS, load_profile, profile_path
from adaptseg.resources import EXPORT
from tests.export.conftest import write_profile


def test_shipped_profiles_load_with_their_precision():
    assert EXPORT.names() == ["default", "onnx-int8", "trt-fp16", "trt-int8"]
    default, fp16, int8 = load_profile(), load_profile("trt-fp16"), load_profile("trt-int8")
    assert (default.precision, fp16.precision, int8.precision) == ("fp32", "fp16", "int8")
    assert default.onnx.exporter == "legacy" and default.onnx.opset == 18
    b = fp16.tensorrt.batch
    assert (b.min, b.opt, b.max) == (1, 4, 8)
    assert int8.tensorrt.calibration.images == 64 and int8.tensorrt.calibration.batch_size == 8
    assert load_profile(profile_path("trt-int8")) == int8  # by path as by name


def test_parity_bar_per_precision_and_overrides(tmp_path):
    parity = load_profile().parity
    assert parity.bar("fp32") == DEFAULT_BARS["fp32"]
    assert (parity.bar("fp32").min_agreement, parity.bar("fp32").max_abs_diff) == (0.999, 1e-3)
    assert parity.bar("int8").max_abs_diff is None and parity.bar("int8").logit_bound(1e3) is None
    # trained logits (tens) meet the absolute bound; huge logits the float32 relative one
    assert parity.bar("fp32").logit_bound(30.0) == 1e-3
    assert parity.bar("fp32").logit_bound(2e5) == pytest.approx(2.0)
    custom = load_profile(
        write_profile(tmp_path / "p.yaml", parity={"min_agreement": 0.5, "max_abs_diff": 2.0})
    )
    assert (custom.parity.bar("fp16").min_agreement, custom.parity.bar("fp16").max_abs_diff) == (0.5, 2.0)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"tensorrt": {"batch": {"min": 4, "opt": 2, "max": 8}}}, "min <= opt <= max"),
        ({"tensorrt": {"bach": {"min": 1}}}, "did you mean 'tensorrt.batch'"),
        ({"precision": "fp8"}, "bad value for 'precision'"),
        ({"onnx": {"exporter": "tracer"}}, "bad value for 'onnx.exporter'"),
    ],
)
def test_bad_profiles_are_one_line_errors_naming_the_file(tmp_path, sections, message):
    path = write_profile(tmp_path / "bad.yaml", **sections)
    with pytest.raises(UserError, match=message) as info:
        load_profile(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_unknown_profile_name_lists_the_shipped_ones():
    with pytest.raises(UserError, match="default, onnx-int8, trt-fp16, trt-int8"):
        load_profile("trt-fp8")
