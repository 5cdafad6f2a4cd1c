"""Pictures of an evaluation, drawn with OpenCV (no plotting library): a confusion-matrix heatmap and a
per-class IoU bar chart that can set several models side by side (e.g. source-only against adapted).

Both return uint8 RGB images; :func:`write_plots` writes them as PNGs. Everything is drawn at twice
the final size and shrunk with area interpolation, which gives smooth lines and legible small text.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from adaptseg.data.labels import CLASSES, PALETTE
from adaptseg.eval.confusion import ConfusionMatrix
from adaptseg.io import write_png

if TYPE_CHECKING:
    from adaptseg.eval.report import Report

Color = tuple[int, int, int]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SS = 2  # supersampling factor
WHITE: Color = (255, 255, 255)
BLACK: Color = (20, 20, 20)
GREY: Color = (128, 128, 128)
LIGHT_GREY: Color = (225, 225, 225)
# matplotlib's "Blues" at 0, .25, .5, .75, 1 (RGB)
_BLUES = np.array(
    [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]], np.float64
)
# distinct colours for the models in a comparison (Tableau 10, RGB)
MODEL_COLORS: tuple[Color, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
)  # fmt: skip


class _Canvas:
    """A white RGB canvas addressed in final-image pixels, drawn at ``_SS``× resolution."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.img = np.full((height * _SS, width * _SS, 3), 255, np.uint8)

    @staticmethod
    def text_size(text: str, scale: float, thickness: int = 1) -> tuple[float, float]:
        (w, h), _ = cv2.getTextSize(text, _FONT, scale * _SS, thickness * _SS)
        return w / _SS, h / _SS

    def rect(self, x0: float, y0: float, x1: float, y1: float, color: Color, thickness: int = -1) -> None:
        p0 = (round(x0 * _SS), round(y0 * _SS))
        p1 = (round(x1 * _SS) - 1, round(y1 * _SS) - 1)
        cv2.rectangle(self.img, p0, p1, color, thickness if thickness < 0 else thickness * _SS, cv2.LINE_AA)

    def line(self, x0: float, y0: float, x1: float, y1: float, color: Color, thickness: int = 1) -> None:
        p0, p1 = (round(x0 * _SS), round(y0 * _SS)), (round(x1 * _SS), round(y1 * _SS))
        cv2.line(self.img, p0, p1, color, thickness * _SS, cv2.LINE_AA)

    def text(
        self,
        text: str,
        x: float,
        y: float,
        scale: float = 0.5,
        color: Color = BLACK,
        thickness: int = 1,
        align: str = "left",
        valign: str = "middle",
    ) -> None:
        """Draw ``text`` anchored at (x, y): ``align`` left/center/right, ``valign`` top/middle/bottom."""
        w, h = self.text_size(text, scale, thickness)
        x0 = {"left": x, "center": x - w / 2, "right": x - w}[align]
        baseline = {"top": y + h, "middle": y + h / 2, "bottom": y}[valign]
        org = (round(x0 * _SS), round(baseline * _SS))
        cv2.putText(self.img, text, org, _FONT, scale * _SS, color, thickness * _SS, cv2.LINE_AA)

    def vtext(
        self, text: str, x: float, y: float, scale: float = 0.5, color: Color = BLACK, align: str = "top"
    ) -> None:
        """Draw ``text`` rotated 90° counter-clockwise, centred on column x; ``align`` top: starts at y
        and reads upwards from y + width; ``center``: centred on y."""
        w, h = self.text_size(text, scale)
        pad = 4
        strip = _Canvas(math.ceil(w) + 2 * pad, math.ceil(h) + 2 * pad)
        strip.text(text, pad, pad + h / 2, scale, color)
        rotated = cv2.rotate(strip.img, cv2.ROTATE_90_COUNTERCLOCKWISE)
        rh, rw = rotated.shape[:2]
        top = round(y * _SS) - (rh // 2 if align == "center" else 0)
        left = round(x * _SS) - rw // 2
        self._paste_darker(rotated, top, left)

    def _paste_darker(self, patch: np.ndarray, top: int, left: int) -> None:
        h, w = patch.shape[:2]
        t0, l0 = max(top, 0), max(left, 0)
        t1, l1 = min(top + h, self.img.shape[0]), min(left + w, self.img.shape[1])
        if t1 <= t0 or l1 <= l0:
            return
        region = self.img[t0:t1, l0:l1]
        np.minimum(region, patch[t0 - top : t1 - top, l0 - left : l1 - left], out=region)

    def finish(self) -> np.ndarray:
        return cv2.resize(self.img, (self.width, self.height), interpolation=cv2.INTER_AREA)


def _blues(value: float) -> Color:
    """Colour of ``value`` in [0, 1] on a white-to-dark-blue scale."""
    pos = float(np.clip(value, 0.0, 1.0)) * (len(_BLUES) - 1)
    i = min(int(pos), len(_BLUES) - 2)
    rgb = _BLUES[i] + (pos - i) * (_BLUES[i + 1] - _BLUES[i])
    return tuple(int(round(c)) for c in rgb)  # type: ignore[return-value]


def _row_normalised(cm: ConfusionMatrix | np.ndarray) -> np.ndarray:
    """Rows divided by the ground-truth pixel count (misses on no class included); NaN for empty rows."""
    if isinstance(cm, ConfusionMatrix):
        matrix, totals = cm.matrix, cm.counts.sum(axis=1)
    else:
        matrix = np.asarray(cm)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"a confusion matrix must be square, got shape {matrix.shape}")
        totals = matrix.sum(axis=1)
    out = np.full(matrix.shape, np.nan)
    np.divide(matrix, totals[:, None], out=out, where=totals[:, None] > 0)
    return out


