"""Training-time transforms on numpy arrays (OpenCV), with mmseg's semantics.

Images are uint8 RGB H×W×3, labels uint8 H×W trainIds (255 = ignore) or ``None`` for unlabelled
targets. Every random transform draws from the ``np.random.Generator`` it is given, in a fixed order,
so a pipeline run with a seeded generator is reproducible. The rules follow mmseg 0.x as used by
DAFormer and its descendants (``shared/datasets.md`` §9): ``Resize`` with ``keep_ratio``,
``RandomCrop`` with ``cat_max_ratio``, ``RandomFlip``, ``PhotoMetricDistortion``, ``Pad``,
``Normalize``.

A recipe describes a pipeline as a list of one-key steps, built by :func:`build_pipeline`::

    - resize: [1280, 720]                       # (long, short) edge bounds, keep ratio
    - random_crop: {size: [512, 512], cat_max_ratio: 0.75}   # (h, w)
    - flip: 0.5
    - photometric: true
    - pad: [512, 512]                           # (h, w); image 0, label 255
    - normalize: true                           # ImageNet mean/std -> float32 C×H×W (last step)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from adaptseg.data.labels import IGNORE_INDEX
from adaptseg.errors import UserError

IMAGENET_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
IMAGENET_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)

Pair = tuple[np.ndarray, np.ndarray | None]


def _check_pair(img: np.ndarray, label: np.ndarray | None) -> None:
    if label is not None and label.shape[:2] != img.shape[:2]:
        raise ValueError(f"image {img.shape[:2]} and label {label.shape[:2]} differ in size")


def keep_ratio_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv ``rescale_size``: the (h, w) that fits (h, w) inside ``scale`` = (long, short) edge bounds.

    ``s = min(long / max(h, w), short / min(h, w))``; each side becomes ``int(side * s + 0.5)``.
    """
    long_edge, short_edge = max(scale), min(scale)
    s = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(h * s + 0.5), int(w * s + 0.5)


def resize_keep_ratio(
    img: np.ndarray,
    label: np.ndarray | None = None,
    scale: tuple[int, int] = (2048, 1024),
    *,
    ratio_range: tuple[float, float] | None = None,
    rng: np.random.Generator | None = None,
) -> Pair:
    """Resize so the image fits ``scale`` = (long, short) keeping its aspect ratio (mmseg ``Resize``).

    With ``ratio_range`` the scale is first multiplied by a ratio drawn uniformly from the range
    (mmseg ``random_sample_ratio``: ``int(edge * ratio)``), which needs ``rng``. The image is resized
    bilinearly, the label with nearest neighbour.
    """
    _check_pair(img, label)
    if ratio_range is not None:
        if rng is None:
            raise ValueError("resize_keep_ratio: ratio_range needs an rng")
        lo, hi = ratio_range
        ratio = rng.random() * (hi - lo) + lo
        scale = (int(scale[0] * ratio), int(scale[1] * ratio))
    new_h, new_w = keep_ratio_size(img.shape[0], img.shape[1], scale)
    if (new_h, new_w) == img.shape[:2]:
        return img, label
    img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if label is not None:
        label = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    return img, label


