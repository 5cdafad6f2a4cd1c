"""Inference presets: every shipped preset validates; mistakes are one-line errors naming the key."""

from __future__ import annotations

import pytest

from adaptseg.errors import UserError
from adaptseg.infer.config import available_presets, dataset_preset, load_preset, preset_path


@pytest.mark.parametrize("name", available_presets())
def test_shipped_presets_validate(name):
    cfg = load_preset(name)
    assert cfg.batch_size == "auto" or cfg.batch_size >= 1
    if cfg.mode == "slide":
        assert cfg.crop is not None and cfg.slide_stride is not None


def test_the_issue_presets_exist_and_say_what_the_protocols_say():
    assert {
        "cityscapes-whole-1024x512",
        "cityscapes-slide",
        "acdc",
        "darkzurich",
        "mapillary-half",
        "minicity",
    } <= set(available_presets())
    cs = load_preset("cityscapes-whole-1024x512")
    assert (cs.mode, cs.resize, cs.average) == ("whole", (1024, 512), "logits")
    slide = load_preset("cityscapes-slide")
    assert (slide.crop, slide.stride, slide.resize) == ((1024, 1024), (512, 512), (2048, 1024))
    assert load_preset("acdc").resize == (960, 540)
    # each dataset's evaluation protocol comes with its reader's registration (shared/datasets.md §8)
    expected = {
        "cityscapes": "cityscapes-whole-1024x512",
        "acdc": "acdc",
        "darkzurich": "darkzurich",
        "Dark_Zurich": "darkzurich",
        "mapillary": "mapillary-half",
    }
    for name, preset in expected.items():
        assert dataset_preset(name) == preset_path(preset) and preset_path(preset).stem == preset
    assert dataset_preset("gta5") is None and dataset_preset("no-such-dataset") is None


def test_overrides_and_mistakes():
    assert load_preset("minicity", ["tta.flip=true", "batch_size=2"]).tta.flip is True
    with pytest.raises(UserError, match="did you mean 'batch_size'"):
        load_preset("minicity", ["batchsize=2"])
    with pytest.raises(UserError, match="gaps"):
        load_preset(None, ["mode=slide", "crop=[8, 8]", "stride=[9, 8]"])
    with pytest.raises(UserError, match="crop"):
        load_preset(None, ["mode=slide"])
    with pytest.raises(UserError, match="only apply"):
        load_preset(None, ["crop=[8, 8]"])
    with pytest.raises(
        UserError, match="unknown inference preset 'no-such-preset'.*choose one of: .*minicity"
    ):
        load_preset("no-such-preset")
    with pytest.raises(UserError, match="nope.yaml: inference preset file not found"):
        load_preset("nope.yaml")
    assert load_preset(None, ["mode=slide", "crop=[9, 12]"]).slide_stride == (4, 6)
