"""Label values outside a dataset's label map: found once (for readers and ``data check`` alike), warned
once per file, or an error under ``strict_labels``; and what loader workers raise or log reaches the main
process intact."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

from adaptseg.data import Sample, build_dataset
from adaptseg.data.datasets.base import MissingFolder, strict_labels
from adaptseg.data.datasets.encodings import CITYSCAPES_LABELIDS, SYNTHIA_16BIT
from adaptseg.data.pipeline import TrainStream, build_loader, with_normalize
from adaptseg.errors import UserError
from adaptseg.io import write_png
from tests.data import layouts as L
from tests.data.layouts import grid


def test_unknown_values_of_8_and_16_bit_labels():
    assert CITYSCAPES_LABELIDS.unknown_values(grid([7, 8, 33, 0])) == []
    assert CITYSCAPES_LABELIDS.unknown_values(grid([7, 200, 34, 200])) == [34, 200]
    assert SYNTHIA_16BIT.unknown_values(grid([3, 22, 259], dtype=np.uint16)) == [259]


@pytest.fixture
def cityscapes(tmp_path):
    """The miniature Cityscapes tree with the value 200 (no labelId) in the val label."""
    root = L.make_cityscapes(tmp_path / "cs")
    label = next(root.glob("gtFine/val/*/*_gtFine_labelIds.png"))
    write_png(label, grid([*L.CITYSCAPES_IDS, 200]))
    return root, label


def test_reader_warns_once_per_file_and_ignores_the_pixels(cityscapes, caplog):
    root, label = cityscapes
    ds = build_dataset("cityscapes", root, "val")
    with caplog.at_level(logging.WARNING, logger="adaptseg.data"):
        first, again = ds.read_label(0), ds[0].label
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and warnings[0].startswith(f"{label}: label value(s) 200 ")
    assert first.flat[len(L.CITYSCAPES_IDS)] == 255 and np.array_equal(first, again)


def test_strict_labels_makes_them_an_error(cityscapes):
    root, label = cityscapes
    with strict_labels():
        ds = build_dataset("cityscapes", root, "val")
    assert build_dataset("cityscapes", root, "val").strict_labels is False  # only inside the block
    with pytest.raises(
        UserError, match=f"^{label}: label value\\(s\\) 200 are not in the cityscapes-labelIds"
    ):
        ds.read_label(0)


def test_data_check_reports_the_same_values(cityscapes):
    from adaptseg.data.check import check_dataset

    root, label = cityscapes
    (val,) = check_dataset("cityscapes", root, "val").splits
    assert val.unknown_values == {200: [label]}


def test_user_errors_survive_pickling_with_their_attributes():
    error = MissingFolder("missing folder labels/", role="labels", path="/data", fix="point ROOT at it")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is MissingFolder and str(again) == str(error) and again.role == "labels"


class _Reader:
    """Two samples; each read logs a note; with ``broken`` set, every read fails instead."""

    name = "test"

    def __init__(self, broken: bool = False):
        self.broken = broken

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> Sample:
        if self.broken:
            raise MissingFolder("missing folder images/", role="images", path="/data", fix="point ROOT at it")
        logging.getLogger("adaptseg.data.test").warning("sample %d read with a note", i)
        return Sample(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), str(i))


def _loader(reader: _Reader, workers: int):
    stream = TrainStream("source", reader, with_normalize([], (0, 0, 0), (1, 1, 1)), 1, seed=0)
    return build_loader({"source": stream}, 0, 6, workers=workers)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_worker_user_error_is_raised_as_itself(workers):
    with pytest.raises(MissingFolder) as err:
        list(_loader(_Reader(broken=True), workers))
    assert (
        str(err.value) == "/data: missing folder images/ — fix: point ROOT at it"
        and err.value.role == "images"
    )


def test_what_workers_log_is_shown_once_in_the_main_process(caplog):
    with caplog.at_level(logging.WARNING, logger="adaptseg.data"):
        batches = list(_loader(_Reader(), workers=2))  # 6 reads of 2 samples by 2 worker processes
    assert len(batches) == 6 and all(set(b) == {"source"} for b in batches)
    notes = sorted(r.getMessage() for r in caplog.records)
    assert notes == ["sample 0 read with a note", "sample 1 read with a note"]
