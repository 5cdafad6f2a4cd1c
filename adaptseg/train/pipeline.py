"""Running a recipe: its stages in order, each under ``RUN_DIR/<stage>/``, skipping finished ones.

* ``RUN_DIR/recipe.yaml`` holds the resolved recipe. A run folder belongs to one recipe: running a
  different one into it is an error naming the first differing key (so "finished" always means finished
  *with these settings*).
* A stage is **complete** when ``<stage>/DONE`` exists and every output it lists is present. ``DONE`` is
  written last, atomically, after the outputs; complete stages are skipped on re-run.
* An interrupted training stage (a ``checkpoint-last.pt`` without ``DONE``) continues with ``--resume``;
  without it the run stops with an error rather than silently starting over.
* ``--stage NAME`` runs only that stage (its inputs from earlier stages must exist).
* One process at a time: the run holds an exclusive lock on the folder (:mod:`adaptseg.train.run_lock`)
  for as long as it runs, so a second run into it is told "in use by pid N" instead of finding a live
  stage that looks interrupted. Tasks (pseudo-labelling, statistics) run inside that lock.
* Ctrl-C stops the run with exit status 130 and one line naming the stage and the command that resumes
  it; a file-system failure (no space, permission) is one line naming the path.

Stage kinds: a training :class:`~adaptseg.methods.base.Method` runs in the
:class:`~adaptseg.train.trainer.Trainer` (outputs: its exported weights such as ``student.safetensors``,
``checkpoint-last.pt``, ``scalars.csv`` and the method's extra files); a
:class:`~adaptseg.methods.base.Task` runs its function (outputs: the files it reports).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from adaptseg.config import dump_recipe, load_recipe, validate
from adaptseg.data.datasets.base import strict_labels
from adaptseg.errors import UserError
from adaptseg.io import write_json_atomic, write_text_atomic
from adaptseg.methods.base import Method, StageMethod, Task, get_method
from adaptseg.train import checkpoint as ckpt
from adaptseg.train.config import Recipe, StageSpec, stage_recipe
from adaptseg.train.context import StageContext
from adaptseg.train.distributed import (
    DistInfo,
    barrier,
    broadcast_object,
    dist_from_env,
    init_distributed,
    pick_device,
    shutdown_distributed,
)
from adaptseg.train.run_lock import run_dir_lock

DONE_NAME = "DONE"
RECIPE_NAME = "recipe.yaml"
#: recipe keys that change how a run is watched, not what it computes; they may differ between re-runs
RUNTIME_KEYS = ("workers", "log_every", "checkpoint_every", "eval", "strict_labels")


class RunInterrupted(UserError):
    """Ctrl-C stopped a run: one line saying which stage and how to resume it, exit status 130."""

    exit_code = 130


@dataclass
class StageResult:
    name: str
    status: str  # "ran", "resumed", "skipped"
    outputs: list[str]


def default_run_dir(recipe_path: str | Path) -> Path:
    """``runs/<method folder>-<recipe name>``, e.g. ``runs/source_only-gta5-cityscapes``."""
    path = Path(recipe_path)
    return Path("runs") / f"{path.parent.name}-{path.stem}"


def stage_complete(out_dir: Path) -> bool:
    """True when ``DONE`` exists and every output it lists is present."""
    marker = out_dir / DONE_NAME
    if not marker.is_file():
        return False
    try:
        outputs = json.loads(marker.read_text())["outputs"]
    except (ValueError, KeyError, TypeError):
        return False
    return all((out_dir / name).exists() for name in outputs)


def _first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = _first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
            if found:
                return found
        return None
    return None if a == b else prefix or "<root>"


def bind_run_dir(run_dir: Path, recipe: Recipe, info: DistInfo) -> None:
    """Claim ``run_dir`` for ``recipe``: write ``recipe.yaml``, or check that the one there is the same.

    Keys in :data:`RUNTIME_KEYS` may differ (more loader workers on a resume change no result).
    """
    if info.is_main:
        path = run_dir / RECIPE_NAME
        text = dump_recipe(recipe)
        if path.is_file():
            old, new = yaml.safe_load(path.read_text()) or {}, yaml.safe_load(text)
            for runtime in RUNTIME_KEYS:
                old.pop(runtime, None)
                new.pop(runtime, None)
            key = _first_difference(old, new)
            if key is not None:
                raise UserError(
                    f"this run folder holds a run of a different recipe (first difference: '{key}')",
                    path=run_dir,
                    fix="pass another --out, or delete the folder to start over",
                )
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, text)
    barrier(info)


def build_stage_method(
    recipe: Recipe,
    stage: StageSpec,
    ctx: StageContext | None,
    source: Path | None,
    overrides: Sequence[str] = (),
) -> StageMethod:
    """The method object of a stage, its options validated by the method's own schema.

    ``overrides`` are the ``--set`` texts the recipe was loaded with, so that an error names the one that
    wrote a bad option.
    """
    cls = get_method(stage.method)
    options = validate(
        cls.Options,
        stage.options,
        source=f"{source} (stages.{stage.name}.options)" if source else None,
        overrides=overrides,
        at=("stages", recipe.stages.index(stage), "options"),
    )
    if ctx is None:
        return options  # type: ignore[return-value]  # validation only
    ctx.options = options
    return cls(options, ctx)


def check_recipe(recipe: Recipe, source: Path | None = None, overrides: Sequence[str] = ()) -> None:
    """Validate everything that can be checked before any work: methods, their options, stage overrides."""
    for stage in recipe.stages:
        build_stage_method(recipe, stage, None, source, overrides)
        resolved = stage_recipe(recipe, stage, source=source)
        cls = get_method(stage.method)
        if issubclass(cls, Method) and (resolved.optim is None or resolved.schedule is None):
            raise UserError(
                f"stage '{stage.name}' trains ({stage.method}): the recipe needs 'optim' and 'schedule'",
                path=source,
            )


class RecipeRunner:
    """Runs a recipe's stages in one process (one of several under ``torchrun``)."""

    def __init__(
        self,
        recipe: Recipe,
        run_dir: str | Path,
        *,
        recipe_path: Path | None = None,
        overrides: Sequence[str] = (),
        console: Console | None = None,
    ):
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.recipe_path = recipe_path
        self.overrides = tuple(overrides)
        self.console = console or Console(stderr=True)
        self.info = dist_from_env()
        self.device = pick_device(recipe.device, self.info)
        #: the stage running now (named when Ctrl-C stops the run)
        self.current: StageSpec | None = None

    def _say(self, text: str) -> None:
        if self.info.is_main:
            self.console.print(text, highlight=False)

    def run(self, *, stage: str | None = None, resume: bool = False) -> list[StageResult]:
        check_recipe(self.recipe, self.recipe_path, self.overrides)
        stages = [self.recipe.stage(stage)] if stage else list(self.recipe.stages)
        owns_group = init_distributed(self.info, self.device)
        try:
            with self._hold_run_dir(), strict_labels(self.recipe.strict_labels):
                bind_run_dir(self.run_dir, self.recipe, self.info)
                results = [self.run_stage(s, resume=resume) for s in stages]
                barrier(self.info)  # no rank tears the group down while another still talks to it
                return results
        except KeyboardInterrupt:
            raise self._interrupted(stage) from None
        except OSError as exc:  # a full disk, a folder made read-only under a running job
            raise UserError.from_os_error(exc, path=None if exc.filename else self.run_dir) from None
        finally:
            if owns_group:
                shutdown_distributed()

    @contextlib.contextmanager
    def _hold_run_dir(self) -> Iterator[None]:
        """The run folder's lock, held by rank 0 for the whole run; every rank stops if it is taken."""
        with contextlib.ExitStack() as held:
            refused = None
            if self.info.is_main:
                try:
                    held.enter_context(run_dir_lock(self.run_dir))
                except UserError as exc:
                    refused = exc
            refused = broadcast_object(refused, self.info)
            if refused is not None:
                raise refused
            yield

    def resume_command(self, stage: str | None) -> str:
        """The command line that continues this run where it stopped."""
        args = ["adaptseg", "train", str(self.recipe_path or "RECIPE"), "--out", str(self.run_dir)]
        for text in self.overrides:
            args += ["--set", text]
        if stage is not None:
            args += ["--stage", stage]
        return shlex.join([*args, "--resume"])

    def _interrupted(self, stage: str | None) -> RunInterrupted:
        command = self.resume_command(stage)
        if self.current is None:
            return RunInterrupted(
                "interrupted before any stage started", path=self.run_dir, fix=f"run it again: {command}"
            )
        out_dir = self.run_dir / self.current.name
        kept = (
            "its last checkpoint is kept"
            if (out_dir / ckpt.CHECKPOINT_NAME).is_file()
            else "it had no checkpoint yet and starts over"
        )
        return RunInterrupted(
            f"stage '{self.current.name}' interrupted ({kept})", path=out_dir, fix=f"resume with: {command}"
        )

    def run_stage(self, spec: StageSpec, *, resume: bool = False) -> StageResult:
        out_dir = self.run_dir / spec.name
        self.current = spec
        if stage_complete(out_dir):
            self._say(f"stage '{spec.name}': complete, skipped ({out_dir})")
            return StageResult(spec.name, "skipped", json.loads((out_dir / DONE_NAME).read_text())["outputs"])
        recipe = stage_recipe(self.recipe, spec, source=self.recipe_path)
        ctx = StageContext(
            stage=spec,
            recipe=recipe,
            run_dir=self.run_dir,
            device=self.device,
            dist=self.info,
            recipe_path=self.recipe_path,
            stage_names=tuple(s.name for s in self.recipe.stages),
        )
        method = build_stage_method(self.recipe, spec, ctx, self.recipe_path, self.overrides)
        started = time.time()
        if isinstance(method, Method):
            outputs, status = self._train(ctx, method, resume)
        elif isinstance(method, Task):
            outputs, status = self._task(ctx, method), "ran"
        else:  # pragma: no cover - register_method enforces the two kinds
            raise TypeError(f"{type(method).__name__} is neither a Method nor a Task")
        if self.info.is_main:
            write_json_atomic(
                out_dir / DONE_NAME,
                {
                    "stage": spec.name,
                    "method": spec.method,
                    "outputs": outputs,
                    "seconds": round(time.time() - started, 1),
                },
            )
        barrier(self.info)
        self._say(f"stage '{spec.name}': done → {out_dir}")
        return StageResult(spec.name, status, outputs)

    def _train(self, ctx: StageContext, method: Method, resume: bool) -> tuple[list[str], str]:
        from adaptseg.train.trainer import Trainer

        out_dir = ctx.out_dir
        has_checkpoint = broadcast_object((out_dir / ckpt.CHECKPOINT_NAME).is_file(), self.info)
        if has_checkpoint and not resume:
            raise UserError(
                f"stage '{ctx.name}' was interrupted (it has a checkpoint but no {DONE_NAME})",
                path=out_dir,
                fix="pass --resume to continue it, or delete the stage folder to restart it",
            )
        if resume and not has_checkpoint:
            self._say(f"stage '{ctx.name}': no checkpoint to resume, starting it")
        if self.info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            ckpt.clean_stale_temporaries(out_dir)
        barrier(self.info)
        self._say(
            f"stage '{ctx.name}' ({ctx.stage.method}) on {self.device}, {self.info.world_size} process(es)"
        )
        trainer = Trainer(ctx, method, resume=resume and has_checkpoint, console=self.console)
        trainer.train()
        outputs = trainer.export()
        from adaptseg.train.logger import CSV_NAME

        return [*outputs, ckpt.CHECKPOINT_NAME, CSV_NAME], "resumed" if resume and has_checkpoint else "ran"

    def _task(self, ctx: StageContext, task: Task) -> list[str]:
        if self.info.is_main:
            ctx.out_dir.mkdir(parents=True, exist_ok=True)
        barrier(self.info)
        self._say(f"stage '{ctx.name}' ({ctx.stage.method})")
        outputs: list[str] = []
        if task.distributed or self.info.is_main:
            outputs = list(task.run())
        barrier(self.info)
        return broadcast_object(outputs, self.info)


def run_recipe(
    recipe_path: str | Path,
    overrides: Sequence[str] = (),
    *,
    out: str | Path | None = None,
    stage: str | None = None,
    resume: bool = False,
    strict: bool = False,
    console: Console | None = None,
) -> list[StageResult]:
    """``adaptseg train``: load, override and validate a recipe, then run its stages.

    ``strict`` (``--strict``) stops on label values outside a dataset's label map instead of warning, as the
    recipe's ``strict_labels: true`` does.
    """
    path = Path(recipe_path)
    recipe = load_recipe(Recipe, path, overrides)
    if strict:
        recipe.strict_labels = True
    runner = RecipeRunner(
        recipe, out or default_run_dir(path), recipe_path=path, overrides=overrides, console=console
    )
    return runner.run(stage=stage, resume=resume)