def _crop_box(
    shape: tuple[int, ...], size: tuple[int, int], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    margin_h = max(shape[0] - size[0], 0)
    margin_w = max(shape[1] - size[1], 0)
    top = int(rng.integers(0, margin_h + 1))
    left = int(rng.integers(0, margin_w + 1))
    return top, top + size[0], left, left + size[1]


def _crop_ok(label: np.ndarray, cat_max_ratio: float, ignore_index: int) -> bool:
    values, counts = np.unique(label, return_counts=True)
    counts = counts[values != ignore_index]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def random_crop(
    img: np.ndarray,
    label: np.ndarray | None,
    size: tuple[int, int],
    rng: np.random.Generator,
    cat_max_ratio: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
) -> Pair:
    """Crop a random ``size`` = (h, w) window (mmseg ``RandomCrop``); smaller sides are kept whole.

    With ``cat_max_ratio < 1`` and a label, a window is redrawn up to 10 times until it holds at
    least two non-ignored classes and no class covers ``cat_max_ratio`` or more of its non-ignored
    pixels; after 10 rejections the 11th window is used unchecked, exactly as mmseg does. Each
    window draws its top offset, then its left offset.
    """
    _check_pair(img, label)
    box = _crop_box(img.shape, size, rng)
    if cat_max_ratio < 1.0 and label is not None:
        for _ in range(10):
            top, bottom, left, right = box
            if _crop_ok(label[top:bottom, left:right], cat_max_ratio, ignore_index):
                break
            box = _crop_box(img.shape, size, rng)
    top, bottom, left, right = box
    img = img[top:bottom, left:right]
    if label is not None:
        label = label[top:bottom, left:right]
    return img, label


def random_flip(img: np.ndarray, label: np.ndarray | None, rng: np.random.Generator, p: float = 0.5) -> Pair:
    """Mirror left-right with probability ``p`` (one draw: ``rng.random() < p``)."""
    _check_pair(img, label)
    if rng.random() < p:
        img = img[:, ::-1]
        if label is not None:
            label = label[:, ::-1]
    return img, label


def pad_to(
    img: np.ndarray,
    label: np.ndarray | None,
    size: tuple[int, int],
    img_value: float = 0,
    label_value: int = IGNORE_INDEX,
) -> Pair:
    """Pad at the bottom and right up to ``size`` = (h, w) (mmseg ``Pad``); larger sides are left as they are."""
    _check_pair(img, label)
    pad_h = max(size[0] - img.shape[0], 0)
    pad_w = max(size[1] - img.shape[1], 0)
    if pad_h == 0 and pad_w == 0:
        return img, label
    widths = ((0, pad_h), (0, pad_w))
    img = np.pad(img, widths + ((0, 0),) * (img.ndim - 2), constant_values=img_value)
    if label is not None:
        label = np.pad(label, widths, constant_values=label_value)
    return img, label


def _scale_shift(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    # mmseg PhotoMetricDistortion.convert: float, clip to [0, 255], truncate to uint8.
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(
    img: np.ndarray,
    rng: np.random.Generator,
    brightness_delta: int = 32,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: int = 18,
) -> np.ndarray:
    """mmseg ``PhotoMetricDistortion`` on a uint8 RGB image, with its draws in its order.

    1. brightness: with p=0.5 add ``U(-delta, delta)``;
    2. ``mode`` = a coin; mode 1 applies contrast (p=0.5, multiply by ``U(contrast_range)``) now;
    3. saturation: with p=0.5 scale HSV S by ``U(saturation_range)``;
    4. hue: with p=0.5 shift HSV H (OpenCV's 0–179) by an integer in ``[-hue_delta, hue_delta)``
       (numpy ``randint``'s exclusive upper bound, as in mmseg), modulo 180;
    5. mode 0 applies contrast now.

    Each step clips to [0, 255] and truncates to uint8. RGB input gives the same HSV as mmseg's BGR.
    """
    img = np.ascontiguousarray(img)
    if rng.integers(2):
        img = _scale_shift(img, beta=rng.uniform(-brightness_delta, brightness_delta))
    mode = rng.integers(2)
    if mode == 1 and rng.integers(2):
        img = _scale_shift(img, alpha=rng.uniform(*contrast_range))
    if rng.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[:, :, 1] = _scale_shift(hsv[:, :, 1], alpha=rng.uniform(*saturation_range))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        shift = int(rng.integers(-hue_delta, hue_delta))
        hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int64) + shift) % 180).astype(np.uint8)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if mode == 0 and rng.integers(2):
        img = _scale_shift(img, alpha=rng.uniform(*contrast_range))
    return img


