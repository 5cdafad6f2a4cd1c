"""DecoupleNet's class-balanced file list as a stream option (``data.<stream>.class_balanced``): the reader
draws by the rule, reads through to the dataset, is the same on every rank, and the Trainer's stream uses it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from adaptseg.config import validate
from adaptseg.data.class_balanced import ClassBalancedReader, balanced_list_length, class_balanced_files
from adaptseg.data.datasets import build_dataset
from adaptseg.data.pipeline import StreamSampler, TrainStream, with_normalize
from adaptseg.errors import UserError
from adaptseg.train.config import StreamSpec
from adaptseg.train.trainer import Trainer
from tests.train.tiny import TwoView, make_context, make_split

ROAD, CAR = 7, 26  # Cityscapes labelIds → trainIds 0 and 13
RARE_IMAGE = 3


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    """Ten scenes of road; image 3 alone also holds a car."""
    root = make_split(tmp_path_factory.mktemp("balanced") / "data", n=10, size=(32, 48))
    for i, entry in enumerate(build_dataset("cityscapes", root, "train").entries):
        label = np.full((32, 48), ROAD, np.uint8)
        if i == RARE_IMAGE:
            label[8:16, 8:24] = CAR
        assert cv2.imwrite(str(entry.label_path), label)
    return root


def balanced(split: Path, tmp_path: Path, seed=(0, 1), length=400, sub_epoch=50) -> ClassBalancedReader:
    return ClassBalancedReader(
        build_dataset("cityscapes", split, "train"), tmp_path / "stats.json", length, seed, sub_epoch
    )


def test_the_list_follows_the_rule_on_the_per_image_class_presence(split, tmp_path):
    reader = balanced(split, tmp_path)
    assert len(reader) == 400
    # by hand: road (trainId 0) is in every image, car (13) only in image 3
    by_class = {0: list(range(10)), 13: [RARE_IMAGE]}
    by_file = {i: [0, 13] if i == RARE_IMAGE else [0] for i in range(10)}
    expected = class_balanced_files(by_class, by_file, 400, np.random.default_rng([0, 1]), 50)
    assert reader.indices == expected
    assert reader[5].id == reader.reader[expected[5]].id and reader.entries == reader.reader.entries
    # the first draw of a sub-epoch is 50/50 between the two classes (uniform f); the car's image then
    # comes up far more often than the 10 % of uniform sampling: every car draw and a tenth of road draws
    share = reader.indices.count(RARE_IMAGE) / len(reader)
    assert share > 0.4
    # the same list on every rank (a function of the seed), another list for another stage's seed
    assert balanced(split, tmp_path).indices == expected
    assert balanced(split, tmp_path, seed=(0, 2)).indices != expected


def test_an_unlabelled_stream_cannot_be_class_balanced(split, tmp_path):
    with pytest.raises(UserError, match="class-balanced sampling needs labels"):
        ClassBalancedReader(
            build_dataset("cityscapes", split, "train", labels=False), tmp_path / "s.json", 10, (0,)
        )


def test_rcs_and_class_balanced_are_not_combined(split):
    with pytest.raises(UserError, match="two sampling rules"):
        validate(StreamSpec, {"name": "cityscapes", "root": str(split), "rcs": {}, "class_balanced": {}})


def test_a_training_stream_reads_its_shuffled_epochs_over_the_list(split, tmp_path):
    extra = {"data": {"source": {"class_balanced": {"sub_epoch": 10}}}}
    ctx = make_context(tmp_path / "run", split, extra=extra, iters=6)
    reader = ctx.open_dataset(ctx.stream_spec("source"))
    assert isinstance(reader, ClassBalancedReader)
    assert len(reader) == balanced_list_length(6, 2, 10) == 20  # (⌊6·2/10⌋ + 1)·10
    stream = TrainStream("source", reader, with_normalize([], (0, 0, 0), (1, 1, 1)), 2, seed=0)
    assert type(stream.sampler) is StreamSampler  # shuffled epochs, as the release's DistributedSampler
    epoch = [stream.sample(p)[2] for p in range(20)]
    assert sorted(epoch) == sorted(reader.reader.entries[i].id for i in reader.indices)
    Trainer(ctx, TwoView(validate(TwoView.Options, {}), ctx), hooks=[]).train()
    assert (tmp_path / "run" / "class-stats").is_dir()  # the presence table is cached in the run
