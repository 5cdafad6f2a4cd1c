"""Run a model over many images and keep what comes out: a folder of images → prediction PNGs
(``adaptseg infer``), a dataset split → a pseudo-label store (``adaptseg pseudo-label``).

Both loops run the same way (:func:`run_engine`): a Rich progress bar on stderr, and unreadable images
reported by name and skipped while the rest are written. The CLI, the demo and the benches call these
functions; the caller decides what a skip means (the CLI exits with status 1).

Output names of :func:`segment_folder` mirror the input folder: ``sub/a.jpg`` → ``label/sub/a.png``.
When two inputs share a stem (``a.jpg`` and ``a.png`` side by side) both keep their full file name,
``label/a.jpg.png`` and ``label/a.png.png``, so that neither overwrites the other; unique stems keep the
short name, so adding a file never renames the outputs of a folder without collisions.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from rich.console import Console

from adaptseg.errors import UserError
from adaptseg.infer.config import InferenceConfig
from adaptseg.infer.engine import Prediction, SlidingWindow
from adaptseg.infer.ranks import DistInfo, all_gather_object, barrier, gathered_sum, shard
from adaptseg.infer.sources import EngineItem, SideLoads, dataset_items, file_items, progress_bar
from adaptseg.infer.store import PseudoLabelStore
from adaptseg.infer.writers import PredictionWriter
from adaptseg.io import list_images


@dataclass
class RunSummary:
    """What a run over many images did."""

    written: int = 0  #: images whose outputs were written
    skipped: list[str] = field(default_factory=list)  #: ids of unreadable images, in the order met
    already: int = 0  #: images found complete and left as they were (a resumed pseudo-label run)


def run_engine(
    engine: SlidingWindow,
    items: Iterable[EngineItem],
    total: int,
    consume: Callable[[Prediction], None],
    *,
    label: str,
    console: Console | None = None,
    skip_unreadable: bool = True,
) -> list[str]:
    """Feed ``items`` through ``engine`` with a progress bar and hand each prediction to ``consume``.

    With ``skip_unreadable`` an image that cannot be read is reported on ``console`` by name and
    skipped (its id is returned); otherwise its :class:`UserError` ends the run.
    """
    console = console or Console(stderr=True)
    skipped: list[str] = []

    def report(image_id: str, error: UserError) -> None:
        skipped.append(image_id)
        console.print(f"[yellow]skipped[/] {error}", highlight=False, soft_wrap=True)

    with progress_bar(label, total, console) as progress:
        task = progress.add_task(label, total=total)
        for prediction in engine.run(items, on_error=report if skip_unreadable else None):
            consume(prediction)
            progress.advance(task)
    if engine.batch_probe is not None:  # batch_size: auto says what it chose and why
        console.print(engine.batch_probe.summary(), highlight=False, soft_wrap=True)
    return skipped


# ------------------------------------------------------------------------------------ a folder of images
def output_names(files: Sequence[Path], folder: Path) -> list[str]:
    """Output names (relative, without ``.png``) of input files under ``folder``, one distinct name each.

    ``sub/a.jpg`` → ``sub/a``; inputs whose short names collide (``a.jpg``, ``a.png``) keep their full
    file name (``a.jpg``, ``a.png``) instead.
    """
    full = [f.relative_to(folder).as_posix() for f in files]
    names = [PurePosixPath(r).with_suffix("").as_posix() for r in full]
    while True:  # a full name can equal another input's short name (a.jpg beside a.jpg.png): repeat
        counts = Counter(names)
        clashing = [i for i, name in enumerate(names) if counts[name] > 1 and name != full[i]]
        if not clashing:
            return names
        for i in clashing:
            names[i] = full[i]


def input_images(folder: str | Path) -> list[Path]:
    """The image files under ``folder`` (recursive, sorted); a UserError when there are none to segment."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError("is a file, not a folder", path=folder, fix="pass the folder that holds the images")
    files = list_images(folder)
    if not files:
        raise UserError("no images in this folder", path=folder, fix="pass a folder holding .png/.jpg images")
    return files


