"""``batch_size: auto``: the engine times its first batches at a few sizes and keeps the fastest per crop.

Why: the best batch size depends on the model and the device, and not always in the same direction.
On a GPU larger batches fill the device; on a 2-core CPU tiny-daformer's forward is 1.6× *slower* per
crop at batch 8 than at batch 1 (issue 20), so a fixed preset value is wrong somewhere.

How (:class:`BatchSizeProbe`): the candidates are 1, 2, 4, 8, … up to a cap — ``auto_batch.max_size``,
and the largest batch whose float32 crops and outputs fit in ``auto_batch.memory_mib``
(:func:`probe_candidates`). Each candidate runs ``auto_batch.repeats`` real batches of the run (their
outputs are used: probing wastes no work); its cost is the *least* seconds per crop seen (the first
batch at a size may pay one-off set-up). Probing stops early once a size is ``slower_by`` slower per
crop than the best so far (larger batches rarely recover), or when a run ends before the next size
could fill a batch. The fastest size is kept for the rest of the engine's life, and the choice, the timings and the probe's own time are reported
(:meth:`BatchSizeProbe.summary`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("adaptseg.infer")

MIB = 1 << 20


def crop_bytes(crop: tuple[int, int], num_classes: int) -> int:
    """Bytes one crop holds during a forward: its float32 input (3 channels) and float32 output (C)."""
    return 4 * crop[0] * crop[1] * (3 + num_classes)


def probe_candidates(
    crop: tuple[int, int], num_classes: int, *, max_size: int, memory_mib: float
) -> list[int]:
    """Powers of two from 1 up to ``max_size`` and to the largest batch within ``memory_mib`` (at least 1)."""
    fits = max(int(memory_mib * MIB // crop_bytes(crop, num_classes)), 1)
    cap = min(max_size, fits)
    sizes = [1]
    while sizes[-1] * 2 <= cap:
        sizes.append(sizes[-1] * 2)
    return sizes


@dataclass
class BatchSizeProbe:
    """Times batches of the :attr:`candidates` in turn and settles on the fastest per crop.

    The engine asks :attr:`size` before filling a batch and reports each full batch's forward time
    with :meth:`record`; once :attr:`done`, :attr:`size` is the choice.
    """

    candidates: list[int]
    repeats: int = 2
    slower_by: float = 0.10
    memory_note: str = ""  # how the cap was set, for the report
    seconds_per_crop: dict[int, float] = field(default_factory=dict)  # least seen per size
    probe_seconds: float = 0.0  # forward time of every probe batch
    probe_crops: int = 0
    _runs: int = 0  # batches timed at the current candidate
    _index: int = 0
    choice: int | None = None

    def __post_init__(self) -> None:
        if not self.candidates or min(self.candidates) < 1:
            raise ValueError(f"candidates must be positive batch sizes, got {self.candidates}")
        if self.repeats < 1:
            raise ValueError("repeats must be >= 1")

    @property
    def done(self) -> bool:
        return self.choice is not None

    @property
    def size(self) -> int:
        """The batch size to fill next: the candidate being timed, or the choice."""
        return self.choice if self.choice is not None else self.candidates[self._index]

    def record(self, crops: int, seconds: float) -> None:
        """One full batch of ``crops`` took ``seconds`` to forward (ignored unless it is the current candidate)."""
        if self.done or crops != self.size:
            return
        self.probe_seconds += seconds
        self.probe_crops += crops
        per_crop = seconds / crops
        self.seconds_per_crop[crops] = min(per_crop, self.seconds_per_crop.get(crops, float("inf")))
        self._runs += 1
        if self._runs < self.repeats:
            return
        best = min(self.seconds_per_crop.values())
        self._runs = 0
        self._index += 1
        if self._index == len(self.candidates) or self.seconds_per_crop[crops] > best * (1 + self.slower_by):
            self._settle()

    def finish(self) -> None:
        """The run ended while probing (too few crops for the next size): settle on the best size timed."""
        if not self.done and self.seconds_per_crop:
            self._settle()

    def _settle(self) -> None:
        self.choice = min(self.seconds_per_crop, key=lambda n: (self.seconds_per_crop[n], n))
        log.info("%s", self.summary())

    def summary(self) -> str:
        """One line: the choice, the time per crop of each size tried, the cap and the probe's own time."""
        timed = ", ".join(f"{n}: {s * 1e3:.3g} ms" for n, s in sorted(self.seconds_per_crop.items()))
        state = f"{self.choice} crops per forward" if self.done else f"still probing (at {self.size})"
        cap = f"; cap {max(self.candidates)}{f' ({self.memory_note})' if self.memory_note else ''}"
        probe = f"; probe {self.probe_seconds:.2f} s over {self.probe_crops} crops"
        return f"batch_size auto: {state} (per crop {timed}{cap}{probe})"
