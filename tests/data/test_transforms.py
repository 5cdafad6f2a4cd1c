"""Transforms: mmseg semantics checked against hand-computed expectations, determinism under a seed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from adaptseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    Normalize,
    Pad,
    PhotoMetricDistortion,
    RandomCrop,
    RandomFlip,
    Resize,
    build_pipeline,
    keep_ratio_size,
    normalize,
    pad_to,
    photometric_distortion,
    random_crop,
    random_flip,
    resize_keep_ratio,
)
from adaptseg.errors import UserError


class ScriptedRng:
    """Stands in for np.random.Generator: returns scripted draws and checks the ranges asked for."""

    def __init__(self, ints: list[int], floats: list[float]):
        self.ints, self.floats = list(ints), list(floats)
        self.calls: list[tuple] = []

    def integers(self, low: int, high: int | None = None) -> int:
        lo, hi = (0, low) if high is None else (low, high)
        value = self.ints.pop(0)
        assert lo <= value < hi, (value, lo, hi)
        self.calls.append(("integers", lo, hi))
        return value

    def uniform(self, low: float, high: float) -> float:
        value = self.floats.pop(0)
        assert low <= value <= high, (value, low, high)
        self.calls.append(("uniform", low, high))
        return value

    def random(self) -> float:
        self.calls.append(("random",))
        return self.floats.pop(0)

    def exhausted(self) -> bool:
        return not self.ints and not self.floats


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- resize -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hw", "scale", "expected"),
    [
        ((1052, 1914), (1280, 720), (704, 1280)),  # GTA5 in DAFormer: 1280x704 (datasets.md §9)
        ((760, 1280), (1280, 760), (760, 1280)),  # SYNTHIA stays
        ((1024, 2048), (1024, 512), (512, 1024)),  # Cityscapes
        ((720, 1440), (1280, 720), (640, 1280)),  # Synscapes (DDB)
        ((1080, 1920), (960, 540), (540, 960)),  # ACDC / Dark Zurich
        ((100, 50), (30, 20), (30, 15)),  # portrait: the long side meets the long bound
    ],
)
def test_keep_ratio_size_matches_mmcv(hw, scale, expected):
    assert keep_ratio_size(*hw, scale) == expected


def test_resize_keep_ratio_image_bilinear_label_nearest():
    img = np.full((10, 20, 3), 77, np.uint8)
    label = np.indices((10, 20)).sum(0) % 2 * 4 + 3  # checkerboard of 3 and 7
    out_img, out_label = resize_keep_ratio(img, label.astype(np.uint8), (30, 12))
    # s = min(30/20, 12/10) = 1.2 -> 12 x 24
    assert out_img.shape == (12, 24, 3) and out_label.shape == (12, 24)
    assert (out_img == 77).all()
    assert set(np.unique(out_label)) <= {3, 7}
    assert out_label.dtype == np.uint8


def test_resize_keep_ratio_without_label_and_identity():
    img = _image(12, 24)
    same, none = resize_keep_ratio(img, None, (24, 12))
    assert same is img and none is None


def test_resize_ratio_range_is_seeded():
    img = _image(20, 40)
    sizes = {
        resize_keep_ratio(img, None, (40, 20), ratio_range=(0.5, 2.0), rng=np.random.default_rng(s))[0].shape
        for s in range(6)
    }
    assert len(sizes) > 1  # the ratio varies with the seed
    a = resize_keep_ratio(img, None, (40, 20), ratio_range=(0.5, 2.0), rng=np.random.default_rng(3))[0]
    b = resize_keep_ratio(img, None, (40, 20), ratio_range=(0.5, 2.0), rng=np.random.default_rng(3))[0]
    assert a.shape == b.shape and (a == b).all()
    # scripted ratio 1.5: scale (60, 30) -> s = min(60/40, 30/20) = 1.5 -> 30 x 60
    rng = ScriptedRng([], [(1.5 - 0.5) / 1.5])
    assert resize_keep_ratio(img, None, (40, 20), ratio_range=(0.5, 2.0), rng=rng)[0].shape == (30, 60, 3)


# --- random crop --------------------------------------------------------------------------------------


def test_random_crop_draws_top_then_left():
    img, label = _image(10, 12), np.arange(120, dtype=np.uint8).reshape(10, 12)
    rng = ScriptedRng([3, 5], [])
    out_img, out_label = random_crop(img, label, (4, 6), rng)
    assert rng.calls == [("integers", 0, 7), ("integers", 0, 7)]  # margins 10-4 and 12-6, inclusive
    assert (out_img == img[3:7, 5:11]).all() and (out_label == label[3:7, 5:11]).all()


def test_random_crop_keeps_small_sides_whole():
    img = _image(5, 30)
    out, none = random_crop(img, None, (8, 10), np.random.default_rng(0))
    assert out.shape == (5, 10, 3) and none is None


def test_cat_max_ratio_redraws_until_two_classes_and_no_dominant_one():
    # columns 0-3 class 1 only; columns 4-7 class 2: a 4x4 window at left 0 holds one class (rejected),
    # at left 2 it holds 8 px of each class (accepted).
    label = np.ones((4, 8), np.uint8)
    label[:, 4:] = 2
    img = _image(4, 8)
    rng = ScriptedRng([0, 0, 0, 0, 0, 2], [])
    _, out = random_crop(img, label, (4, 4), rng, cat_max_ratio=0.75)
    assert rng.exhausted()  # three windows drawn: (0,0) rejected twice, (0,2) accepted
    assert (out == label[:, 2:6]).all()


def test_cat_max_ratio_gives_up_after_ten_redraws():
    label = np.full((4, 8), 5, np.uint8)  # every window holds one class
    img = _image(4, 8)
    rng = ScriptedRng([0, 1] * 10 + [0, 3], [])
    _, out = random_crop(img, label, (4, 4), rng, cat_max_ratio=0.75)
    assert rng.exhausted()  # 1 + 10 draws; the 11th window is used unchecked
    assert out.shape == (4, 4)
    img2, _ = random_crop(img, label, (4, 4), ScriptedRng([0, 1] * 10 + [0, 3], []), cat_max_ratio=0.75)
    assert (img2 == img[:, 3:7]).all()


def test_cat_max_ratio_ignores_255_pixels():
    # window: 3 px of class 1, 1 px of class 2, the rest ignored -> class 1 share is 3/4 = 0.75 exactly
    label = np.full((4, 4), 255, np.uint8)
    label[0, :3] = 1
    label[0, 3] = 2
    img = _image(4, 4)
    strict = ScriptedRng([0, 0] * 11, [])
    random_crop(img, label, (4, 4), strict, cat_max_ratio=0.75)
    assert strict.exhausted()  # 0.75 is not < 0.75: every window rejected
    loose = ScriptedRng([0, 0], [])
    random_crop(img, label, (4, 4), loose, cat_max_ratio=0.76)
    assert loose.exhausted()  # accepted at once (with ignore counted, the share would be 3/16)


def test_random_crop_without_label_draws_once():
    rng = ScriptedRng([1, 2], [])
    out, none = random_crop(_image(6, 6), None, (3, 3), rng, cat_max_ratio=0.5)
    assert rng.exhausted() and out.shape == (3, 3, 3) and none is None


# --- flip, pad, normalize ------------------------------------------------------------------------------


def test_random_flip():
    img, label = _image(3, 5), np.arange(15, dtype=np.uint8).reshape(3, 5)
    flipped_img, flipped = random_flip(img, label, ScriptedRng([], [0.2]), p=0.5)
    assert (flipped_img == img[:, ::-1]).all() and (flipped == label[:, ::-1]).all()
    kept_img, kept = random_flip(img, label, ScriptedRng([], [0.7]), p=0.5)
    assert kept_img is img and kept is label
    assert random_flip(img, None, np.random.default_rng(0), p=1.0)[1] is None


def test_pad_to_bottom_right_with_values():
    img = np.full((2, 3, 3), 9, np.uint8)
    label = np.full((2, 3), 4, np.uint8)
    out_img, out_label = pad_to(img, label, (4, 5))
    assert out_img.shape == (4, 5, 3) and out_label.shape == (4, 5)
    assert (out_img[:2, :3] == 9).all() and (out_img[2:] == 0).all() and (out_img[:, 3:] == 0).all()
    assert (out_label[:2, :3] == 4).all() and (out_label[2:] == 255).all() and (out_label[:, 3:] == 255).all()
    out_img, none = pad_to(img, None, (2, 6), img_value=7)
    assert out_img.shape == (2, 6, 3) and (out_img[:, 3:] == 7).all() and none is None
    big, _ = pad_to(_image(6, 6), None, (4, 8))  # a larger side is left as it is
    assert big.shape == (6, 8, 3)


def test_normalize_imagenet_to_chw_float():
    img = np.zeros((1, 2, 3), np.uint8)
    img[0, 0] = [182, 116, 46]  # mean + 1 std, mean, mean - 1 std (rounded)
    out = normalize(img)
    assert out.shape == (3, 1, 2) and out.dtype == np.float32 and out.flags.c_contiguous
    expected = (np.array([182, 116, 46]) - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(out[:, 0, 0], expected, atol=1e-6)
    assert np.allclose(out[:, 0, 1], -np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD), atol=1e-6)


# --- photometric distortion ----------------------------------------------------------------------------


def _hsv_step(img: np.ndarray, channel: int, fn) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[:, :, channel] = fn(hsv[:, :, channel])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _clip(values, alpha=1.0, beta=0.0):
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def test_photometric_mode0_order_brightness_saturation_hue_contrast():
    img = np.array([[[100, 50, 200], [250, 240, 10]]], np.uint8)
    # coins and draws in mmseg's order: brightness(1, +10.7) mode=0 saturation(1, 0.5) hue(1, +17) contrast(1, 1.4)
    rng = ScriptedRng([1, 0, 1, 1, 17, 1], [10.7, 0.5, 1.4])
    out = photometric_distortion(img, rng)
    assert rng.exhausted()
    expected = _clip(img, beta=10.7)
    expected = _hsv_step(expected, 1, lambda s: _clip(s, alpha=0.5))
    expected = _hsv_step(expected, 0, lambda h: ((h.astype(int) + 17) % 180).astype(np.uint8))
    expected = _clip(expected, alpha=1.4)
    assert (out == expected).all()
    assert ("integers", -18, 18) in rng.calls  # hue shift drawn from [-18, 18)


def test_photometric_mode1_applies_contrast_before_hsv():
    img = np.array([[[100, 50, 200], [250, 240, 10]]], np.uint8)
    # brightness skipped (0), mode=1, contrast(1, 1.4), saturation skipped (0), hue(1, -5)
    rng = ScriptedRng([0, 1, 1, 0, 1, -5], [1.4])
    out = photometric_distortion(img, rng)
    assert rng.exhausted()
    expected = _clip(img, alpha=1.4)
    expected = _hsv_step(expected, 0, lambda h: ((h.astype(int) - 5) % 180).astype(np.uint8))
    assert (out == expected).all()
    # contrast last instead would differ (250 * 1.4 clips before the hue change)
    other = _hsv_step(img, 0, lambda h: ((h.astype(int) - 5) % 180).astype(np.uint8))
    assert not (out == _clip(other, alpha=1.4)).all()


def test_photometric_hue_wraps_modulo_180():
    img = np.zeros((1, 1, 3), np.uint8)
    img[0, 0] = cv2.cvtColor(np.array([[[170, 255, 255]]], np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    rng = ScriptedRng([0, 0, 0, 1, 17, 0], [])
    out = photometric_distortion(img, rng)
    assert cv2.cvtColor(out, cv2.COLOR_RGB2HSV)[0, 0, 0] == (170 + 17) % 180


def test_photometric_is_deterministic_and_keeps_dtype():
    img = _image(16, 16)
    a = photometric_distortion(img, np.random.default_rng(5))
    b = photometric_distortion(img, np.random.default_rng(5))
    assert a.dtype == np.uint8 and a.shape == img.shape and (a == b).all()
    assert any((photometric_distortion(img, np.random.default_rng(s)) != img).any() for s in range(4))


# --- pipeline ------------------------------------------------------------------------------------------

RECIPE = [
    {"resize": [256, 128]},
    {"random_crop": {"size": [64, 64], "cat_max_ratio": 0.75}},
    {"flip": 0.5},
    {"photometric": True},
    {"pad": [80, 80]},
]


def test_build_pipeline_from_recipe():
    pipe = build_pipeline(RECIPE)
    assert [type(s) for s in pipe.steps] == [Resize, RandomCrop, RandomFlip, PhotoMetricDistortion, Pad]
    assert pipe.steps[0] == Resize((256, 128))
    assert pipe.steps[1] == RandomCrop((64, 64), 0.75)
    assert build_pipeline([{"flip": True}]).steps == [RandomFlip(0.5)]
    assert build_pipeline([{"flip": False}, {"photometric": False}]).steps == []
    assert build_pipeline([{"normalize": True}]).steps == [Normalize()]
    assert build_pipeline([{"resize": {"scale": [64, 32], "ratio_range": [0.5, 2]}}]).steps == [
        Resize((64, 32), (0.5, 2.0))
    ]


def test_pipeline_output_and_determinism():
    img = _image(100, 200)
    label = np.zeros((100, 200), np.uint8)
    label[:, 100:] = 1
    label[60:] = 2
    pipe = build_pipeline(RECIPE)
    out_img, out_label = pipe(img, label, np.random.default_rng(0))
    # resize: s = min(256/200, 128/100) = 1.28 -> 128 x 256; crop 64 x 64; pad to 80 x 80
    assert out_img.shape == (80, 80, 3) and out_label.shape == (80, 80)
    assert (out_label[64:] == 255).all() and (out_label[:, 64:] == 255).all()
    again = pipe(img, label, np.random.default_rng(0))
    assert (again[0] == out_img).all() and (again[1] == out_label).all()
    unlabelled, none = pipe(img, None, np.random.default_rng(0))
    assert none is None and unlabelled.shape == (80, 80, 3)
    normalised, _ = Compose([*pipe.steps, Normalize()])(img, label, np.random.default_rng(0))
    assert normalised.shape == (3, 80, 80) and normalised.dtype == np.float32


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"flipp": 0.5}], "did you mean 'flip'"),
        ([{"random_crop": {"size": [8, 8], "cat_max_ratoi": 0.7}}], "did you mean 'cat_max_ratio'"),
        ([{"resize": [1280]}], "pair of numbers"),
        ([{"flip": 2.0}], "probability"),
        ([{"normalize": True}, {"flip": 0.5}], "after 'normalize'"),
        ([{"flip": 0.5, "pad": [8, 8]}], "one key"),
    ],
)
def test_build_pipeline_rejects_bad_specs(spec, message):
    with pytest.raises(UserError, match=message):
        build_pipeline(spec)
