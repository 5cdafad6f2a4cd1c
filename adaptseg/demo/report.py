"""The demo's report: colour overlays, the per-class IoU chart and ``report.md`` (OpenCV + NumPy pictures).

* :func:`overlay_strip` — one val image as ``image | ground truth | source-only | adapted`` tiles; every
  label map is blended over the image in the Cityscapes palette (ignored pixels show the bare image), with
  a caption strip on top.
* :func:`changed_most` — the classes whose IoU changed most from one model to another.
* :func:`write_report` — the PNGs and the Markdown page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from adaptseg.data.labels import IGNORE_INDEX, colorize
from adaptseg.io import write_png, write_text_atomic

#: how strongly a label colour covers the image in an overlay tile
ALPHA = 0.6
GAP = 4  # white pixels between tiles
CAPTION_H = 22  # the caption strip above the tiles


def blend_labels(image: np.ndarray, label: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """``image`` (uint8 RGB H×W×3) with the palette colours of ``label`` (trainIds) blended over it.

    Pixels labelled :data:`IGNORE_INDEX` keep the image's colour.
    """
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} differ in size")
    colours = colorize(label).astype(np.float32)
    out = image.astype(np.float32) * (1 - alpha) + colours * alpha
    out[label == IGNORE_INDEX] = image[label == IGNORE_INDEX]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def overlay_strip(image: np.ndarray, labels: Sequence[np.ndarray], captions: Sequence[str]) -> np.ndarray:
    """One row: the image, then each label map blended over it, ``GAP`` white pixels apart, captioned.

    ``captions`` has one entry per tile (``1 + len(labels)``). Size: ``(CAPTION_H + H) × (n·W + (n−1)·GAP)``.
    """
    tiles = [image, *(blend_labels(image, label) for label in labels)]
    if len(captions) != len(tiles):
        raise ValueError(f"{len(captions)} captions for {len(tiles)} tiles")
    height, width = image.shape[:2]
    canvas = np.full((CAPTION_H + height, len(tiles) * width + (len(tiles) - 1) * GAP, 3), 255, np.uint8)
    for k, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        x = k * (width + GAP)
        canvas[CAPTION_H:, x : x + width] = tile
        scale = 0.45
        while scale > 0.25 and cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width - 4:
            scale -= 0.05
        cv2.putText(
            canvas,
            caption,
            (x + 2, CAPTION_H - 7),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (20, 20, 20),
            1,
            cv2.LINE_AA,
        )
    return canvas


@dataclass(frozen=True)
class ClassChange:
    name: str
    before: float
    after: float

    @property
    def delta(self) -> float:
        return self.after - self.before


def changed_most(before: Mapping[str, float], after: Mapping[str, float], k: int = 5) -> list[ClassChange]:
    """The ``k`` classes with the largest ``|after − before|`` IoU, largest first (ties: class order).

    Classes missing or NaN in either mapping (absent from the val split) are left out.
    """
    changes = [
        ClassChange(name, float(before[name]), float(after[name]))
        for name in after
        if name in before and not (math.isnan(float(before[name])) or math.isnan(float(after[name])))
    ]
    order = {name: i for i, name in enumerate(after)}
    changes.sort(key=lambda c: (-abs(c.delta), order[c.name]))
    return changes[:k]


def _num(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1f}"


def markdown(results: Mapping, overlays: Sequence[str], chart: str) -> str:
    """``report.md`` from the demo's ``results.json`` dictionary and the picture file names."""
    rows = results["rows"]
    base = rows["source_only"]["miou"]
    lines = [
        f"# adaptseg demo — {results['method_label']}",
        "",
        f"MiniCity, GTA5-like → Cityscapes-like (seed {results['seed']}{', reduced size' if results['quick'] else ''}): "
        f"{results['data']['source_images']} labelled source images, {results['data']['target_images']} unlabelled "
        f"target images, scored on {results['data']['val_images']} Cityscapes-like val images "
        f"({results['data']['size'][1]}×{results['data']['size'][0]}), 19-class mIoU in %.",
        "",
        f"Adaptation: {results['stages_note']}. Initial weights of every trained model: "
        + (
            "random (seeded)."
            if results.get("init", "random") == "random"
            else f"`{results['init']}` (encoder; heads seeded)."
        ),
        "",
        "| model | mIoU | vs source-only |",
        "|---|---:|---:|",
    ]
    for row in rows.values():
        delta = "" if row is rows["source_only"] else f"{row['miou'] - base:+.1f}"
        lines.append(f"| {row['label']} | {_num(row['miou'])} | {delta} |")
    lines += [
        "",
        f"ONNX artifact vs eager PyTorch: |ΔmIoU| = {results['onnx_vs_eager']:.4f}."
        + (
            f" Static int8 ONNX vs fp32 ONNX: ΔmIoU = {results['int8_vs_fp32']:+.2f}."
            if "int8_vs_fp32" in results
            else ""
        ),
        "",
        "## Classes that changed most (source-only → adapted)",
        "",
        "| class | source-only | AdaBN | adapted | oracle | change |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for change in results["changed_most"]:
        name = change["class"]
        lines.append(
            f"| {name} | {_num(change['before'])} | {_num(rows['adabn']['per_class'][name])} | "
            f"{_num(change['after'])} | {_num(rows['oracle']['per_class'][name])} | {change['delta']:+.1f} |"
        )
    lines += [
        "",
        "## Per-class IoU",
        "",
        f"![per-class IoU]({chart})",
        "",
        "## Val images",
        "",
        "image | ground truth | source-only | adapted (ONNX artifact); labels blended over the image.",
        "",
    ]
    lines += [f"![overlay {i}]({name})" for i, name in enumerate(overlays)]
    lines += ["", "## Time", "", "| step | estimate | wall | CPU |", "|---|---:|---:|---:|"]
    for step in results["steps"]:
        lines.append(
            f"| {step['title']} | {step['estimate_s']:.0f} s | {step['wall_s']:.0f} s | {step['cpu_s']:.0f} s |"
        )
    total = results["total"]
    lines += [f"| **total** | | **{total['wall_s']:.0f} s** | **{total['cpu_s']:.0f} s** |", ""]
    return "\n".join(lines)


def write_report(
    out: Path, results: Mapping, strips: Sequence[np.ndarray], chart: np.ndarray
) -> dict[str, Path]:
    """Write ``overlay_<i>.png``, ``per_class_iou.png`` and ``report.md`` into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    names = []
    for i, strip in enumerate(strips):
        name = f"overlay_{i}.png"
        write_png(out / name, strip)
        paths[f"overlay_{i}"] = out / name
        names.append(name)
    write_png(out / "per_class_iou.png", chart)
    paths["per_class_iou"] = out / "per_class_iou.png"
    write_text_atomic(out / "report.md", markdown(results, names, "per_class_iou.png"))
    paths["report"] = out / "report.md"
    return paths
