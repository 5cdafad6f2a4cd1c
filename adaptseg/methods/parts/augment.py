"""Strong augmentation on normalised images: colour jitter and Gaussian blur (DACS / DDB / ATP).

Images are normalised float ``N×3×H×W`` (ImageNet mean/std, RGB). Colour jitter works on the
de-normalised ``[0, 1]`` image and re-normalises; blur works on the normalised image.

Spec rules implemented here:

* ddb.md §3 "Post-processing of x_m" and atp.md §4 "Strong aug (DACS)": colour jitter when ``U > 0.2``
  with **kornia 0.5.8** ``ColorJitter(0.2, 0.2, 0.2, 0.2)`` semantics, re-implemented (kornia is not a
  dependency):
  - brightness **adds** ``U(−0.2, 0.2)`` then clamps to ``[0, 1]``;
  - contrast multiplies by ``U(0.8, 1.2)`` (no mean subtraction) then clamps;
  - saturation multiplies HSV ``S`` by ``U(0.8, 1.2)`` (``S`` clamped to ``[0, 1]``);
  - hue shifts HSV ``H`` (radians) by ``U(−0.2, 0.2)·2π`` with ``fmod``;
  - factors are drawn per image, the order of the four operations once per call (a random permutation);
  - HSV conversion is kornia 0.5.8's (``eps = 1e-6``, ``H ∈ [0, 2π)``).
* Gaussian blur when ``U > 0.5``: ``σ ~ U(0.15, 1.15)`` once per call, odd kernel size
  ``k(s) = floor(ceil(0.1·s) − 0.5 + ceil(0.1·s) mod 2)`` (≈ 0.1·side: 51 for 512, 63 for 640), kornia
  ``GaussianBlur2d`` with reflect padding.
* When the switches are drawn (:class:`StrongAugSwitches`):
  - ATP (atp.md §4): once per iteration, shared by every image and every call of that iteration; jitter
    factors per image per call, σ per call — call :func:`sample_strong_aug_switches` once and
    :func:`strong_augment` for each call.
  - DDB (ddb.md §3): per sample in the data pipeline — :func:`strong_augment_each`.

Quirk switch (fidelity policy 2):

* ``horizontal_only_blur`` (default ``False``): DDB's released ``STDataset.gaussian_blur`` computes the
  kernel size after ``unsqueeze(0)`` from ``shape[1] = C`` and ``shape[2] = H``, giving a ``(1, k(H))``
  kernel (``1×51`` at 512²): a horizontal-only blur. ``True`` reproduces it (DDB ``quirks: official``);
  the default is the intended 2-D ``k(H)×k(W)`` blur (DACS, ATP).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptseg.methods.parts.precision import full_precision

IMAGENET_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
IMAGENET_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)

JITTER_STRENGTH = 0.2
JITTER_THRESHOLD = 0.2  # jitter when U > 0.2 (p = 0.8)
BLUR_THRESHOLD = 0.5  # blur when U > 0.5 (p = 0.5)
BLUR_SIGMA_RANGE = (0.15, 1.15)


def _channel_view(values: Sequence[float], like: Tensor) -> Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1)


def denormalize(
    images: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Tensor:
    """Normalised images → ``[0, 1]`` RGB (``(x·std + mean)/255``, DACS ``denorm``)."""
    return (images * _channel_view(std, images) + _channel_view(mean, images)) / 255.0


def renormalize(
    images01: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Tensor:
    """``[0, 1]`` RGB → normalised images (``(x·255 − mean)/std``, DACS ``renorm``)."""
    return (images01 * 255.0 - _channel_view(mean, images01)) / _channel_view(std, images01)


# ---------------------------------------------------------------- colour jitter (kornia 0.5.8)


def rgb_to_hsv(images01: Tensor, eps: float = 1e-6) -> Tensor:
    """kornia 0.5.8 ``rgb_to_hsv``: ``…×3×H×W`` RGB in ``[0, 1]`` → HSV with ``H`` in radians ``[0, 2π)``."""
    maxc, _ = images01.max(-3)
    maxc_mask = images01 == maxc.unsqueeze(-3)
    _, max_indices = ((maxc_mask.cumsum(-3) == 1) & maxc_mask).max(-3)
    minc = images01.min(-3)[0]
    v = maxc
    deltac = maxc - minc
    s = deltac / (v + eps)
    deltac = torch.where(deltac == 0, torch.ones_like(deltac), deltac)
    maxc_tmp = maxc.unsqueeze(-3) - images01
    rc, gc, bc = maxc_tmp[..., 0, :, :], maxc_tmp[..., 1, :, :], maxc_tmp[..., 2, :, :]
    h = torch.stack([bc - gc, 2.0 * deltac + rc - bc, 4.0 * deltac + gc - rc], dim=-3)
    h = torch.gather(h, dim=-3, index=max_indices[..., None, :, :]).squeeze(-3)
    h = h / deltac
    h = (h / 6.0) % 1.0
    h = 2 * math.pi * h
    return torch.stack([h, s, v], dim=-3)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """kornia 0.5.8 ``hsv_to_rgb``: HSV (``H`` in radians, any real value) → RGB."""
    h = hsv[..., 0, :, :] / (2 * math.pi)
    s = hsv[..., 1, :, :]
    v = hsv[..., 2, :, :]
    hi = torch.floor(h * 6) % 6
    f = ((h * 6) % 6) - hi
    p = v * (1.0 - s)
    q = v * (1.0 - f * s)
    t = v * (1.0 - (1.0 - f) * s)
    hi = hi.long()
    indices = torch.stack([hi, hi + 6, hi + 12], dim=-3)
    out = torch.stack((v, q, p, p, t, v, t, v, v, q, p, p, p, p, t, v, v, q), dim=-3)
    return torch.gather(out, -3, indices)


def _per_image(values: Tensor, images: Tensor) -> Tensor:
    return values.to(images.dtype).view(-1, *([1] * (images.dim() - 1)))


def adjust_brightness(images01: Tensor, shift: Tensor) -> Tensor:
    """kornia 0.5.8 brightness: ``clamp(x + shift, 0, 1)`` with one additive ``shift`` per image."""
    return torch.clamp(images01 + _per_image(shift, images01), 0.0, 1.0)


def adjust_contrast(images01: Tensor, factor: Tensor) -> Tensor:
    """kornia 0.5.8 contrast: ``clamp(x · factor, 0, 1)`` per image, without mean subtraction."""
    return torch.clamp(images01 * _per_image(factor, images01), 0.0, 1.0)


def adjust_saturation(images01: Tensor, factor: Tensor) -> Tensor:
    """kornia 0.5.8 saturation: HSV ``S ← clamp(S · factor, 0, 1)`` per image."""
    h, s, v = torch.chunk(rgb_to_hsv(images01), chunks=3, dim=-3)
    s = torch.clamp(s * _per_image(factor, s), 0.0, 1.0)
    return hsv_to_rgb(torch.cat([h, s, v], dim=-3))


def adjust_hue(images01: Tensor, shift_radians: Tensor) -> Tensor:
    """kornia 0.5.8 hue: HSV ``H ← fmod(H + shift, 2π)`` per image (``shift`` in radians)."""
    h, s, v = torch.chunk(rgb_to_hsv(images01), chunks=3, dim=-3)
    h = torch.fmod(h + _per_image(shift_radians, h), 2 * math.pi)
    return hsv_to_rgb(torch.cat([h, s, v], dim=-3))


@dataclass(frozen=True)
class ColorJitterParams:
    """Per-image factors (shape ``(N,)``) and the one order of the four operations (shape ``(4,)``).

    ``brightness`` is the additive shift, ``hue`` a fraction of a turn (× 2π on use); ``order`` holds
    0 = brightness, 1 = contrast, 2 = saturation, 3 = hue.
    """

    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    order: Tensor


def sample_color_jitter(
    n: int, generator: torch.Generator, *, strength: float = JITTER_STRENGTH
) -> ColorJitterParams:
    """Draw kornia 0.5.8 ``ColorJitter(s, s, s, s)`` parameters for ``n`` images (ddb.md §3, atp.md §4).

    brightness ``U(−s, s)`` (kornia's factor ``U(1−s, 1+s)`` minus 1), contrast and saturation
    ``U(1−s, 1+s)``, hue ``U(−s, s)`` turns, order a random permutation of the four operations.
    """

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)

    low = max(0.0, 1.0 - strength)
    return ColorJitterParams(
        brightness=uniform(low, 1.0 + strength) - 1.0,
        contrast=uniform(low, 1.0 + strength),
        saturation=uniform(low, 1.0 + strength),
        hue=uniform(-strength, strength),
        order=torch.randperm(4, generator=generator),
    )


def apply_color_jitter(images01: Tensor, params: ColorJitterParams) -> Tensor:
    """Apply the four kornia 0.5.8 adjustments to ``[0, 1]`` images in ``params.order``."""
    device = images01.device
    operations = (
        lambda x: adjust_brightness(x, params.brightness.to(device)),
        lambda x: adjust_contrast(x, params.contrast.to(device)),
        lambda x: adjust_saturation(x, params.saturation.to(device)),
        lambda x: adjust_hue(x, params.hue.to(device) * 2 * math.pi),
    )
    out = images01
    for index in params.order.tolist():
        out = operations[index](out)
    return out


def color_jitter(
    images: Tensor,
    generator: torch.Generator,
    *,
    strength: float = JITTER_STRENGTH,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """Colour-jitter normalised images (N×3×H×W): de-normalise, jitter per image, re-normalise."""
    params = sample_color_jitter(images.shape[0], generator, strength=strength)
    return renormalize(apply_color_jitter(denormalize(images, mean, std), params), mean, std)


# ---------------------------------------------------------------- Gaussian blur (kornia 0.5.8)


def blur_kernel_size(side: int) -> int:
    """DACS kernel size for a side length: ``floor(ceil(0.1·s) − 0.5 + ceil(0.1·s) mod 2)``, always odd."""
    c = math.ceil(0.1 * side)
    return int(math.floor(c - 0.5 + c % 2))


def blur_kernel_shape(
    channels: int, height: int, width: int, *, horizontal_only_blur: bool = False
) -> tuple[int, int]:
    """The (ky, kx) kernel of the strong-augmentation blur for a C×H×W image.

    Intended (DACS, ATP): ``(k(H), k(W))``. DDB released (``horizontal_only_blur=True``): the sizes are
    computed from ``shape[1] = C`` and ``shape[2] = H`` of the unsqueezed image, i.e. ``(k(C), k(H))``,
    which is ``(1, k(H))`` for RGB.
    """
    if horizontal_only_blur:
        return blur_kernel_size(channels), blur_kernel_size(height)
    return blur_kernel_size(height), blur_kernel_size(width)


def gaussian_kernel1d(
    size: int, sigma: float, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """kornia's normalised 1-D Gaussian: ``exp(−x²/2σ²)`` over ``x = −size//2 … size//2``, summing to 1."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    if size % 2 == 0:
        x = x + 0.5
    gauss = torch.exp(-(x**2) / (2 * sigma**2))
    return (gauss / gauss.sum()).to(dtype=dtype, device=device)


def gaussian_blur(images: Tensor, sigma: float, kernel_size: tuple[int, int]) -> Tensor:
    """kornia 0.5.8 ``GaussianBlur2d(kernel_size, (σ, σ))`` on N×C×H×W with reflect padding.

    The 2-D kernel is the outer product of two 1-D kernels, applied separably (same result up to float
    rounding). Kernel sizes must be odd and smaller than twice the padded side (reflect padding).
    """
    ky, kx = kernel_size
    if ky % 2 == 0 or kx % 2 == 0:
        raise ValueError(f"blur kernel sizes must be odd, got {kernel_size}")
    n, c, h, w = images.shape
    out = images.reshape(n * c, 1, h, w)
    if ky > 1:
        k = gaussian_kernel1d(ky, sigma, dtype=images.dtype, device=images.device).view(1, 1, ky, 1)
        out = F.conv2d(F.pad(out, (0, 0, ky // 2, ky // 2), mode="reflect"), k)
    if kx > 1:
        k = gaussian_kernel1d(kx, sigma, dtype=images.dtype, device=images.device).view(1, 1, 1, kx)
        out = F.conv2d(F.pad(out, (kx // 2, kx // 2, 0, 0), mode="reflect"), k)
    return out.reshape(n, c, h, w)


def sample_blur_sigma(generator: torch.Generator) -> float:
    """``σ ~ U(0.15, 1.15)``, one per blur call."""
    low, high = BLUR_SIGMA_RANGE
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


# ---------------------------------------------------------------- the strong augmentation


@dataclass(frozen=True)
class StrongAugSwitches:
    """Whether colour jitter and blur are on (DACS ``color_jitter > p`` and ``blur > 0.5`` draws)."""

    jitter: bool
    blur: bool


def sample_strong_aug_switches(
    generator: torch.Generator,
    *,
    jitter_threshold: float = JITTER_THRESHOLD,
    blur_threshold: float = BLUR_THRESHOLD,
) -> StrongAugSwitches:
    """Draw the two on/off switches: jitter when ``U > 0.2``, blur when ``U > 0.5`` (two U(0,1) draws)."""
    u_jitter, u_blur = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
    return StrongAugSwitches(jitter=u_jitter > jitter_threshold, blur=u_blur > blur_threshold)


@full_precision
def strong_augment(
    images: Tensor,
    generator: torch.Generator,
    switches: StrongAugSwitches,
    *,
    strength: float = JITTER_STRENGTH,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    horizontal_only_blur: bool = False,
) -> Tensor:
    """One strong-augmentation call on normalised N×3×H×W images with given switches (atp.md §4).

    Jitter factors are drawn per image, σ once for the call. ``horizontal_only_blur`` is DDB's released
    kernel (module docstring); off by default.
    """
    if switches.jitter:
        images = color_jitter(images, generator, strength=strength, mean=mean, std=std)
    if switches.blur:
        sigma = sample_blur_sigma(generator)
        _, c, h, w = images.shape
        images = gaussian_blur(
            images, sigma, blur_kernel_shape(c, h, w, horizontal_only_blur=horizontal_only_blur)
        )
    return images


@full_precision
def strong_augment_each(
    images: Tensor,
    generator: torch.Generator,
    *,
    strength: float = JITTER_STRENGTH,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    horizontal_only_blur: bool = False,
) -> Tensor:
    """DDB's per-sample post-processing (ddb.md §3): each image draws its own switches, factors and σ."""
    out = []
    for image in images:
        switches = sample_strong_aug_switches(generator)
        out.append(
            strong_augment(
                image.unsqueeze(0),
                generator,
                switches,
                strength=strength,
                mean=mean,
                std=std,
                horizontal_only_blur=horizontal_only_blur,
            )
        )
    return torch.cat(out)
