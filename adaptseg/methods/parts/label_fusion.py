"""Pseudo-label fusion of several teachers (EnD, end.md §3): PLF, certainty and majority rules.

Inputs per teacher m: a label map ``L_m`` (H×W, trainIds, 255 = none) and per-class certainties ``Q_m``
(H×W×C, integers 0–100: floor(100·softmax), the store's ``cert/`` files). Everything is vectorised over
pixels and classes (no per-pixel Python loop): one 2048×1024 image of 3 teachers fuses in a fraction of a
second on one core (bench/end_fusion.py). Certainties stay integers, so every threshold test is exact:
a pooled certainty ``Σ_window K / 25 ≥ τ`` is computed as ``Σ_window K ≥ 25·τ``.

Rules (end.md §3; τ = 90):

* **PLF** (:func:`fuse_plf`, the default). Each class c is assigned one teacher a(c). Class c is *claimed*
  where ``L_{a(c)} = c``; the certainty cube is ``K_c = Q_{a(c)}[..., c]`` (channel c of the assigned
  teacher, even where that teacher's argmax is another class). A pixel with exactly one claim takes that
  class and its ``K``; any other pixel (conflict or no claim) takes the class with the most claims in its
  5×5 window and that class's window-averaged ``K`` — zero padding, always divided by 25, ties and empty
  windows to the lowest class id (so an isolated unclaimed pixel becomes road). Labels with certainty < τ
  become 255 (equality kept). The order of the assignment table does not matter.
* **Certainty** (:func:`fuse_certainty`): the argmax of the teachers' mean certainty, kept where that
  mean is ≥ τ (the teachers' hard labels are not used).
* **Majority** (:func:`fuse_majority`): the class most teachers predict, ties to the lowest id; no
  threshold and no 255 (a pixel nobody votes for becomes 0), as the release does.

Assignments come from a recipe table (:func:`assignment_from_table`) or from the teachers' per-class IoU
on a labelled split (:func:`assignment_from_iou`; EnD's table is hard-coded and unexplained, end.md §3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from adaptseg.data.labels import CLASSES, IGNORE_INDEX
from adaptseg.errors import UserError

FUSION_THRESHOLD = 90.0
#: PLF's vote window for conflicts and unclaimed pixels (AvgPool 5×5, stride 1, zero padding 2)
VOTE_WINDOW = 5
FusionRule = Literal["plf", "certainty", "majority"]
#: the assignment-table key that takes every class no other teacher lists
OTHER_CLASSES = "others"


def window_sums(planes: Tensor, size: int = VOTE_WINDOW, dtype: torch.dtype = torch.int16) -> Tensor:
    """Sums over the ``size``×``size`` window around each pixel of C×H×W integer planes, zero-padded.

    ``window_sums(x) / size²`` is ``AvgPool2d(size, stride=1, padding=size // 2, count_include_pad=True)``;
    computed as two 1-D sums of shifted slices in ``dtype`` (exact for integers; int16 holds 25
    certainties ≤ 100), without materialising the padding.
    """
    r = size // 2
    rows = planes.to(dtype)
    for dim in (1, 2):  # rows, then columns
        source, rows = rows, rows.clone()
        n = planes.shape[dim]
        for d in range(1, r + 1):
            rows.narrow(dim, 0, n - d).add_(source.narrow(dim, d, n - d))  # the neighbour d after
            rows.narrow(dim, d, n - d).add_(source.narrow(dim, 0, n - d))  # the neighbour d before
    return rows


def first_argmax(planes: Sequence[Tensor] | Tensor) -> Tensor:
    """Index of the largest of C planes (H×W each) per pixel, the first (lowest index) on ties, as uint8.

    A running maximum over the planes: much faster on one core than ``argmax(0)`` over small integers.
    """
    best = planes[0].clone()
    index = torch.zeros(best.shape, dtype=torch.uint8)
    for c in range(1, len(planes)):
        index.masked_fill_(planes[c] > best, c)
        torch.maximum(best, planes[c], out=best)
    return index


def _keep(labels: Tensor, keep: Tensor) -> Tensor:
    return labels.masked_fill(~keep, IGNORE_INDEX)


def _as_tensor(x: Tensor | np.ndarray) -> Tensor:
    return x if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def fuse_plf(
    labels: Tensor | np.ndarray,
    certainties: Tensor | np.ndarray,
    assignment: Sequence[int],
    *,
    threshold: float = FUSION_THRESHOLD,
) -> Tensor:
    """PLF fusion (module docstring): M×H×W labels, M×H×W×C certainties 0–100, teacher index per class.

    Returns the fused H×W uint8 labels (255 where the certainty is below ``threshold``).
    """
    labels, certainties = _as_tensor(labels), _as_tensor(certainties)
    num_classes = certainties.shape[-1]
    if len(assignment) != num_classes:
        raise ValueError(
            f"the assignment names {len(assignment)} classes, the certainties have {num_classes}"
        )
    shape = labels.shape[-2:]
    claims = torch.empty((num_classes, *shape), dtype=torch.uint8)  # 1 where class c is claimed by a(c)
    cube = torch.empty((num_classes, *shape), dtype=torch.uint8)  # K_c = Q_{a(c)}[..., c]
    count = torch.zeros(shape, dtype=torch.uint8)
    single = torch.zeros(shape, dtype=torch.uint8)  # Σ c·claim_c: the claimed class where count == 1
    for c, teacher in enumerate(assignment):
        cube[c] = certainties[teacher, :, :, c]
        torch.eq(labels[teacher], c, out=claims[c])
        count += claims[c]
        single.add_(claims[c], alpha=c)
    single_cert = cube.gather(0, single[None].long().clamp_(max=num_classes - 1))[0]

    voted = first_argmax(window_sums(claims, dtype=torch.uint8))  # ties and empty windows → lowest id
    window_cert = window_sums(cube).gather(0, voted[None].long())[0]
    agree = count == 1
    fused = torch.where(agree, single, voted)
    keep = torch.where(agree, single_cert >= threshold, window_cert >= threshold * VOTE_WINDOW**2)
    return _keep(fused, keep)


def fuse_certainty(certainties: Tensor | np.ndarray, *, threshold: float = FUSION_THRESHOLD) -> Tensor:
    """Certainty fusion: argmax of the mean of M×H×W×C certainties, kept where the mean is ≥ ``threshold``."""
    certainties = _as_tensor(certainties)
    total = certainties[0].to(torch.int16)  # H×W×C; mean = total / M
    for teacher in certainties[1:]:
        total += teacher
    planes = total.permute(2, 0, 1)
    fused = first_argmax(planes)
    best = planes.gather(0, fused[None].long())[0]
    return _keep(fused, best >= threshold * certainties.shape[0])


def fuse_majority(labels: Tensor | np.ndarray, num_classes: int) -> Tensor:
    """Majority fusion: the most voted class of M×H×W labels, ties to the lowest id, no votes → 0, no 255."""
    labels = _as_tensor(labels)
    votes = torch.zeros((num_classes, *labels.shape[-2:]), dtype=torch.uint8)
    for c in range(num_classes):
        for teacher in labels:
            votes[c] += teacher == c
    return first_argmax(votes)


# ------------------------------------------------------------------------------------------ assignments
def class_index(name: str | int, num_classes: int) -> int:
    """A class given by trainId or by name (``traffic light``, ``traffic_light``)."""
    if isinstance(name, int) and not isinstance(name, bool):
        index = name
    else:
        names = [c.replace(" ", "_") for c in CLASSES]
        key = str(name).strip().replace(" ", "_")
        if key not in names:
            import difflib

            close = difflib.get_close_matches(key, names, n=1)
            raise UserError(
                f"unknown class {name!r} in the fusion assignment",
                fix=f"did you mean {close[0]!r}?" if close else f"classes: {', '.join(names)}",
            )
        index = names.index(key)
    if not 0 <= index < num_classes:
        raise UserError(
            f"class {name!r} is not one of the {num_classes} classes of the fusion",
            fix=f"use trainIds 0..{num_classes - 1}",
        )
    return index


def assignment_from_table(
    table: Mapping[str, Sequence[str | int] | str], teachers: Sequence[str], num_classes: int
) -> list[int]:
    """Teacher index per class from ``{teacher: [classes] | "others"}``; every class exactly once.

    One teacher may say ``others`` to take every class the rest do not list (end.md §3's tables).
    """
    owner: dict[int, str] = {}
    rest = [name for name, classes in table.items() if classes == OTHER_CLASSES]
    for name in table:
        if name not in teachers:
            raise UserError(
                f"the fusion assignment names teacher {name!r}, which is not a teacher",
                fix=f"teachers: {', '.join(teachers)}",
            )
    if len(rest) > 1:
        raise UserError(f"two teachers take the other classes ({', '.join(rest)})", fix="keep one 'others'")
    for name, classes in table.items():
        if classes == OTHER_CLASSES:
            continue
        for cls in [classes] if isinstance(classes, str | int) else classes:
            index = class_index(cls, num_classes)
            if index in owner:
                raise UserError(
                    f"class {cls!r} is assigned to both {owner[index]!r} and {name!r}",
                    fix="assign each class to one teacher",
                )
            owner[index] = name
    missing = [c for c in range(num_classes) if c not in owner]
    if missing and not rest:
        raise UserError(
            f"the fusion assignment leaves class(es) {missing} without a teacher",
            fix="list them, or give one teacher 'others'",
        )
    return [teachers.index(owner.get(c, rest[0] if rest else "")) for c in range(num_classes)]


def assignment_from_iou(ious: np.ndarray) -> list[int]:
    """Teacher index per class: the teacher with the highest IoU (M×C, NaN = never seen), ties → first."""
    scores = np.nan_to_num(np.asarray(ious, dtype=np.float64), nan=-1.0)
    return [int(i) for i in scores.argmax(0)]
