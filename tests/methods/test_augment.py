"""Strong augmentation: kornia 0.5.8 colour jitter, DACS blur, DDB's horizontal-only quirk (ddb.md §3, atp.md §4)."""

from __future__ import annotations

import math

import pytest
import torch

from adaptseg.methods.parts.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorJitterParams,
    StrongAugSwitches,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    apply_color_jitter,
    blur_kernel_shape,
    blur_kernel_size,
    denormalize,
    gaussian_blur,
    gaussian_kernel1d,
    renormalize,
    sample_color_jitter,
    sample_strong_aug_switches,
    strong_augment,
    strong_augment_each,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pixel(r: float, g: float, b: float) -> torch.Tensor:
    return torch.tensor([r, g, b], dtype=torch.float64).view(1, 3, 1, 1)


# ---------------------------------------------------------------- colour jitter (kornia 0.5.8 semantics)


def test_brightness_adds_and_clamps():
    x = torch.tensor([0.5, 0.95, 0.05], dtype=torch.float64).view(1, 3, 1, 1)
    # 0.5 + 0.1 = 0.6; 0.95 + 0.1 = 1.05 → 1; 0.05 − 0.1 → 0 (additive, not multiplicative)
    assert adjust_brightness(x, torch.tensor([0.1])).flatten().tolist() == pytest.approx([0.6, 1.0, 0.15])
    assert adjust_brightness(x, torch.tensor([-0.1])).flatten().tolist() == pytest.approx([0.4, 0.85, 0.0])


def test_contrast_multiplies_without_mean_subtraction():
    x = torch.tensor([0.4, 0.6, 0.9], dtype=torch.float64).view(1, 3, 1, 1)
    # ×1.2: 0.48, 0.72, 1.08 → 1 (a mean-blend contrast would give 0.38/0.62 around the mean 0.5)
    assert adjust_contrast(x, torch.tensor([1.2])).flatten().tolist() == pytest.approx([0.48, 0.72, 1.0])


def test_saturation_scales_hsv_s():
    # (kornia's S = Δ/(V + 1e−6) puts results ~1e−6 off the exact values)
    # (0.8, 0.4, 0.4): V = 0.8, S = 0.5, H = 0. S×1.2 = 0.6 → G = B = V(1 − S) = 0.32; S×0.8 = 0.4 → 0.48
    x = _pixel(0.8, 0.4, 0.4)
    assert adjust_saturation(x, torch.tensor([1.2])).flatten().tolist() == pytest.approx(
        [0.8, 0.32, 0.32], abs=1e-5
    )
    assert adjust_saturation(x, torch.tensor([0.8])).flatten().tolist() == pytest.approx(
        [0.8, 0.48, 0.48], abs=1e-5
    )


def test_hue_shifts_in_radians():
    red = _pixel(1.0, 0.0, 0.0)
    # +1/3 turn: red → green
    assert adjust_hue(red, torch.tensor([2 * math.pi / 3])).flatten().tolist() == pytest.approx(
        [0, 1, 0], abs=1e-5
    )
    # +0.2 turn (72°): h·6 = 1.2 → sector 1, f = 0.2 → (q, v, p) = (0.8, 1, 0)
    assert adjust_hue(red, torch.tensor([0.2 * 2 * math.pi])).flatten().tolist() == pytest.approx(
        [0.8, 1, 0], abs=1e-5
    )
    # −0.2 turn: fmod keeps −72°; h·6 = −1.2 → sector floor(−1.2) mod 6 = 4, f = 0.8 → (t, p, v) = (0.8, 0, 1)
    assert adjust_hue(red, torch.tensor([-0.2 * 2 * math.pi])).flatten().tolist() == pytest.approx(
        [0.8, 0, 1], abs=1e-5
    )


def test_jitter_factor_ranges_and_order():
    params = sample_color_jitter(2000, _gen(0))
    assert params.brightness.min() >= -0.2 and params.brightness.max() <= 0.2
    assert params.hue.min() >= -0.2 and params.hue.max() <= 0.2
    for f in (params.contrast, params.saturation):
        assert f.min() >= 0.8 and f.max() <= 1.2
    assert params.brightness.std() > 0.1  # per image, not one value for all
    assert sorted(params.order.tolist()) == [0, 1, 2, 3]


def test_jitter_applies_in_the_drawn_order():
    x = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)

    def params(order):
        one = torch.ones(1, dtype=torch.float64)
        return ColorJitterParams(0.1 * one, 1.2 * one, one, 0 * one, torch.tensor(order))

    # brightness then contrast: (0.5 + 0.1)·1.2 = 0.72; contrast then brightness: 0.5·1.2 + 0.1 = 0.7
    assert apply_color_jitter(x, params([0, 1, 2, 3])).flatten().tolist() == pytest.approx(
        [0.72] * 12, abs=1e-5
    )
    assert apply_color_jitter(x, params([1, 0, 3, 2])).flatten().tolist() == pytest.approx(
        [0.7] * 12, abs=1e-5
    )