def segment_folder(
    backend: Any,
    folder: str | Path,
    out: str | Path,
    config: InferenceConfig,
    *,
    kinds: Sequence[str] = ("label",),
    console: Console | None = None,
) -> RunSummary:
    """Segment every image under ``folder`` (recursive) and write the ``kinds`` of output under ``out``.

    ``kinds`` are those of :class:`~adaptseg.infer.writers.PredictionWriter` (``label`` always);
    names follow the module docstring. Returns how many images were written and which were skipped.
    """
    folder = Path(folder)
    files = input_images(folder)
    names = output_names(files, folder)
    ids = [f.relative_to(folder).as_posix() for f in files]
    writer = PredictionWriter(out, kinds)
    images = SideLoads() if "overlay" in writer.kinds else None
    summary = RunSummary()

    def write(prediction: Prediction) -> None:
        label = prediction.label().to("cpu").numpy()
        confidence = prediction.confidence().cpu() if "confidence" in writer.kinds else None
        prediction.release()
        image = images.pop(prediction.index) if images is not None else None
        writer.write(names[prediction.index], label, confidence, image)
        summary.written += 1

    engine = SlidingWindow(backend, config)
    summary.skipped = run_engine(
        engine, file_items(files, ids, images=images), len(files), write, label="segmenting", console=console
    )
    return summary


# ------------------------------------------------------------------------------------------- a dataset split
def pseudo_label_split(
    backend: Any,
    dataset: Any,
    store: PseudoLabelStore,
    config: InferenceConfig,
    *,
    console: Console | None = None,
    dist: DistInfo | None = None,
) -> RunSummary:
    """Write the pseudo-labels of every image of ``dataset`` that ``store`` does not hold complete yet.

    The store is opened for writing here (its record of what made it is checked first), so a resumed
    run only labels what an interrupted one left undone. Under ``torchrun`` (``dist``) each rank labels
    its shard (:func:`~adaptseg.infer.ranks.shard`) into the same store — rank 0 opens it first and
    writes ``store.json`` — and every rank returns the totals of all ranks.
    """
    dist = dist or DistInfo()
    num_classes = int(backend.num_classes)
    if dist.is_main:
        store.open_for_writing(num_classes)
    barrier(dist)  # store.json exists and stale temporary files are gone before any rank writes
    if not dist.is_main:
        store.open_for_writing(num_classes, clean=False)
    mine = shard(range(len(dataset)), dist)
    todo = [i for i in mine if not store.is_complete(dataset.entries[i].id)]
    summary = RunSummary(already=len(mine) - len(todo))

    def write(prediction: Prediction) -> None:
        store.write(prediction.id, prediction.output)
        prediction.release()
        summary.written += 1

    engine = SlidingWindow(backend, config)
    summary.skipped = run_engine(
        engine, dataset_items(dataset, todo), len(todo), write, label="pseudo-labelling", console=console
    )
    if dist.enabled:
        summary.written, summary.already = gathered_sum([summary.written, summary.already], dist)
        summary.skipped = [i for ids in all_gather_object(summary.skipped, dist) for i in ids]
    return summary


# ------------------------------------------------------------------------------------------- --model
#: suffixes that make a ``--model`` argument a file path rather than a preset name
MODEL_SUFFIXES = (".safetensors", ".pth", ".pt", ".onnx", ".engine", ".plan", ".json")


def check_model_path(model: str | Path) -> None:
    """Say "no such path" for a ``--model`` that looks like a path (it has a folder separator or a model
    file's suffix) but does not exist, with the nearest name in its deepest existing folder."""
    text = str(model)
    path = Path(text).expanduser()
    looks_like_path = "/" in text or "\\" in text or path.suffix.lower() in MODEL_SUFFIXES
    if not looks_like_path or path.exists():
        return
    parent = path.parent
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    missing = path.relative_to(parent).parts[0] if path.is_relative_to(parent) else path.name
    entries = [p.name for p in parent.iterdir() if not p.name.startswith(".")] if parent.is_dir() else []
    close = difflib.get_close_matches(missing, entries, n=1)
    fix = f"did you mean {parent / close[0]}?" if close else "check the run folder or file name"
    raise UserError("no such path", path=path, fix=fix)
