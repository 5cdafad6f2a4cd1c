"""From dataset readers to training batches: reproducible sampling, augmentation and loading.

**Every batch is a pure function of (seed, stream, iteration, rank).** Sample ``j`` of rank ``r`` at
iteration ``t`` sits at position ``p = (t·W + r)·B + j`` of an endless stream of epochs (``W`` processes,
``B`` per-process batch); epoch ``e = p // N`` is a permutation of the ``N`` samples drawn from
``(seed, stream, e)``, and the sample's augmentation draws from its own generator seeded by
``(seed, stream, p)``. A stream with ``rcs:`` draws position ``p``'s sample by class rarity instead, from
the same per-position seeds (:mod:`adaptseg.data.rcs`). So the ranks see disjoint samples that cover each epoch (what a
``DistributedSampler`` gives), the result does not depend on the number of loader workers, and a resumed
run needs no loader state: it simply starts at its iteration.

A loader yields, per iteration, ``{stream: {"image": float N×3×H×W (normalised), "label": uint8 N×H×W
(when labelled), "id": [str]}}``; the Trainer moves it to the device and turns labels into ``long``.

Loader worker processes report back through the batches: a :class:`~adaptseg.errors.UserError` raised
while reading (a corrupt image, an RGB label) is re-raised in the main process as itself, and the warnings
the readers log (unknown label values, resized labels) are logged there once each, however many workers
read the file.

``minicity:<domain>`` dataset roots name the built-in MiniCity data; it is generated on first use into a
cache folder (``$ADAPTSEG_MINICITY``, else ``~/.cache/adaptseg/minicity``) as
``<cache>/s<seed>-<H>x<W>-n<images|default>/<domain>/``, under a file lock so that concurrent processes
(torchrun ranks, parallel runs) generate it once.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import itertools
import logging
import os
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from adaptseg.data.transforms import Compose, Normalize, build_pipeline
from adaptseg.errors import UserError

MINICITY_PREFIX = "minicity:"
#: the readers' logger: what they log inside a loader worker is forwarded to the main process
DATA_LOGGER = "adaptseg.data"
# batch keys on which a loader worker sends its log records and its user error instead of data
_LOGGED = "__logged__"
_ERROR = "__error__"


# ------------------------------------------------------------------------------------------- roots
def minicity_cache() -> Path:
    """Where generated MiniCity datasets live: ``$ADAPTSEG_MINICITY`` or ``~/.cache/adaptseg/minicity``."""
    env = os.environ.get("ADAPTSEG_MINICITY")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "adaptseg" / "minicity"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block: one process at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def minicity_root(
    domain: str,
    *,
    seed: int = 0,
    size: tuple[int, int] = (128, 256),
    images: int | None = None,
    cache: str | Path | None = None,
) -> Path:
    """The root of MiniCity ``domain`` for these settings, generating it first if it is missing."""
    from adaptseg.data.minicity.generator import DOMAINS, MARKER, generate

    if domain not in DOMAINS:
        raise UserError(
            f"unknown MiniCity domain {domain!r}",
            fix=f"write minicity:<domain> with one of {', '.join(DOMAINS)}",
        )
    base = Path(cache).expanduser() if cache else minicity_cache()
    folder = base / f"s{seed}-{size[0]}x{size[1]}-n{images if images is not None else 'default'}"
    root = folder / domain
    # the generator moves a domain into place only once it is complete, with its minicity.json inside
    with file_lock(folder / f".{domain}.lock"):
        if not (root / MARKER).is_file():
            root = Path(
                generate(folder, seed=seed, images=images, size=tuple(size), domains=[domain])[domain]
            )
    return root


def resolve_root(root: str, *, minicity: Mapping[str, Any] | None = None) -> Path:
    """A dataset root from a recipe: a folder, or ``minicity:<domain>`` (generated on demand)."""
    if root.startswith(MINICITY_PREFIX):
        return minicity_root(root[len(MINICITY_PREFIX) :], **dict(minicity or {}))
    return Path(root).expanduser()


def open_dataset(
    name: str,
    root: str,
    split: str | None = None,
    *,
    labels: bool = True,
    options: Mapping[str, Any] | None = None,
    ids: Path | None = None,
    minicity: Mapping[str, Any] | None = None,
):
    """Open a dataset reader (``adaptseg.data.build_dataset``), optionally keeping only the ids in a file."""
    from adaptseg.data.datasets import build_dataset

    opts = dict(options or {})
    if not labels:
        opts["labels"] = False
    dataset = build_dataset(name, resolve_root(root, minicity=minicity), split, **opts)
    if ids is not None:
        if not ids.is_file():
            raise UserError(
                "id list not found", path=ids, fix="point 'ids' at a file with one sample id per line"
            )
        wanted = [line.strip() for line in ids.read_text().splitlines() if line.strip()]
        by_id = {entry.id: entry for entry in dataset.entries}
        unknown = [i for i in wanted if i not in by_id]
        if unknown:
            raise UserError(
                f"{len(unknown)} id(s) are not in {dataset!r}, e.g. {unknown[0]!r}",
                path=ids,
                fix="list ids of this dataset split (as `adaptseg data check` prints them)",
            )
        dataset.entries = [by_id[i] for i in wanted]
    if len(dataset) == 0:
        raise UserError(f"{dataset!r} has no samples", path=ids or root)
    return dataset


class ConcatReader:
    """Several dataset readers read as one, in order (DDB multi-source/-target; no domain labels).

    Offers what training and evaluation read from a reader: ``len``, ``[i]`` → ``Sample``, ``entries``,
    ``read_image``/``read_label``, ``has_labels`` and ``name`` (the first reader's, which picks the
    evaluation protocol).
    """

    def __init__(self, readers: Sequence[Any]):
        if not readers:
            raise ValueError("ConcatReader needs at least one reader")
        self.readers = list(readers)
        self.name = getattr(self.readers[0], "name", "")
        self.has_labels = all(getattr(r, "has_labels", True) for r in self.readers)
        self._starts = list(itertools.accumulate([0, *(len(r) for r in self.readers)]))

    @property
    def entries(self) -> list:
        return [entry for reader in self.readers for entry in reader.entries]

    def __len__(self) -> int:
        return self._starts[-1]

    def _locate(self, i: int) -> tuple[Any, int]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = bisect.bisect_right(self._starts, i) - 1
        return self.readers[k], i - self._starts[k]

    def __getitem__(self, i: int):
        reader, j = self._locate(i)
        return reader[j]

    def read_image(self, i: int) -> np.ndarray:
        reader, j = self._locate(i)
        return reader.read_image(j)

    def read_label(self, i: int) -> np.ndarray | None:
        reader, j = self._locate(i)
        return reader.read_label(j)

    def __repr__(self) -> str:
        return f"ConcatReader({', '.join(repr(r) for r in self.readers)})"


def with_normalize(
    pipeline: Sequence[Mapping[str, Any]], mean: Sequence[float], std: Sequence[float]
) -> Compose:
    """Build a pipeline spec; if it does not end by normalising, normalise with the model's mean/std."""
    compose = build_pipeline(list(pipeline))
    if not compose.steps or not isinstance(compose.steps[-1], Normalize):
        compose.steps.append(Normalize(tuple(mean), tuple(std)))
    return compose


