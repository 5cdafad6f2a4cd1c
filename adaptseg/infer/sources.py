"""Engine inputs from datasets and folders, read lazily in the engine's reader threads.

The engine decodes an item by calling its loader in a reader thread; a :class:`SideLoads` lets the
loader fetch more for the same image there (a label to score against, the image itself for an
overlay), which the consumer collects when the image's prediction comes out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from adaptseg.io import read_image

EngineItem = tuple[str, Callable[[], np.ndarray]]


class SideLoads:
    """Values loaded beside images in reader threads, by image index; each is taken out exactly once."""

    def __init__(self) -> None:
        self._values: dict[int, Any] = {}
        self._lock = threading.Lock()

    def put(self, index: int, value: Any) -> None:
        with self._lock:
            self._values[index] = value

    def pop(self, index: int) -> Any:
        with self._lock:
            return self._values.pop(index)

    def discard(self, index: int) -> None:
        with self._lock:
            self._values.pop(index, None)

    def __len__(self) -> int:
        return len(self._values)


def dataset_items(
    dataset: Any, indices: Sequence[int] | None = None, *, labels: SideLoads | None = None
) -> Iterator[EngineItem]:
    """``(id, loader)`` for entries of a dataset (``dataset.entries[i].id``, ``dataset.read_image(i)``).

    With ``labels``, each loader also reads the entry's label into it, keyed by the position in
    ``indices`` (the prediction's ``index``).
    """
    indices = range(len(dataset.entries)) if indices is None else indices
    for position, i in enumerate(indices):
        yield dataset.entries[i].id, _dataset_loader(dataset, i, position, labels)


def _dataset_loader(
    dataset: Any, i: int, position: int, labels: SideLoads | None
) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        image = dataset.read_image(i)
        if labels is not None:
            labels.put(position, dataset.read_label(i))
        return image

    return load


def file_items(
    paths: Sequence[Path], ids: Sequence[str], *, images: SideLoads | None = None
) -> Iterator[EngineItem]:
    """``(id, loader)`` for image files; with ``images`` the decoded image is also kept for the consumer."""
    for position, (path, image_id) in enumerate(zip(paths, ids, strict=True)):
        yield image_id, _file_loader(path, position, images)


def _file_loader(path: Path, position: int, images: SideLoads | None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        image = read_image(path)
        if images is not None:
            images.put(position, image)
        return image

    return load


def progress_bar(label: str, total: int, console: Console | None = None) -> Progress:
    """The Rich progress bar long inference work shows on stderr (hidden when nothing is to do)."""
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=True,
        disable=total == 0,
    )
