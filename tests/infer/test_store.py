"""The pseudo-label store: round trip within the quantisation bound, top-k soft labels, resume rules."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaptseg.errors import UserError
from adaptseg.infer.store import (
    PseudoLabelStore,
    StoreOrigin,
    dequantise,
    model_sha256,
    quantise,
    remove_store,
)

BOUND = 0.5 / 255 + 1e-7  # round(255 p) / 255 is within half a step of p


def random_probs(c: int = 7, h: int = 13, w: int = 17, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(c, h, w, generator=g) * 3).softmax(0)


def test_quantisation_error_is_half_a_step():
    p = torch.linspace(0, 1, 10001)
    q = quantise(p)
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255
    assert np.abs(dequantise(q) - p.numpy()).max() <= BOUND


def test_round_trip(tmp_path):
    store = PseudoLabelStore(tmp_path / "s")
    probs = random_probs()
    ignore = torch.zeros(13, 17, dtype=torch.bool)
    ignore[:2] = True
    store.write("city/a_000001", probs, ignore=ignore)
    label, conf, topk = store.read("city/a_000001")
    expected = probs.argmax(0).to(torch.uint8).numpy()
    expected[:2] = 255
    assert label.dtype == np.uint8 and np.array_equal(label, expected)
    assert conf.dtype == np.float32 and np.abs(conf - probs.amax(0).numpy()).max() <= BOUND
    assert topk is None
    assert (tmp_path / "s" / "label" / "city" / "a_000001.png").is_file()
    info = json.loads((tmp_path / "s" / "store.json").read_text())
    assert info["num_classes"] == 7 and info["topk"] == 0
    assert store.ids() == ["city/a_000001"] and "city/a_000001" in store


def test_topk_soft_labels(tmp_path):
    probs = random_probs(c=9, h=13, w=18)
    full = PseudoLabelStore(tmp_path / "full", topk=3)
    full.write("x", probs)
    topk = full.read("x").topk
    values, classes = probs.topk(3, dim=0)
    assert topk.stride == 1 and topk.classes.shape == (3, 13, 18) and topk.classes.dtype == np.uint8
    # ranks may swap only where two probabilities are within the quantisation step
    assert np.array_equal(topk.classes[0], classes[0].numpy())
    assert np.abs(topk.probs - values.numpy()).max() <= BOUND

    coarse = PseudoLabelStore(tmp_path / "coarse", topk=2, topk_stride=4)
    coarse.write("x", probs)
    soft = coarse.read("x").topk
    pooled = F.avg_pool2d(probs[None], 4, ceil_mode=True)[0]
    assert soft.stride == 4 and soft.classes.shape == (2, 4, 5)
    assert np.array_equal(soft.classes[0], pooled.argmax(0).numpy())
    assert np.abs(soft.probs[0] - pooled.amax(0).numpy()).max() <= BOUND
    # reopening an existing store reads its settings; asking for others is an error
    assert PseudoLabelStore(tmp_path / "coarse").topk_stride == 4
    with pytest.raises(UserError, match="topk=2"):
        PseudoLabelStore(tmp_path / "coarse", topk=5)


def test_incomplete_files_are_not_complete_and_temporaries_are_cleaned(tmp_path):
    store = PseudoLabelStore(tmp_path, topk=2)
    for name in ("a", "b", "c", "d"):
        store.write(name, random_probs(seed=ord(name)))
    assert store.ids() == ["a", "b", "c", "d"]
    # a truncated PNG, a truncated npz, a missing confidence map
    label_b = store.paths("b")["label"]
    label_b.write_bytes(label_b.read_bytes()[:-20])
    topk_c = store.paths("c")["topk"]
    topk_c.write_bytes(topk_c.read_bytes()[:-10])
    store.paths("d")["conf"].unlink()
    assert store.ids() == ["a"]
    assert not store.is_complete("b") and not store.is_complete("c") and not store.is_complete("d")
    with pytest.raises(UserError, match="resumes"):
        store.read("b")
    # a killed writer's temporary file disappears when the store is opened for writing again
    tmp = store.paths("a")["label"].parent / ".b.abc123.tmp.png"
    tmp.write_bytes(b"partial")
    reopened = PseudoLabelStore(tmp_path)
    reopened.open_for_writing(7)
    assert not tmp.exists()
    reopened.write("b", random_probs(seed=1))
    assert reopened.is_complete("b")


def test_bad_ids_and_mismatched_stores_are_user_errors(tmp_path):
    store = PseudoLabelStore(tmp_path)
    for bad in ("../escape", "/abs", "", "a//b"):
        with pytest.raises(UserError, match="image id"):
            store.paths(bad)
    store.write("ok", random_probs(c=7))
    with pytest.raises(UserError, match="7-class"):
        PseudoLabelStore(tmp_path).open_for_writing(19)


def _origin(**changes) -> StoreOrigin:
    facts = dict(
        model="runs/a",
        model_sha256="aa",
        dataset="cityscapes",
        split="train",
        preset=None,
        inference={"mode": "whole", "tta.flip": False, "tta.scales": [1.0]},
    )
    return StoreOrigin(**{**facts, **changes})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model_sha256": "bb"}, "model"),
        ({"model": "tiny-deeplabv2", "model_sha256": None}, "model"),
        ({"dataset": "acdc"}, "dataset"),
        ({"split": "val"}, "split"),
        ({"inference": {"mode": "whole", "tta.flip": True, "tta.scales": [1.0]}}, "preset tta.flip"),
        ({"inference": {"mode": "whole", "tta.flip": False, "tta.scales": [0.5, 1.0]}}, "preset tta.scales"),
    ],
)
def test_a_store_refuses_a_writer_of_another_origin(tmp_path, changes, field):
    PseudoLabelStore(tmp_path, origin=_origin()).write("a", random_probs())
    before = json.loads((tmp_path / "store.json").read_text())
    with pytest.raises(UserError, match=f"{field}=.*--force"):
        PseudoLabelStore(tmp_path, origin=_origin(**changes)).open_for_writing(7)
    assert json.loads((tmp_path / "store.json").read_text()) == before


def test_a_store_accepts_the_same_weights_under_another_path_and_preset_name(tmp_path):
    PseudoLabelStore(tmp_path, origin=_origin()).write("a", random_probs())
    PseudoLabelStore(
        tmp_path, origin=_origin(model="/moved/student.safetensors", preset="minicity")
    ).open_for_writing(7)


def test_a_store_without_a_record_of_its_origin_is_refused_for_writing(tmp_path):
    PseudoLabelStore(tmp_path).write("a", random_probs())  # written without an origin (an older store)
    with pytest.raises(UserError, match="does not record"):
        PseudoLabelStore(tmp_path, origin=_origin()).open_for_writing(7)


def test_speed_settings_are_not_part_of_the_origin(tmp_path):
    from adaptseg.infer.config import InferenceConfig

    dataset = type("Split", (), {"name": "cityscapes", "split": "train"})()
    slow = StoreOrigin.of("m", dataset, None, InferenceConfig(batch_size=1, workers=1))
    fast = StoreOrigin.of("m", dataset, None, InferenceConfig(batch_size=16, workers=4, tta={"flip": True}))
    assert [name for name, *_ in fast.differences(asdict(slow))] == ["preset tta.flip"]


def test_model_sha256_follows_the_weights_bytes(tmp_path):
    run = tmp_path / "run"
    (run / "stage").mkdir(parents=True)
    (run / "stage" / "student.safetensors").write_bytes(b"weights")
    (run / "stage" / "checkpoint-last.pt").write_bytes(b"optimiser state")
    first = model_sha256(run)
    (run / "stage" / "checkpoint-last.pt").write_bytes(b"other optimiser state")
    assert model_sha256(run) == first  # only the deployable weights count
    (run / "stage" / "student.safetensors").write_bytes(b"trained further")
    assert model_sha256(run) != first
    assert model_sha256("tiny-deeplabv2") is None


def test_remove_store_deletes_a_store_and_nothing_else(tmp_path):
    store = PseudoLabelStore(tmp_path / "s", topk=2)
    store.write("city/a", random_probs())
    assert remove_store(tmp_path / "s") and list((tmp_path / "s").iterdir()) == []
    assert not remove_store(tmp_path / "missing")


@pytest.mark.parametrize(
    "plant",
    [
        lambda root: (root / "notes.txt").write_text("mine"),
        lambda root: (root / "label" / "photo.jpg").write_bytes(b"mine"),
        lambda root: (root / "store.json").unlink(),
    ],
    ids=["file-beside", "foreign-file-inside", "no-record"],
)
def test_remove_store_refuses_a_folder_it_cannot_prove_is_a_store(tmp_path, plant):
    root = tmp_path / "s"
    PseudoLabelStore(root).write("a", random_probs())
    plant(root)
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    with pytest.raises(UserError, match="--force refused"):
        remove_store(root)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == before
