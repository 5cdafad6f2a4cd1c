"""``adaptseg data check``: validate a dataset tree before training on it (issue #2, item 6).

For each split: counts, images without a label and label files without an image, image/label size
mismatches (the GTA5 pitfall, shared/datasets.md §10), raw label values the encoding does not define,
and files that cannot be decoded. Every image and label is decoded, in a small thread pool (OpenCV and
zlib release the GIL), with a progress bar on a terminal.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from adaptseg.data.datasets import SegDataset, dataset_class
from adaptseg.data.datasets.base import MissingFolder
from adaptseg.errors import UserError

#: How many example files a report lists per problem before "… and N more".
EXAMPLES = 10


@dataclass
class FileProblems:
    """What reading one entry found."""

    label_path: Path | None = None
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    size_mismatch: tuple[Path, tuple[int, int], tuple[int, int]] | None = None  # label, image hw, label hw
    unknown_values: list[int] = field(default_factory=list)


@dataclass
class SplitCheck:
    """The findings for one split. ``absent`` explains a split whose folder is not in the tree."""

    split: str
    images: int = 0
    labelled: int = 0
    has_labels: bool = True
    absent: str | None = None
    error: str | None = None  # the split could not be opened (empty split, missing label folder)
    unpaired_images: list[Path] = field(default_factory=list)
    unpaired_labels: list[Path] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)
    size_mismatches: list[tuple[Path, tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    unknown_values: dict[int, list[Path]] = field(default_factory=dict)  # raw value → label files
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return (
            (self.error is not None)
            + len(self.unpaired_images)
            + len(self.unpaired_labels)
            + len(self.missing_images)
            + len(self.size_mismatches)
            + len(self.unknown_values)
            + len(self.unreadable)
        )


@dataclass
class CheckReport:
    """The result of :func:`check_dataset`; ``ok`` when every split present is clean."""

    dataset: str
    root: Path
    splits: list[SplitCheck]

    @property
    def ok(self) -> bool:
        present = [s for s in self.splits if s.absent is None]
        return bool(present) and all(s.problems == 0 for s in present)

    def print(self, console=None) -> None:  # noqa: ANN001 - rich.console.Console
        """Print the per-split table and every problem (with example files) to the terminal."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console(highlight=False)
        table = Table(title=f"{self.dataset} at {self.root}", title_justify="left")
        headers = ("split", "images", "labelled", "unpaired", "sizes", "values", "unreadable", "status")
        for header in headers:
            table.add_column(
                header, justify="left" if header in ("split", "status") else "right", no_wrap=True
            )
        for s in self.splits:
            if s.absent is not None:
                table.add_row(s.split, "-", "-", "-", "-", "-", "-", "[yellow]absent[/]")
                continue
            status = "[green]ok[/]" if s.problems == 0 else "[red]FAIL[/]"
            table.add_row(
                s.split,
                str(s.images),
                str(s.labelled) if s.has_labels else "no labels",
                str(len(s.unpaired_images) + len(s.unpaired_labels) + len(s.missing_images)),
                str(len(s.size_mismatches)),
                str(len(s.unknown_values)),
                str(len(s.unreadable)),
                status,
            )
        console.print(table)
        for s in self.splits:
            _print_details(console, s)
        if self.ok:
            console.print("[green]clean:[/] no problems found")
        else:
            total = sum(s.problems for s in self.splits if s.absent is None)
            console.print(
                f"[red]not clean:[/] {total} problem(s)" if total else "[red]not clean:[/] no split found"
            )


def _print_details(console, s: SplitCheck) -> None:  # noqa: ANN001
    def section(title: str, lines: list[str]) -> None:
        console.print(f"[bold]{s.split}[/]: {title}")
        for line in lines[:EXAMPLES]:
            console.print(f"  {line}", markup=False, soft_wrap=True)
        if len(lines) > EXAMPLES:
            console.print(f"  … and {len(lines) - EXAMPLES} more", markup=False)

    if s.absent is not None:
        console.print(f"[bold]{s.split}[/]: absent (not checked)")
        console.print(f"  {s.absent}", markup=False, soft_wrap=True)
        return
    if s.error is not None:
        section("cannot be read", [s.error])
    if s.unpaired_images:
        section(f"{len(s.unpaired_images)} image(s) without a label", [str(p) for p in s.unpaired_images])
    if s.unpaired_labels:
        section(
            f"{len(s.unpaired_labels)} label file(s) without an image", [str(p) for p in s.unpaired_labels]
        )
    if s.missing_images:
        section(f"{len(s.missing_images)} id(s) listed in the split but without an image", s.missing_images)
    if s.size_mismatches:
        lines = [f"{p}: label {lh[1]}x{lh[0]}, image {ih[1]}x{ih[0]}" for p, ih, lh in s.size_mismatches]
        section(f"{len(s.size_mismatches)} image/label size mismatch(es)", lines)
    if s.unknown_values:
        lines = [
            f"value {value} in {len(files)} file(s), e.g. {', '.join(str(f) for f in files[:3])}"
            for value, files in sorted(s.unknown_values.items())
        ]
        section(f"{len(s.unknown_values)} unknown raw label value(s)", lines)
    if s.unreadable:
        section(f"{len(s.unreadable)} unreadable file(s)", [message for _, message in s.unreadable])