def normalize(
    img: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """``(img - mean) / std`` per RGB channel, as float32 C×H×W (the model's input layout)."""
    mean_a = np.asarray(mean, dtype=np.float32)
    std_a = np.asarray(std, dtype=np.float32)
    out = (img.astype(np.float32) - mean_a) / std_a
    return np.ascontiguousarray(out.transpose(2, 0, 1))


# ---------------------------------------------------------------------------------------------
# Pipeline steps: small callables ``step(img, label, rng) -> (img, label)``.


@dataclass(frozen=True)
class Resize:
    scale: tuple[int, int]
    ratio_range: tuple[float, float] | None = None

    def __call__(self, img: np.ndarray, label: np.ndarray | None, rng: np.random.Generator) -> Pair:
        return resize_keep_ratio(img, label, self.scale, ratio_range=self.ratio_range, rng=rng)


@dataclass(frozen=True)
class RandomCrop:
    size: tuple[int, int]
    cat_max_ratio: float = 1.0

    def __call__(self, img: np.ndarray, label: np.ndarray | None, rng: np.random.Generator) -> Pair:
        return random_crop(img, label, self.size, rng, self.cat_max_ratio)


@dataclass(frozen=True)
class RandomFlip:
    p: float = 0.5

    def __call__(self, img: np.ndarray, label: np.ndarray | None, rng: np.random.Generator) -> Pair:
        return random_flip(img, label, rng, self.p)


@dataclass(frozen=True)
class PhotoMetricDistortion:
    brightness_delta: int = 32
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18

    def __call__(self, img: np.ndarray, label: np.ndarray | None, rng: np.random.Generator) -> Pair:
        img = photometric_distortion(
            img, rng, self.brightness_delta, self.contrast_range, self.saturation_range, self.hue_delta
        )
        return img, label


@dataclass(frozen=True)
class Pad:
    size: tuple[int, int]
    img_value: float = 0
    label_value: int = IGNORE_INDEX

    def __call__(self, img: np.ndarray, label: np.ndarray | None, rng: np.random.Generator) -> Pair:
        return pad_to(img, label, self.size, self.img_value, self.label_value)


@dataclass(frozen=True)
class Normalize:
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, img: np.ndarray, label: np.ndarray | None, rng: np.random.Generator) -> Pair:
        return normalize(img, self.mean, self.std), label


Step = Callable[[np.ndarray, np.ndarray | None, np.random.Generator], Pair]


class Compose:
    """Apply steps in order to ``(img, label)``, all drawing from one generator."""

    def __init__(self, steps: Sequence[Step]):
        self.steps = list(steps)

    def __call__(self, img: np.ndarray, label: np.ndarray | None, rng: np.random.Generator) -> Pair:
        for step in self.steps:
            img, label = step(img, label, rng)
        if label is not None:
            label = np.ascontiguousarray(label)
        return np.ascontiguousarray(img), label

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(s) for s in self.steps) + "])"


# ---------------------------------------------------------------------------------------------
# Building a pipeline from a recipe.


def _pair(value: Any, step: str, what: str, kind: type = int) -> tuple:
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        try:
            return tuple(kind(v) for v in value)
        except (TypeError, ValueError):
            pass
    raise UserError(
        f"pipeline step {step!r}: {what} must be a pair of numbers, got {value!r}",
        fix=f"write e.g. {step}: [512, 512]",
    )