def test_denormalize_roundtrip_and_range():
    x01 = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    x = renormalize(x01)
    # channel 0 of a [0,1] value v is (255v − 123.675)/58.395
    assert x[0, 0, 0, 0].item() == pytest.approx((255 * x01[0, 0, 0, 0].item() - 123.675) / 58.395)
    assert torch.allclose(denormalize(x), x01)
    jittered = strong_augment(x, _gen(1), StrongAugSwitches(jitter=True, blur=False))
    back = denormalize(jittered, IMAGENET_MEAN, IMAGENET_STD)
    assert back.min() >= -1e-9 and back.max() <= 1 + 1e-9  # clamped to [0, 1] before re-normalising
    assert not torch.allclose(jittered[0], jittered[1] - x[1] + x[0])  # per-image factors differ


# ---------------------------------------------------------------- blur


@pytest.mark.parametrize(("side", "k"), [(512, 51), (640, 63), (100, 9), (90, 9), (1024, 103), (3, 1)])
def test_blur_kernel_size(side, k):
    # k = floor(ceil(0.1 s) − 0.5 + ceil(0.1 s) mod 2): 512 → 52 even → 51; 90 → 9 odd → 9; 3 → 1 odd → 1
    assert blur_kernel_size(side) == k


def test_blur_kernel_shape_intended_and_ddb_quirk():
    assert blur_kernel_shape(3, 512, 512) == (51, 51)
    assert blur_kernel_shape(3, 512, 1024) == (51, 103)
    # DDB released: sizes from shape[1] = C = 3 and shape[2] = H after unsqueeze → (1, k(H)), never k(W)
    assert blur_kernel_shape(3, 512, 512, horizontal_only_blur=True) == (1, 51)
    assert blur_kernel_shape(3, 512, 1024, horizontal_only_blur=True) == (1, 51)


def test_gaussian_kernel_hand_computed():
    # σ = 1, size 3: [e^−½, 1, e^−½]/(1 + 2e^−½) = [0.274069, 0.451863, 0.274069]
    k = gaussian_kernel1d(3, 1.0, dtype=torch.float64)
    assert k.tolist() == pytest.approx([0.27406862, 0.45186276, 0.27406862], abs=1e-8)
    assert gaussian_kernel1d(1, 0.7).tolist() == [1.0]


def test_blur_uses_reflect_padding():
    x = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64).view(1, 1, 1, 5)
    out = gaussian_blur(x, 1.0, (1, 3)).flatten()
    # reflect pads x[−1] = x[1] = 1: out[0] = 0.274069 + 0.274069 = 0.548137 (zero/replicate padding: 0.274069)
    assert out.tolist() == pytest.approx([0.548137, 0.451863, 0.274069, 0.0, 0.0], abs=1e-6)


def test_horizontal_only_blur_leaves_vertical_structure():
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, 16, :] = 1.0  # one bright row: constant along x
    intended = strong_augment(x, _gen(0), StrongAugSwitches(jitter=False, blur=True))
    official = strong_augment(
        x, _gen(0), StrongAugSwitches(jitter=False, blur=True), horizontal_only_blur=True
    )
    assert torch.allclose(official, x, atol=1e-6)  # (1, k) kernel: nothing spreads across rows
    assert intended[0, 0, 15, 5] > 0.01 and intended[0, 0, 16, 5] < 0.99  # 2-D kernel spreads the row


# ---------------------------------------------------------------- switches and call semantics


def test_switches_are_u_greater_than_thresholds():
    for seed in range(20):
        u_jitter, u_blur = torch.rand(2, generator=_gen(seed), dtype=torch.float64).tolist()
        switches = sample_strong_aug_switches(_gen(seed))
        assert switches == StrongAugSwitches(jitter=u_jitter > 0.2, blur=u_blur > 0.5)
    draws = [sample_strong_aug_switches(g) for g in [_gen(1000)] for _ in range(2000)]
    assert sum(s.jitter for s in draws) / 2000 == pytest.approx(0.8, abs=0.03)
    assert sum(s.blur for s in draws) / 2000 == pytest.approx(0.5, abs=0.03)


def test_switches_off_is_identity():
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(strong_augment(x, _gen(0), StrongAugSwitches(jitter=False, blur=False)), x)


def test_per_sample_augmentation_draws_its_own_switches():
    # DDB semantics = per image: its own switches, then its own jitter factors and σ, from one generator
    x = renormalize(torch.rand(5, 3, 24, 24))
    got = strong_augment_each(x, _gen(5), horizontal_only_blur=True)
    g = _gen(5)
    expected = []
    for image in x:
        switches = sample_strong_aug_switches(g)
        expected.append(strong_augment(image[None], g, switches, horizontal_only_blur=True))
    assert torch.equal(got, torch.cat(expected))


def test_strong_augmentation_prepares_data_in_full_precision_inside_autocast():
    """parts/precision.py: the blur's convolution would run in bf16 under the step's autocast; it does not."""
    from adaptseg.methods.parts.augment import StrongAugSwitches, strong_augment

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    on = StrongAugSwitches(jitter=True, blur=True)
    expected = strong_augment(x, torch.Generator().manual_seed(1), on)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = strong_augment(x, torch.Generator().manual_seed(1), on)
        half = strong_augment(x.bfloat16(), torch.Generator().manual_seed(1), on)
    assert got.dtype == torch.float32 and torch.equal(got, expected)
    assert half.dtype == torch.float32  # half-precision input is prepared in float32 too
