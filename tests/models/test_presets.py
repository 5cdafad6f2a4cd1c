"""Preset files: discovery, validation with one-line errors, building, the `models list` table."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adaptseg.errors import UserError
from adaptseg.models import build_model, list_presets, load_preset
from adaptseg.models.checkpoint import get_format
from adaptseg.models.presets import count_parameters, exports_dir, models_dir, print_presets

MINE = [
    "ddb-dlv2red-adapter-r101",
    "deeplabv2-128-r101",
    "deeplabv2-r101",
    "deeplabv2-r101-caffe",
    "deeplabv2-r101-v1c",
    "deeplabv3plus-drn-d54",
    "tiny-deeplabv2",
    "tiny-deeplabv3plus",
    "tiny-dlv2red-adapter",
]


def test_presets_are_found_in_the_repo_models_folder() -> None:
    assert models_dir() == Path(__file__).resolve().parents[2] / "models"
    names = list_presets()
    assert set(MINE) <= set(names) and names == sorted(names)
    assert names == sorted(p.stem for p in models_dir().glob("*.yaml"))
    assert list_presets("tiny-*") == [n for n in names if n.startswith("tiny-")]
    assert exports_dir() == models_dir()  # a checkout's exports land beside its presets


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_validates(name: str) -> None:
    """Every shipped preset: its options are its builders' (checked on load), its size matches its name, and
    a full-size one names a registered checkpoint layout for its ImageNet weights."""
    preset = load_preset(name)
    assert preset.name == name and preset.size == ("tiny" if name.startswith("tiny-") else "full")
    if preset.size == "full":
        assert preset.pretrained_format is not None
    if preset.pretrained_format is not None:
        assert get_format(preset.pretrained_format).name == preset.pretrained_format


def test_full_presets_have_the_published_parameter_counts() -> None:
    """Backbone counts are pinned in test_backbones; here the whole networks, head included."""
    import torch

    expected = {  # backbone + head, computed from the architectures' definitions
        "deeplabv2-r101": 42_500_160 + 4 * (2048 * 19 * 9 + 19),
        "deeplabv2-r101-v1c": 42_519_392 + 4 * (2048 * 19 * 9 + 19),
        "deeplabv2-128-r101": 42_500_160 + 4 * (2048 * 128 * 9 + 128) + 128 * 19 + 19,
        "ddb-dlv2red-adapter-r101": 42_519_392
        + 2 * (2048 * 128 * 9 + 256)
        + 256 * 256 * 9
        + 512
        + 256 * 19
        + 19,
    }
    for name, count in expected.items():
        with torch.device("meta"):
            assert count_parameters(build_model(name)) == count, name
    # EnD's DeepLabV3+ head on DRN-D-54 (512-d layer8, 256-d layer3 skip); BN = 2 parameters per channel
    aspp = 512 * 256 + 3 * 512 * 256 * 9 + 512 * 256 + 1280 * 256 + 6 * 2 * 256
    decoder = 256 * 48 + 2 * 48 + 304 * 256 * 9 + 256 * 256 * 9 + 2 * 2 * 256 + 256 * 19 + 19
    with torch.device("meta"):
        assert count_parameters(build_model("deeplabv3plus-drn-d54").decode_head) == aspp + decoder


def test_unknown_preset_suggests_the_nearest() -> None:
    with pytest.raises(
        UserError, match="unknown model preset 'tiny-deeplabv3' .*did you mean 'tiny-deeplabv2'"
    ):
        load_preset("tiny-deeplabv3")


def _copy(tmp_path: Path, name: str, replace: tuple[str, str] | None = None) -> Path:
    text = (models_dir() / f"{name}.yaml").read_text()
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_option_typos_are_one_line_errors_with_the_nearest_option(tmp_path) -> None:
    path = _copy(tmp_path, "tiny-deeplabv2", ("output_stride: 8", "output_strid: 8"))
    with pytest.raises(
        UserError,
        match=r"tiny-deeplabv2.yaml: unknown option 'backbone.output_strid' .*"
        r"did you mean 'backbone.output_stride'",
    ):
        load_preset(path)
    path = _copy(tmp_path, "tiny-deeplabv2", ("type: deeplabv2", "type: deeplab_v2"))
    with pytest.raises(UserError, match="unknown head 'deeplab_v2' in 'decode_head.type'.*'deeplabv2'"):
        load_preset(path)
    path = _copy(tmp_path, "tiny-deeplabv2", ("size: tiny", "sise: tiny"))
    with pytest.raises(UserError, match="unknown key 'sise'.*did you mean 'size'"):
        load_preset(path)
    path = _copy(tmp_path, "tiny-deeplabv2", ("decode_head:\n", "decode_head:\n  num_classes: 3\n"))
    with pytest.raises(UserError, match="'decode_head.num_classes' is set by the framework"):
        load_preset(path)


def test_bad_option_values_fail_at_build_with_the_preset_named(tmp_path) -> None:
    path = _copy(tmp_path, "tiny-dlv2red-adapter", ("channels: 64", "channels: 63"))
    with pytest.raises(UserError, match="model preset 'tiny-dlv2red-adapter' does not build: channels"):
        build_model(path)


def test_presets_extend_others_and_override_num_classes(tmp_path) -> None:
    shutil.copy(models_dir() / "tiny-deeplabv2.yaml", tmp_path / "base.yaml")
    (tmp_path / "mine.yaml").write_text("extends: base.yaml\nbackbone:\n  output_stride: 16\n")
    preset = load_preset(tmp_path / "mine.yaml")
    assert preset.name == "mine" and preset.backbone.options["base_channels"] == 16
    model = build_model(preset, num_classes=5)
    assert model.output_stride == 16 and model.num_classes == 5 and model.preset_name == "mine"


def test_adaptseg_home_points_at_another_checkout(tmp_path, monkeypatch) -> None:
    (tmp_path / "models").mkdir()
    shutil.copy(models_dir() / "tiny-deeplabv2.yaml", tmp_path / "models" / "only-one.yaml")
    monkeypatch.setenv("ADAPTSEG_HOME", str(tmp_path))
    assert list_presets() == ["only-one"]
    monkeypatch.setenv("ADAPTSEG_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="ADAPTSEG_HOME has no models/ folder"):
        list_presets()


def test_print_presets_shows_the_table(capsys) -> None:
    print_presets("tiny-d*")
    out = capsys.readouterr().out
    for name in ("tiny-deeplabv2", "tiny-dlv2red-adapter", "tiny-deeplabv3plus"):
        assert name in out
    assert "resnet18_v1c" in out and "0.77 M" in out
    with pytest.raises(UserError, match=r"no model preset matches 'nothing\*'"):
        print_presets("nothing*")