def _options(value: Any, step: str, main: str, allowed: Sequence[str]) -> dict[str, Any]:
    """A step's options: a mapping (keys checked) or a bare value meaning ``{main: value}``."""
    if not isinstance(value, Mapping):
        return {main: value}
    unknown = [k for k in value if k not in allowed]
    if unknown:
        near = difflib.get_close_matches(str(unknown[0]), allowed, n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"valid keys: {', '.join(allowed)}"
        raise UserError(f"pipeline step {step!r}: unknown option {unknown[0]!r}", fix=hint)
    return dict(value)


def _build_resize(value: Any) -> Step:
    opts = _options(value, "resize", "scale", ("scale", "ratio_range"))
    ratio = opts.get("ratio_range")
    return Resize(
        _pair(opts.get("scale"), "resize", "scale"),
        None if ratio is None else _pair(ratio, "resize", "ratio_range", float),
    )


def _build_crop(value: Any) -> Step:
    opts = _options(value, "random_crop", "size", ("size", "cat_max_ratio"))
    return RandomCrop(_pair(opts.get("size"), "random_crop", "size"), float(opts.get("cat_max_ratio", 1.0)))


def _build_flip(value: Any) -> Step | None:
    opts = _options(value, "flip", "p", ("p",))
    p = opts.get("p", 0.5)
    if p is True:
        p = 0.5
    if p is False or p is None:
        return None
    if not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
        raise UserError(
            f"pipeline step 'flip': probability must be in [0, 1], got {p!r}", fix="write e.g. flip: 0.5"
        )
    return RandomFlip(float(p))


def _build_photometric(value: Any) -> Step | None:
    if value is False or value is None:
        return None
    if value is True:
        return PhotoMetricDistortion()
    fields = ("brightness_delta", "contrast_range", "saturation_range", "hue_delta")
    opts = _options(value, "photometric", "enabled", fields)
    kwargs: dict[str, Any] = {}
    for key in ("contrast_range", "saturation_range"):
        if key in opts:
            kwargs[key] = _pair(opts[key], "photometric", key, float)
    for key in ("brightness_delta", "hue_delta"):
        if key in opts:
            kwargs[key] = int(opts[key])
    return PhotoMetricDistortion(**kwargs)


def _build_pad(value: Any) -> Step:
    opts = _options(value, "pad", "size", ("size", "img_value", "label_value"))
    return Pad(
        _pair(opts.get("size"), "pad", "size"),
        float(opts.get("img_value", 0)),
        int(opts.get("label_value", IGNORE_INDEX)),
    )


def _build_normalize(value: Any) -> Step | None:
    if value is False or value is None:
        return None
    if value is True:
        return Normalize()
    opts = _options(value, "normalize", "enabled", ("mean", "std"))
    mean = tuple(float(v) for v in opts.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in opts.get("std", IMAGENET_STD))
    if len(mean) != 3 or len(std) != 3:
        raise UserError("pipeline step 'normalize': mean and std need 3 values (RGB)")
    return Normalize(mean, std)  # type: ignore[arg-type]


_BUILDERS: dict[str, Callable[[Any], Step | None]] = {
    "resize": _build_resize,
    "random_crop": _build_crop,
    "flip": _build_flip,
    "photometric": _build_photometric,
    "pad": _build_pad,
    "normalize": _build_normalize,
}


def build_pipeline(spec: Sequence[Mapping[str, Any]]) -> Compose:
    """Build a :class:`Compose` from a recipe's list of one-key steps (see the module docstring).

    Unknown step names and options raise :class:`UserError` with the nearest valid name; ``normalize``
    (which changes the image to float32 C×H×W) must be the last step.
    """
    steps: list[Step] = []
    for i, entry in enumerate(spec):
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise UserError(
                f"pipeline step {i + 1} must be a mapping with one key, got {entry!r}",
                fix="write e.g. - flip: 0.5",
            )
        ((name, value),) = entry.items()
        builder = _BUILDERS.get(name)
        if builder is None:
            near = difflib.get_close_matches(str(name), list(_BUILDERS), n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"valid steps: {', '.join(_BUILDERS)}"
            raise UserError(f"unknown pipeline step {name!r}", fix=hint)
        if steps and isinstance(steps[-1], Normalize):
            raise UserError(
                f"pipeline step {name!r} comes after 'normalize'", fix="make normalize the last step"
            )
        step = builder(value)
        if step is not None:
            steps.append(step)
    return Compose(steps)
