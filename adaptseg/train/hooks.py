"""Trainer hooks (detectron2 style): side jobs around the step — logging, evaluation, checkpoints.

A hook sees the :class:`~adaptseg.train.trainer.Trainer` and is called ``before_train``, ``after_step``
(with the iteration just done and its detached losses) and ``after_train``. The Trainer runs them in
order: logging, then evaluation (which also keeps the best model on val when the recipe asks), then
checkpointing, so a checkpoint follows everything logged and selected before it.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from torch import Tensor

from adaptseg.errors import UserError
from adaptseg.train.distributed import barrier
from adaptseg.train.logger import ConsoleProgress

if TYPE_CHECKING:
    from adaptseg.train.trainer import Trainer


class Hook:
    """Base hook: every method is a no-op."""

    def before_train(self, trainer: Trainer) -> None:
        pass

    def after_step(self, trainer: Trainer, it: int, losses: dict[str, Tensor]) -> None:
        pass

    def after_train(self, trainer: Trainer) -> None:
        pass


class LogHook(Hook):
    """Averages the losses over ``every`` iterations and reports them with the lr, it/s and ETA.

    Losses stay on the device between reports (one synchronisation per report, not per step). A
    non-finite average stops the run with a one-line error (except under fp16, where the GradScaler
    skips such steps by design).
    """

    def __init__(self, every: int):
        self.every = every
        self._sums: dict[str, Tensor] = {}
        self._count = 0
        self._progress: ConsoleProgress | None = None

    def before_train(self, trainer: Trainer) -> None:
        self._t = time.perf_counter()
        self._hooks_t = trainer.hook_seconds
        self._last = trainer.iteration
        if trainer.ctx.is_main:
            self._progress = ConsoleProgress(
                trainer.ctx.name, trainer.iteration, trainer.total, console=trainer.console
            )

    def after_step(self, trainer: Trainer, it: int, losses: dict[str, Tensor]) -> None:
        for name, value in losses.items():
            self._sums[name] = self._sums[name] + value if name in self._sums else value.clone()
        self._count += 1
        done = it + 1
        if done % self.every and done != trainer.total:
            return
        means = {f"loss/{k}": v.item() / self._count for k, v in self._sums.items()}
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        if bad and trainer.switches.amp != "fp16":
            raise UserError(
                f"stage '{trainer.ctx.name}': {bad[0]} is not finite at iteration {done}",
                fix="lower optim.lr, check the data (labels out of range?) or use amp: off",
            )
        now = time.perf_counter()
        training_time = (now - self._t) - (trainer.hook_seconds - self._hooks_t)  # without eval/checkpoints
        rate = (done - self._last) / max(training_time, 1e-9)
        self._t, self._hooks_t, self._last = now, trainer.hook_seconds, done
        scalars = {**means, **learning_rates(trainer.optimizers)}
        scalars["time/it_per_s"] = rate
        trainer.log_scalars(done, scalars)
        if self._progress is not None:
            shown = {**means, "lr": trainer.optimizer.param_groups[0]["lr"]}
            self._progress.update(done, shown, rate)
        self._sums, self._count = {}, 0

    def after_train(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.close()


def learning_rates(optimizers) -> dict[str, float]:
    """``lr/<group>`` of a single optimiser (the log's columns since the first release), ``lr/<name>/<group>`` of several."""
    if len(optimizers) == 1:
        (optimizer,) = optimizers.values()
        return {f"lr/{i}": g["lr"] for i, g in enumerate(optimizer.param_groups)}
    return {
        f"lr/{name}/{i}": g["lr"] for name, opt in optimizers.items() for i, g in enumerate(opt.param_groups)
    }


class EvalHook(Hook):
    """Evaluates the method's ``eval_model`` every ``every`` iterations and at the end (rank 0 only).

    With ``eval.select_best`` each evaluation's mIoU (the one logged) also goes to the Trainer's
    :class:`~adaptseg.train.selection.BestOnVal`, which keeps the best weights.
    """

    def __init__(self, every: int):
        self.every = every
        self._last = -1

    def _evaluate(self, trainer: Trainer, done: int) -> None:
        if trainer.ctx.is_main:
            report = trainer.evaluate()
            scalars = {f"eval/mIoU{report.protocol}": report.miou, "eval/aAcc": report.aacc}
            scalars.update({f"eval/{k}": v for k, v in report.extras.items()})
            trainer.log_scalars(done, scalars)
            best = ""
            if trainer.best is not None:
                model = trainer.plain_model(trainer.method.eval_model)
                best = "  (best so far, kept)" if trainer.best.consider(done, report.miou, model) else ""
            trainer.console.print(
                f"{trainer.ctx.name} eval @ {done}: mIoU{report.protocol} {report.miou:.2f}  aAcc {report.aacc:.2f}{best}",
                highlight=False,
            )
        barrier(trainer.ctx.dist)
        self._last = done

    def after_step(self, trainer: Trainer, it: int, losses: dict[str, Tensor]) -> None:
        if self.every and (it + 1) % self.every == 0:
            self._evaluate(trainer, it + 1)

    def after_train(self, trainer: Trainer) -> None:
        if self._last != trainer.iteration:
            self._evaluate(trainer, trainer.iteration)


class CheckpointHook(Hook):
    """Writes ``checkpoint-last.pt`` every ``every`` iterations and at the end of the stage."""

    def __init__(self, every: int):
        self.every = every

    def after_step(self, trainer: Trainer, it: int, losses: dict[str, Tensor]) -> None:
        if (it + 1) % self.every == 0 and it + 1 < trainer.total:
            trainer.save_checkpoint()

    def after_train(self, trainer: Trainer) -> None:
        trainer.save_checkpoint()


def default_hooks(trainer: Trainer) -> list[Hook]:
    """Logging, evaluation (with an eval dataset and ``eval.every`` or ``eval.select_best``), checkpointing."""
    recipe = trainer.ctx.recipe
    hooks: list[Hook] = [LogHook(recipe.log_every)]
    if recipe.eval.dataset is not None and (recipe.eval.every > 0 or recipe.eval.select_best):
        hooks.append(EvalHook(recipe.eval.every))
    hooks.append(CheckpointHook(recipe.checkpoint_every))
    return hooks
