"""bench/pseudo_label_quality.py scores a store's raw and thresholded labels as a hand count says."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from adaptseg.infer.store import PseudoLabelStore

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "pseudo_label_quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("bench_pseudo_label_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_hot_ish(classes: list[int], confidences: list[float]) -> torch.Tensor:
    """19×1×W probabilities: ``confidences[i]`` on ``classes[i]``, the rest spread over the other 18."""
    probs = torch.empty(19, 1, len(classes))
    for i, (c, conf) in enumerate(zip(classes, confidences, strict=True)):
        probs[:, 0, i] = (1 - conf) / 18
        probs[c, 0, i] = conf
    return probs


def test_raw_and_kept_scores_match_a_hand_count(quality, tmp_path):
    store = PseudoLabelStore(tmp_path / "pl" / "store")
    store.open_for_writing(19)
    # predictions road, road, sidewalk, sidewalk at confidences 0.9, 0.6, 0.8, 0.5
    store.write("a/img", one_hot_ish([0, 0, 1, 1], [0.9, 0.6, 0.8, 0.5]))
    levels = [179] * 19  # keep conf ≥ 179/255 ≈ 0.70: pixels 0 and 2
    (tmp_path / "pl" / "thresholds.json").write_text(json.dumps({"levels": levels}))
    truth = np.array([[0, 1, 1, 255]], dtype=np.uint8)
    dataset = SimpleNamespace(entries=[SimpleNamespace(id="a/img")], read_label=lambda i: truth)

    row = quality.stage_quality(tmp_path / "pl", dataset)

    # raw: road TP 1 FP 1 → IoU 1/2; sidewalk TP 1 FN 1 → 1/2; 2 of 3 labelled pixels right
    assert row["raw mIoU19"] == pytest.approx(50.0)
    assert row["raw accuracy"] == pytest.approx(100 * 2 / 3)
    # kept: pixel 0 (road→road) and pixel 2 (sidewalk→sidewalk); pixel 1 (0.6) and 3 (void) drop out
    assert row["kept mIoU19"] == pytest.approx(100.0)
    assert row["kept accuracy"] == pytest.approx(100.0)
    assert row["kept share"] == pytest.approx(100 * 2 / 3)


def test_a_store_without_thresholds_reports_raw_only(quality, tmp_path):
    store = PseudoLabelStore(tmp_path / "pl" / "store")
    store.open_for_writing(19)
    store.write("a/img", one_hot_ish([2, 2], [0.9, 0.9]))
    dataset = SimpleNamespace(
        entries=[SimpleNamespace(id="a/img")], read_label=lambda i: np.array([[2, 8]], dtype=np.uint8)
    )
    row = quality.stage_quality(tmp_path / "pl", dataset)
    assert set(row) == {"raw mIoU19", "raw accuracy"}
    assert row["raw mIoU19"] == pytest.approx(100 * (1 / 2 + 0) / 2)  # building 1/2, vegetation 0


def test_a_folder_without_a_store_is_a_one_line_error(quality, tmp_path):
    from adaptseg.errors import UserError

    with pytest.raises(UserError, match="not a pseudo-label stage folder") as caught:
        quality.stage_quality(tmp_path / "joint", SimpleNamespace(entries=[]))
    assert str(tmp_path / "joint") in str(caught.value)


def test_labels_of_another_split_are_a_one_line_error(quality, tmp_path):
    from adaptseg.errors import UserError

    store = PseudoLabelStore(tmp_path / "pl" / "store")
    store.open_for_writing(19)
    store.write("b/other", one_hot_ish([2], [0.9]))
    dataset = SimpleNamespace(entries=[SimpleNamespace(id="a/img")], read_label=lambda i: None)
    with pytest.raises(UserError, match="'b/other' is not an image of the recipe's target split"):
        quality.stage_quality(tmp_path / "pl", dataset)
