"""The demo's steps as the user sees them: a numbered header with a time estimate, the work's own progress
bars (MiniCity generation, the trainer's it/s + ETA lines, evaluation), and a footer with the wall and CPU
time it took. Timings are kept for ``results.json``.

CPU time is the process's user + system time *including child processes* (MiniCity renders in spawned
workers), so ``cpu / wall`` shows how many of the cores a step kept busy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from rich.console import Console


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def fmt_seconds(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


@dataclass
class StepTiming:
    key: str
    title: str
    estimate_s: float
    wall_s: float = 0.0
    cpu_s: float = 0.0


@dataclass
class Plan:
    """The ordered steps with their estimates; :meth:`step` runs one under a header and a footer."""

    steps: list[StepTiming]
    console: Console

    @classmethod
    def of(cls, steps: list[tuple[str, str, float]], console: Console) -> Plan:
        return cls([StepTiming(key, title, est) for key, title, est in steps], console)

    @property
    def estimate_s(self) -> float:
        return sum(s.estimate_s for s in self.steps)

    def announce(self) -> None:
        self.console.print(
            f"[bold]{len(self.steps)} steps, about {fmt_seconds(self.estimate_s)} in all "
            "on 2 idle CPU cores[/bold] (finished steps of an earlier run are reused)"
        )

    @contextmanager
    def step(self, key: str) -> Iterator[StepTiming]:
        index = next(i for i, s in enumerate(self.steps) if s.key == key)
        timing = self.steps[index]
        left = sum(s.estimate_s for s in self.steps[index:])
        self.console.print(
            f"[bold cyan]\\[{index + 1}/{len(self.steps)}] {timing.title}[/bold cyan] — estimate "
            f"{fmt_seconds(timing.estimate_s)} (≈ {fmt_seconds(left)} left in all)",
            highlight=False,
            soft_wrap=True,
        )
        wall, cpu = time.perf_counter(), cpu_seconds()
        yield timing
        timing.wall_s = round(time.perf_counter() - wall, 1)
        timing.cpu_s = round(cpu_seconds() - cpu, 1)
        self.console.print(
            f"  [green]done[/green] in {fmt_seconds(timing.wall_s)} (CPU {fmt_seconds(timing.cpu_s)})",
            highlight=False,
        )

    def timings(self) -> list[dict]:
        return [asdict(s) for s in self.steps]
