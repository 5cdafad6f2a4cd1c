"""Training checkpoints: everything a run needs to continue bit-exactly, written atomically.

``checkpoint-last.pt`` (``torch.save`` of plain containers and tensors, loaded with ``weights_only=True``)::

    format, version, stage, iteration        # iterations completed
    models     {name: state_dict}            # roles "train" and "ema"; frozen models are rebuilt
    optimizer, scaler, schedule, method      # scaler None without fp16; method = Method.state_dict()
    rng        [per-rank {torch, cuda, numpy, python}]
    sampler    {seed, world_size}            # data order is a function of (seed, iteration, rank)

The file is written to a temporary name in the same folder and renamed into place, so a crash (even
SIGKILL) leaves the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptseg.errors import UserError
from adaptseg.io import atomic_path

FORMAT = "adaptseg-train-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint-last.pt"


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU, CUDA, NumPy global, Python ``random``) as plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a checkpoint atomically (temporary file + rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors mapped to the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            "no checkpoint to resume from", path=path, fix="run without --resume to start the stage"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is not ours or torn
        first_sentence = str(exc).split(". ")[0]  # torch appends a paragraph of guesses
        raise UserError(
            f"unreadable checkpoint ({type(exc).__name__}: {first_sentence})",
            path=path,
            fix="delete it to restart the stage",
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError("not an adaptseg training checkpoint", path=path)
    if payload.get("version") != VERSION:
        raise UserError(f"checkpoint version {payload.get('version')} is not {VERSION}", path=path)
    return payload


def clean_stale_temporaries(folder: Path) -> None:
    """Remove temporary files a killed writer left behind (``.<stem>.*.tmp<suffix>`` from ``atomic_path``)."""
    for tmp in folder.glob(".*.tmp*"):
        if tmp.is_file():
            tmp.unlink()
