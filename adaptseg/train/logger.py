"""Where training scalars go: a CSV file, TensorBoard (when installed) and the console.

* ``scalars.csv`` in the stage folder, long format ``iteration,tag,value`` (the set of losses may change
  during a run). On resume the rows after the checkpoint's iteration — logged by the interrupted process
  after its last checkpoint — are dropped, so the file reads as one uninterrupted run.
* TensorBoard event files under ``<stage>/tb/`` if the ``tensorboard`` package is importable.
* The console: a Rich progress bar (iteration, losses, lr, it/s, ETA) on a terminal, plain lines every
  ``log_every`` iterations otherwise (CI logs, files).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

CSV_NAME = "scalars.csv"
HEADER = ["iteration", "tag", "value"]


class CSVWriter:
    """Appends ``iteration,tag,value`` rows to ``scalars.csv`` (flushed at every write)."""

    def __init__(self, path: Path, *, resume_from: int | None = None):
        self.path = path
        resuming = resume_from is not None and path.is_file()
        if resuming:
            self._truncate_after(resume_from)
        self._handle = open(path, "a" if resuming else "w", newline="")
        self._csv = csv.writer(self._handle)
        if not resuming:
            self._csv.writerow(HEADER)
            self._handle.flush()

    def _truncate_after(self, iteration: int) -> None:
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        # a killed writer may have left a torn last row: keep only well-formed rows up to the checkpoint
        kept = [r for r in rows[1:] if len(r) == 3 and r[0].isdigit() and int(r[0]) <= iteration]
        with open(self.path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(HEADER)
            writer.writerows(kept)

    def write(self, iteration: int, scalars: Mapping[str, float]) -> None:
        for tag, value in scalars.items():
            self._csv.writerow([iteration, tag, repr(float(value))])
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``scalars.csv`` back as ``{tag: [(iteration, value), …]}``."""
    out: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["tag"], []).append((int(row["iteration"]), float(row["value"])))
    return out


class TensorBoardWriter:
    """Scalars to TensorBoard event files; a no-op when ``tensorboard`` is not installed."""

    def __init__(self, folder: Path, *, purge_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            self._writer = None
            return
        self._writer = SummaryWriter(str(folder), purge_step=purge_step)

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def write(self, iteration: int, scalars: Mapping[str, float]) -> None:
        if self._writer is not None:
            for tag, value in scalars.items():
                self._writer.add_scalar(tag, value, iteration)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def format_scalars(scalars: Mapping[str, float]) -> str:
    parts = []
    for tag, value in scalars.items():
        name = tag.split("/", 1)[-1]
        parts.append(
            f"{name} {value:.3e}" if tag.startswith("lr") or abs(value) < 1e-3 else f"{name} {value:.4f}"
        )
    return "  ".join(parts)


class ConsoleProgress:
    """A Rich progress bar on a terminal; plain periodic lines elsewhere."""

    def __init__(self, stage: str, start: int, total: int, *, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.stage = stage
        self.total = total
        self._t0 = time.perf_counter()
        self._start = start
        self._progress: Progress | None = None
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn(f"[bold]{stage}[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[scalars]}"),
                console=self.console,
                transient=False,
            )
            self._task = self._progress.add_task(stage, total=total, completed=start, rate="", scalars="")
            self._progress.start()

    def update(self, iteration: int, scalars: Mapping[str, float], rate: float) -> None:
        """Report that ``iteration`` iterations are done, with the latest scalars and it/s."""
        text = format_scalars(scalars)
        if self._progress is not None:
            self._progress.update(self._task, completed=iteration, rate=f"{rate:.2f} it/s", scalars=text)
            return
        remaining = (self.total - iteration) / rate if rate > 0 else math.inf
        eta = time.strftime("%H:%M:%S", time.gmtime(remaining)) if math.isfinite(remaining) else "?"
        self.console.print(
            f"{self.stage} {iteration}/{self.total}  {rate:.2f} it/s  eta {eta}  {text}",
            highlight=False,
            soft_wrap=True,
        )

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
