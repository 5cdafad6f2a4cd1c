"""Report: numbers from a confusion matrix, the Rich table, JSON round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from rich.console import Console

from adaptseg.data.labels import CLASSES
from adaptseg.errors import UserError
from adaptseg.eval import ConfusionMatrix, Report


@pytest.fixture
def cm() -> ConfusionMatrix:
    # road: 3 px, 2 right, 1 predicted sidewalk; sidewalk: 1 px right; terrain: 2 px, 1 right, 1 → 255;
    # every other class absent. IoU road 2/3, sidewalk 1/2, terrain 1/2.
    gt = np.array([0, 0, 0, 1, 9, 9, 255])
    pred = np.array([0, 0, 1, 1, 9, 255, 3])
    return ConfusionMatrix().update(pred, gt)


def test_from_confusion_in_percent(cm):
    r = Report.from_confusion(cm, protocol=19, n_images=3)
    assert r.per_class["road"] == pytest.approx(200 / 3)
    assert r.per_class["sidewalk"] == pytest.approx(50.0)
    assert r.per_class["terrain"] == pytest.approx(50.0)
    assert math.isnan(r.per_class["wall"])
    assert r.miou == pytest.approx((200 / 3 + 50 + 50) / 3)
    assert r.aacc == pytest.approx(100 * 4 / 6)
    assert r.per_class_acc["road"] == pytest.approx(200 / 3)
    assert (r.protocol, r.n_images, r.pixels) == (19, 3, 6)
    assert set(r.extras) == {"mIoU16", "mIoU13"}
    assert r.extras["mIoU16"] == pytest.approx((200 / 3 + 50) / 2)  # terrain is not in the 16 classes


def test_json_has_the_issue_keys_and_round_trips(cm, tmp_path):
    r = Report.from_confusion(cm, protocol=16, n_images=2)
    path = tmp_path / "sub" / "metrics.json"
    r.write_json(path)
    data = json.loads(path.read_text())
    assert {"mIoU", "per_class", "aAcc", "protocol", "n_images"} <= set(data)
    assert data["protocol"] == 16 and data["n_images"] == 2
    assert data["mIoU"] == pytest.approx((200 / 3 + 50) / 2)
    assert data["mIoU13"] == pytest.approx((200 / 3 + 50) / 2)
    assert list(data["per_class"]) == list(CLASSES)
    assert data["per_class"]["wall"] is None  # NaN is written as null
    back = Report.read_json(path)
    assert back.to_dict() == r.to_dict()
    assert not list(path.parent.glob(".*tmp*"))  # atomic write leaves no temporary file


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="report not found"):
        Report.read_json(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"mIoU": 3}')
    with pytest.raises(UserError, match=r"bad\.json.*not an adaptseg evaluation report"):
        Report.read_json(bad)


def test_print_renders_table_and_summary(cm):
    console = Console(record=True, width=100)
    Report.from_confusion(cm, protocol=16, n_images=5).print(console)
    text = console.export_text()
    assert "road" in text and "66.67" in text
    assert "terrain *" in text and "* not in mIoU16" in text  # outside the protocol: starred
    assert "truck *" in text and "sidewalk *" not in text
    assert "mIoU16 58.33" in text and "mIoU13 58.33" in text and "aAcc 66.67" in text and "5 images" in text
    assert "—" in text  # absent classes