def confusion_matrix_image(
    cm: ConfusionMatrix | np.ndarray, class_names: Sequence[str] | None = None
) -> np.ndarray:
    """A row-normalised confusion-matrix heatmap (rows: ground truth, columns: prediction) as RGB uint8.

    Each cell shows the percentage of the row's ground-truth pixels; rows of classes absent from the
    ground truth are grey. About 1000 px wide for the 19 Cityscapes classes.
    """
    norm = _row_normalised(cm)
    n = norm.shape[0]
    names = (
        list(class_names)
        if class_names is not None
        else list(CLASSES if n == len(CLASSES) else map(str, range(n)))
    )
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}-class matrix")

    cell = int(np.clip(760 // max(n, 1), 24, 48))
    label_scale, cell_scale = 0.5, 0.36 if cell < 40 else 0.42
    label_w = max(_Canvas.text_size(s, label_scale)[0] for s in names)
    left = 40 + label_w + 12
    top = 70
    bottom = top + n * cell
    width = int(left + n * cell + 125)
    height = int(bottom + label_w + 60)
    cv = _Canvas(width, height)

    cv.text("Confusion matrix - % of each ground-truth class", width / 2, 28, 0.65, align="center")
    for g in range(n):
        y0 = top + g * cell
        cv.text(names[g], left - 10, y0 + cell / 2, label_scale, align="right")
        for p in range(n):
            x0 = left + p * cell
            value = norm[g, p]
            if np.isnan(value):
                cv.rect(x0, y0, x0 + cell, y0 + cell, LIGHT_GREY)
                continue
            cv.rect(x0, y0, x0 + cell, y0 + cell, _blues(value))
            pct = 100 * value
            if pct >= 0.5:
                ink = WHITE if value > 0.45 else BLACK
                cv.text(f"{pct:.0f}", x0 + cell / 2, y0 + cell / 2, cell_scale, ink, align="center")
    for i in range(n + 1):  # thin grid
        cv.line(left + i * cell, top, left + i * cell, bottom, WHITE)
        cv.line(left, top + i * cell, left + n * cell, top + i * cell, WHITE)
    cv.rect(left, top, left + n * cell, bottom, GREY, thickness=1)
    for p in range(n):
        cv.vtext(names[p], left + p * cell + cell / 2, bottom + 8, label_scale)
    cv.text("prediction", left + n * cell / 2, height - 22, 0.55, GREY, align="center")
    cv.vtext("ground truth", 16, top + n * cell / 2, 0.55, GREY, align="center")
    _colour_bar(cv, left + n * cell + 30, top, n * cell)
    return cv.finish()


def _colour_bar(cv: _Canvas, x: float, top: float, height: float, width: float = 18) -> None:
    steps = int(height)
    for i in range(steps):
        y = top + i
        cv.rect(x, y, x + width, y + 1.5, _blues(1 - i / max(steps - 1, 1)))
    cv.rect(x, top, x + width, top + height, GREY, thickness=1)
    for frac in (0, 0.25, 0.5, 0.75, 1):
        y = top + (1 - frac) * height
        cv.line(x + width, y, x + width + 4, y, GREY)
        cv.text(f"{100 * frac:.0f}%", x + width + 7, y, 0.42, align="left")


def iou_bar_chart(
    per_class: Mapping[str, float],
    compare: Mapping[str, Mapping[str, float]] | None = None,
    *,
    name: str = "model",
    title: str = "Per-class IoU",
    excluded: Collection[str] = (),
    mean_name: str = "the mean",
) -> np.ndarray:
    """Horizontal per-class IoU bars (percent, 0–100) as RGB uint8.

    ``per_class`` is the model being reported; ``compare`` adds other models ({name: per_class}) as
    bars beside it in each class's group, with a legend. Alone, bars take the class colours. NaN (or a
    class missing from a compared model) is written "n/a". Classes in ``excluded`` (outside the
    protocol's mean, named ``mean_name`` in the footnote) are starred and greyed.
    """
    series: dict[str, Mapping[str, float]] = {name: per_class, **(compare or {})}
    classes = list(per_class)
    multi = len(series) > 1
    bar_h = 13 if multi else 18
    group_gap = 9 if multi else 6
    group_h = bar_h * len(series) + group_gap
    label_scale, value_scale = 0.5, 0.42

    label_w = max(_Canvas.text_size(f"{c} *", label_scale)[0] for c in classes)
    left = 20 + label_w + 12
    plot_w = 620
    top = 58 + (24 * math.ceil(len(series) / 3) + 8 if multi else 0)
    bottom = top + group_h * len(classes)
    width = int(left + plot_w + 70)
    height = int(bottom + (80 if excluded else 60))
    cv = _Canvas(width, height)

    cv.text(title, width / 2, 24, 0.65, align="center")
    if multi:
        _legend(cv, list(series), left, 54)
    for tick in range(0, 101, 20):
        x = left + plot_w * tick / 100
        cv.line(x, top - 4, x, bottom, LIGHT_GREY if tick else GREY)
        cv.text(str(tick), x, bottom + 14, 0.42, GREY, align="center")
    cv.text("IoU, %", left + plot_w / 2, bottom + 38, 0.5, GREY, align="center")

    palette = {c: tuple(int(v) for v in PALETTE[i]) for i, c in enumerate(CLASSES)}
    for k, cls in enumerate(classes):
        y_group = top + k * group_h + group_gap / 2
        starred = cls in excluded
        label, ink = (f"{cls} *", GREY) if starred else (cls, BLACK)
        cv.text(label, left - 10, y_group + bar_h * len(series) / 2, label_scale, ink, align="right")
        for m, values in enumerate(series.values()):
            y0 = y_group + m * bar_h
            value = float(values.get(cls, float("nan")))
            if math.isnan(value):
                cv.text("n/a", left + 6, y0 + bar_h / 2, value_scale, GREY)
                continue
            color = MODEL_COLORS[m % len(MODEL_COLORS)] if multi else palette.get(cls, MODEL_COLORS[0])
            x1 = left + plot_w * float(np.clip(value, 0, 100)) / 100
            if x1 > left:
                cv.rect(left, y0 + 1, x1, y0 + bar_h - 1, color)
                cv.rect(left, y0 + 1, x1, y0 + bar_h - 1, _darker(color), thickness=1)
            cv.text(f"{value:.1f}", x1 + 5, y0 + bar_h / 2, value_scale, BLACK)
    cv.line(left, top - 4, left, bottom, GREY)
    if excluded:
        cv.text(f"* not in {mean_name}", left, height - 14, 0.45, GREY)
    return cv.finish()


def _darker(color: Color, factor: float = 0.7) -> Color:
    return tuple(int(c * factor) for c in color)  # type: ignore[return-value]


def _legend(cv: _Canvas, names: list[str], x: float, y: float) -> None:
    col_w = 220
    for i, model in enumerate(names):
        cx, cy = x + (i % 3) * col_w, y + (i // 3) * 24
        color = MODEL_COLORS[i % len(MODEL_COLORS)]
        cv.rect(cx, cy - 7, cx + 14, cy + 7, color)
        cv.text(model, cx + 20, cy, 0.48)


def write_plots(
    report: Report,
    cm: ConfusionMatrix,
    out_dir: str | Path,
    compare: Mapping[str, Mapping[str, float]] | None = None,
    name: str = "model",
) -> dict[str, Path]:
    """Write ``confusion_matrix.png`` and ``per_class_iou.png`` into ``out_dir`` (atomically).

    ``compare`` ({model name: per-class IoU %}) adds other models' bars to the IoU chart.
    Returns {"confusion_matrix": path, "per_class_iou": path}.
    """
    out_dir = Path(out_dir)
    names = list(report.per_class)
    excluded = [c for c in names if c not in report.protocol_classes]
    miou = "n/a" if math.isnan(report.miou) else f"{report.miou:.1f}"
    title = f"Per-class IoU - {name}: {report.miou_name} {miou}"
    paths = {
        "confusion_matrix": out_dir / "confusion_matrix.png",
        "per_class_iou": out_dir / "per_class_iou.png",
    }
    write_png(paths["confusion_matrix"], confusion_matrix_image(cm, names))
    chart = iou_bar_chart(
        report.per_class, compare, name=name, title=title, excluded=excluded, mean_name=report.miou_name
    )
    write_png(paths["per_class_iou"], chart)
    return paths