# ----------------------------------------------------------------------------------------- sampling
def stream_key(name: str) -> int:
    """A stable integer for a stream name (part of every seed that stream uses)."""
    return zlib.crc32(name.encode("utf-8"))


@dataclass(frozen=True)
class StreamSampler:
    """Which sample sits at stream position ``p``, and the augmentation generator for it (module docstring)."""

    size: int
    seed: int
    key: int
    #: how many times a sample's crop may be redrawn when :meth:`accepts` refuses it (RCS: 10)
    crop_retries: int = 0

    def index(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        return int(np.random.default_rng([self.seed, self.key, epoch]).permutation(self.size)[offset])

    def rng(self, position: int, attempt: int = 0) -> np.random.Generator:
        """The augmentation generator of position ``position`` (``attempt`` > 0: of a redrawn crop)."""
        extra = [attempt] if attempt else []
        return np.random.default_rng([self.seed, self.key, position, 1, *extra])

    def accepts(self, position: int, label: np.ndarray | None) -> bool:
        """Whether the augmented sample at ``position`` is kept (always, for uniform sampling)."""
        return True

    def positions(self, iteration: int, rank: int, world_size: int, batch_size: int) -> range:
        start = (iteration * world_size + rank) * batch_size
        return range(start, start + batch_size)


def stream_sampler(reader, seed: int, key: int) -> StreamSampler:
    """Uniform epochs, or rare-class sampling when the reader carries its statistics (``rcs:`` streams)."""
    from adaptseg.data.rcs import RareClassReader

    if isinstance(reader, RareClassReader):
        return reader.sampler(seed, key)
    return StreamSampler(len(reader), seed, key)


class TrainStream:
    """One named stream: a reader, its augmentation pipeline, its batch size and its sampler."""

    def __init__(self, name: str, reader, transform: Compose, batch_size: int, seed: int):
        self.name = name
        self.reader = reader
        self.transform = transform
        self.batch_size = batch_size
        self.sampler = stream_sampler(reader, seed, stream_key(name))

    def sample(self, position: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        """The augmented sample at ``position``; its crop is redrawn while the sampler refuses it (RCS)."""
        item = self.reader[self.sampler.index(position)]
        for attempt in range(self.sampler.crop_retries + 1):
            image, label = self.transform(item.image, item.label, self.sampler.rng(position, attempt))
            if self.sampler.accepts(position, label):
                break
        return image, label, item.id

    def batch(self, iteration: int, rank: int, world_size: int) -> dict[str, Any]:
        samples = [
            self.sample(p) for p in self.sampler.positions(iteration, rank, world_size, self.batch_size)
        ]
        shapes = {s[0].shape for s in samples}
        if len(shapes) > 1:
            raise UserError(
                f"stream '{self.name}': augmented samples differ in size {sorted(shapes)}",
                fix="end its pipeline with a fixed-size random_crop and pad",
            )
        out: dict[str, Any] = {
            "image": torch.from_numpy(np.stack([s[0] for s in samples])),
            "id": [s[2] for s in samples],
        }
        labels = [s[1] for s in samples]
        if all(label is not None for label in labels):
            out["label"] = torch.from_numpy(np.stack(labels))
        return out


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _captured_log(name: str) -> Iterator[list[logging.LogRecord]]:
    """The records logger ``name`` (and its children) emit inside the block, kept instead of shown."""
    logger, handler = logging.getLogger(name), _Records()
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


class IterationBatches(Dataset):
    """Map-style dataset whose item ``t`` is this rank's whole batch (all streams) for iteration ``t``.

    In a loader worker, the batch also carries what the worker could not show itself (module docstring).
    """

    def __init__(self, streams: Mapping[str, TrainStream], rank: int = 0, world_size: int = 1):
        self.streams = dict(streams)
        self.rank = rank
        self.world_size = world_size

    def batch(self, iteration: int) -> dict[str, dict[str, Any]]:
        return {name: s.batch(iteration, self.rank, self.world_size) for name, s in self.streams.items()}

    def __getitem__(self, iteration: int) -> dict[str, Any]:
        if get_worker_info() is None:
            return self.batch(iteration)
        with _captured_log(DATA_LOGGER) as records:
            try:
                batch: dict[str, Any] = self.batch(iteration)
            except UserError as exc:  # torch would flatten it into a traceback string; send it whole
                batch = {_ERROR: exc}
        if records:
            batch[_LOGGED] = [(r.name, r.levelno, r.getMessage()) for r in records]
        return batch

    def __len__(self) -> int:  # the index space is unbounded; the loader's sampler picks the iterations
        return 2**62


class WorkerBatches:
    """Iterates a loader of :class:`IterationBatches` in the main process: logs what the workers logged
    (each message once), re-raises a worker's :class:`~adaptseg.errors.UserError` as itself."""

    def __init__(self, loader: DataLoader):
        self.loader = loader
        self._shown: set[str] = set()

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, dict[str, Any]]]:
        for batch in self.loader:
            for name, level, message in batch.pop(_LOGGED, ()):
                if message not in self._shown:
                    self._shown.add(message)
                    logging.getLogger(name).log(level, "%s", message)
            if _ERROR in batch:
                raise batch[_ERROR]
            yield batch


def build_loader(
    streams: Mapping[str, TrainStream],
    start: int,
    stop: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 2,
    pin_memory: bool = False,
    worker_init: Callable[[int], None] | None = None,
) -> WorkerBatches:
    """A loader over iterations ``start .. stop-1``; each item is the batch dict of one iteration.

    The loader owns a private ``torch.Generator`` so that creating it never consumes the global torch RNG
    (which would make a resumed run diverge from an uninterrupted one).
    """
    return WorkerBatches(
        DataLoader(
            IterationBatches(streams, rank, world_size),
            batch_size=None,
            sampler=range(start, stop),
            num_workers=workers,
            pin_memory=pin_memory,
            persistent_workers=False,
            prefetch_factor=2 if workers > 0 else None,
            worker_init_fn=worker_init,
            generator=torch.Generator().manual_seed(0),
        )
    )