def _check_entry(dataset: SegDataset, i: int) -> FileProblems:
    """Decode entry ``i``'s image and raw label; note what is broken."""
    entry = dataset.entries[i]
    found = FileProblems(label_path=entry.label_path)
    image_hw = None
    try:
        image_hw = dataset.read_image(i).shape[:2]
    except UserError as exc:
        found.unreadable.append((entry.image_path, str(exc)))
    if entry.label_path is None:
        return found
    try:
        raw = dataset.raw_label_values(i)
    except UserError as exc:
        found.unreadable.append((entry.label_path, str(exc)))
        return found
    if image_hw is not None and raw.shape[:2] != image_hw:
        found.size_mismatch = (entry.label_path, image_hw, raw.shape[:2])
    found.unknown_values = dataset.encoding_of(entry).unknown_values(raw)
    return found


def _open(
    cls: type[SegDataset], root: Path, split: str, named: bool, result: SplitCheck
) -> SegDataset | None:
    """Open one split leniently; record why it could not be opened. Re-raise if the user named it."""
    try:
        return cls(root, split, strict=False)
    except MissingFolder as exc:
        if exc.role == "labels":  # images are there but the label folder is not: every image is unpaired
            result.error = str(exc)
            dataset = cls(root, split, strict=False, labels=False)
            result.unpaired_images = [e.image_path for e in dataset.entries]
            result.images = len(dataset)
            return None
        if named:
            raise
        result.absent = str(exc)
    except UserError as exc:
        if named:
            raise
        result.error = str(exc)
    return None


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own warnings on corrupt files while checking: the report names them instead."""
    import cv2

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def _check_split(dataset: SegDataset, result: SplitCheck, workers: int) -> None:
    from rich.console import Console
    from rich.progress import Progress

    result.images, result.has_labels = len(dataset), dataset.has_labels
    result.labelled = sum(e.label_path is not None for e in dataset.entries)
    result.unpaired_images = list(dataset.unpaired_images)
    result.unpaired_labels = list(dataset.unpaired_labels)
    result.missing_images = list(dataset.missing_images)
    console = Console(stderr=True)
    with (
        _quiet_opencv(),
        Progress(console=console, transient=True, disable=not console.is_terminal) as progress,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        task = progress.add_task(f"{dataset.name} {dataset.split}", total=len(dataset))
        for found in pool.map(lambda i: _check_entry(dataset, i), range(len(dataset))):
            progress.advance(task)
            result.unreadable.extend(found.unreadable)
            if found.size_mismatch is not None:
                result.size_mismatches.append(found.size_mismatch)
            for value in found.unknown_values:
                result.unknown_values.setdefault(value, []).append(found.label_path)


def check_dataset(
    name: str, root: str | Path, split: str | None = None, *, workers: int | None = None
) -> CheckReport:
    """Check the tree of dataset ``name`` at ``root``: the named split, or every split it has.

    A missing root, an unknown dataset or split, or a named split that is absent raise UserError
    (exit 2 on the command line); problems inside the tree make ``report.ok`` false (exit 1).
    """
    cls = dataset_class(name)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(
            f"{cls.name} root not found", path=root, fix=f"pass the folder that holds the {cls.name} layout"
        )
    splits = [split] if split is not None else list(cls.check_splits or cls.splits)
    workers = workers or min(8, os.cpu_count() or 1)
    results = []
    for s in splits:
        result = SplitCheck(s)
        dataset = _open(cls, root, s, split is not None, result)
        if dataset is not None:
            _check_split(dataset, result, workers)
        results.append(result)
    if all(r.absent is not None for r in results):
        raise UserError(
            f"no {cls.name} split found under {root} ({', '.join(splits)}); first: {results[0].absent}"
        )
    return CheckReport(cls.name, root, results)
