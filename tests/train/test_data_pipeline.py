"""Training batches (adaptseg.data.pipeline): distributed sampling, reproducibility, normalisation, id lists."""

import numpy as np
import pytest
import torch

from adaptseg.data.pipeline import StreamSampler, TrainStream, build_loader, open_dataset, with_normalize
from adaptseg.data.transforms import IMAGENET_MEAN, Normalize
from adaptseg.errors import UserError
from tests.train.tiny import make_split

PIPE = [{"random_crop": {"size": [16, 16]}}, {"flip": 0.5}]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_split(tmp_path_factory.mktemp("data"), n=6)


def _stream(data, seed=0, batch=2):
    reader = open_dataset("cityscapes", str(data), "train")
    return TrainStream("source", reader, with_normalize(PIPE, (0, 0, 0), (1, 1, 1)), batch, seed)


def test_ranks_get_disjoint_samples_covering_each_epoch():
    sampler = StreamSampler(size=10, seed=3, key=1)
    world, batch = 2, 2
    taken = {0: [], 1: []}
    for it in range(5):  # 5 iterations × 2 ranks × 2 = 20 positions = 2 epochs
        for rank in (0, 1):
            taken[rank] += [sampler.index(p) for p in sampler.positions(it, rank, world, batch)]
    assert sampler.positions(3, 1, world, batch) == range(14, 16)
    first_epoch = [sampler.index(p) for p in range(10)]
    assert sorted(first_epoch) == list(range(10))  # an epoch is a permutation
    assert first_epoch != [sampler.index(p) for p in range(10, 20)]  # reshuffled per epoch
    assert sorted(taken[0] + taken[1]) == sorted(list(range(10)) * 2)
    # one process with batch 4 sees the same positions as two processes with batch 2
    single = [sampler.index(p) for it in range(5) for p in sampler.positions(it, 0, 1, 4)]
    assert single == [
        i
        for it in range(5)
        for r in (0, 1)
        for i in [sampler.index(p) for p in sampler.positions(it, r, world, batch)]
    ]


def test_batches_are_a_function_of_seed_and_iteration(data):
    a, b, c = _stream(data), _stream(data), _stream(data, seed=1)
    batch = a.batch(7, 0, 1)
    assert batch["image"].shape == (2, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (2, 16, 16) and batch["label"].dtype == torch.uint8
    again = b.batch(7, 0, 1)
    assert torch.equal(batch["image"], again["image"]) and batch["id"] == again["id"]
    assert not torch.equal(batch["image"], c.batch(7, 0, 1)["image"])
    # the loader (with or without worker processes) yields exactly these batches, starting anywhere
    for workers in (0, 1):
        loaded = list(build_loader({"source": a}, 5, 8, workers=workers))
        assert len(loaded) == 3
        assert torch.equal(loaded[2]["source"]["image"], batch["image"])


def test_normalisation_is_appended_unless_the_pipeline_ends_with_it():
    compose = with_normalize(PIPE, (1, 2, 3), (4, 5, 6))
    assert compose.steps[-1] == Normalize((1, 2, 3), (4, 5, 6))
    explicit = with_normalize([*PIPE, {"normalize": True}], (1, 2, 3), (4, 5, 6))
    assert explicit.steps[-1] == Normalize() and explicit.steps[-1].mean == IMAGENET_MEAN
    image, _ = compose(np.full((4, 4, 3), 9, np.uint8), None, np.random.default_rng(0))
    assert image.shape == (3, 4, 4) and np.allclose(image[:, 0, 0], [2.0, 1.4, 1.0])


def test_id_lists_restrict_a_split(data, tmp_path):
    ids = tmp_path / "easy.txt"
    ids.write_text("bremen/bremen_000003_000019\naachen/aachen_000000_000019\n")
    reader = open_dataset("cityscapes", str(data), "train", ids=ids)
    assert [e.id for e in reader.entries] == ["bremen/bremen_000003_000019", "aachen/aachen_000000_000019"]
    ids.write_text("aachen/nope\n")
    with pytest.raises(UserError, match="not in"):
        open_dataset("cityscapes", str(data), "train", ids=ids)


def test_samples_of_different_sizes_need_a_crop(data):
    reader = open_dataset("cityscapes", str(data), "train")
    stream = TrainStream(
        "source",
        reader,
        with_normalize([{"resize": {"scale": [48, 32], "ratio_range": [0.5, 2.0]}}], (0, 0, 0), (1, 1, 1)),
        2,
        0,
    )
    with pytest.raises(UserError, match="differ in size"):
        for it in range(5):
            stream.batch(it, 0, 1)


def test_concat_reads_several_datasets_as_one(tmp_path, data):
    from adaptseg.data.pipeline import ConcatReader
    from tests.train.tiny import make_context

    other = make_split(tmp_path / "other", n=3, seed=9)
    ctx = make_context(
        tmp_path,
        data,
        extra={
            "data": {"source": {"concat": [{"name": "cityscapes", "root": str(other), "split": "train"}]}}
        },
    )
    reader = ctx.open_dataset(ctx.recipe.data["source"])
    assert isinstance(reader, ConcatReader) and len(reader) == 6 + 3 and reader.name == "cityscapes"
    first, extra = (
        open_dataset("cityscapes", str(data), "train"),
        open_dataset("cityscapes", str(other), "train"),
    )
    assert [e.image_path for e in reader.entries] == [e.image_path for e in first.entries + extra.entries]
    assert np.array_equal(reader[7].image, extra[1].image) and np.array_equal(
        reader.read_label(2), first[2].label
    )
    with pytest.raises(IndexError):
        reader[9]
    stream = TrainStream("source", reader, with_normalize(PIPE, (0, 0, 0), (1, 1, 1)), 9, 0)
    assert sorted(stream.batch(0, 0, 1)["id"]) == sorted(
        e.id for e in reader.entries
    )  # one epoch = both sets
