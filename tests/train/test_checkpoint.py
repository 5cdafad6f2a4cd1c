"""Checkpoints are written atomically and carry the RNG states that make a resume exact."""

import random

import numpy as np
import pytest
import torch

from adaptseg.errors import UserError
from adaptseg.train.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint-last.pt"
    save_checkpoint(path, {"iteration": 4, "weights": torch.ones(3)})
    with pytest.raises(Exception):  # noqa: B017 - torch.save fails on the lambda
        save_checkpoint(path, {"iteration": 8, "weights": torch.zeros(3), "bad": lambda: None})
    state = load_checkpoint(path)
    assert state["iteration"] == 4 and torch.equal(state["weights"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-last.pt"]  # no temporary left


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"rng": [capture_rng_state()]})
    first = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"][0])
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_foreign_or_torn_files_are_user_errors(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not an adaptseg training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "torn.pt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(UserError, match="unreadable checkpoint"):
        load_checkpoint(tmp_path / "torn.pt")
    with pytest.raises(UserError, match="no checkpoint to resume"):
        load_checkpoint(tmp_path / "missing.pt")
