"""The one training loop every method plugs into (DESIGN.md: methods compute losses, the Trainer owns the rest).

The Trainer places the method's models (device, channels-last, SyncBN on CUDA under DDP,
``torch.compile``, DDP), builds the method's optimisers and the lr schedule from the recipe, feeds
reproducible batches, and per iteration::

    lr ← schedule(t);  method.before_step(t)
    for phase in method.phases(batch, t):          # one phase (method.step) for most methods
        zero grads;  freeze phase.frozen
        with autocast: losses = phase.losses()
        (scaler.scale(Σ losses)).backward();  [unscale, clip];  step phase.optimizers;  scaler.update()
    hooks: log → evaluate (→ keep the best on val, when the recipe asks) → checkpoint

Resuming restores models, optimisers, scaler, method state and every rank's RNG states from
``checkpoint-last.pt``; the data order is a function of (seed, iteration, rank) (``adaptseg.data.pipeline``),
so a resumed run continues exactly where the interrupted one stood (bit-exact on CPU).
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from adaptseg.data.pipeline import TrainStream, build_loader, with_normalize
from adaptseg.errors import UserError
from adaptseg.methods.base import Method, ModelHandle, ModelSpec, OptimizerSpec, Phase
from adaptseg.methods.parts.ema import EMATeacher
from adaptseg.train import checkpoint as ckpt
from adaptseg.train.context import StageContext
from adaptseg.train.distributed import all_gather_object, barrier
from adaptseg.train.hooks import Hook, default_hooks
from adaptseg.train.logger import CSV_NAME, CSVWriter, TensorBoardWriter
from adaptseg.train.optim import build_optimizer
from adaptseg.train.precision import Switches, autocast, grad_scaler, resolve_switches, to_channels_last
from adaptseg.train.schedule import PolyWarmupSchedule
from adaptseg.train.selection import BestOnVal


class ForwardAdapter(nn.Module):
    """``forward(x, features=False)``: logits, or ``forward_features`` — one entry point for compile/DDP."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, features: bool = False) -> Any:
        return self.model.forward_features(x) if features else self.model(x)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic kernels (for bit-exact resume) or, on CUDA, cuDNN autotuning for fixed crops.

    The global flags are restored afterwards, so a stage leaves the process as it found it.
    """
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = device.type == "cuda" and not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


class Trainer:
    """Runs one training stage of a :class:`Method` under ``ctx.out_dir``.

    Args:
        ctx: the stage context (resolved recipe, folders, device, rank).
        method: the method instance (options already validated).
        resume: continue from ``<stage>/checkpoint-last.pt``.
        hooks: replaces :func:`~adaptseg.train.hooks.default_hooks` when given.
    """

    def __init__(
        self,
        ctx: StageContext,
        method: Method,
        *,
        resume: bool = False,
        hooks: list[Hook] | None = None,
        console: Console | None = None,
    ):
        recipe = ctx.recipe
        if recipe.optim is None or recipe.schedule is None:
            raise UserError(
                f"stage '{ctx.name}' trains, so the recipe needs 'optim' and 'schedule'", path=ctx.recipe_path
            )
        self.ctx = ctx
        self.method = method
        self.resume = resume
        self.console = console or Console(stderr=True)
        self.switches: Switches = resolve_switches(recipe, ctx.device)
        self.total = ctx.iters
        self.iteration = 0
        self.hooks = hooks
        self.handles: dict[str, ModelHandle] = {}
        self.specs: dict[str, ModelSpec] = {}
        self._writers: list[CSVWriter | TensorBoardWriter] = []
        #: wall time spent in hooks (evaluation, checkpoints), left out of the it/s figure
        self.hook_seconds = 0.0
        #: the best model on val so far, when the recipe opts in (``eval.select_best``)
        self.best: BestOnVal | None = BestOnVal() if recipe.eval.select_best else None

    # ------------------------------------------------------------------------------------- building
    def _place(self, name: str, spec: ModelSpec) -> ModelHandle:
        device, dist = self.ctx.device, self.ctx.dist
        module = spec.module.to(device)
        if self.switches.channels_last:
            module = to_channels_last(module, device)
        if spec.role in ("train", "ema") and device.type == "cuda" and dist.enabled:
            converted = nn.SyncBatchNorm.convert_sync_batchnorm(module)
            if converted is not module:
                raise UserError(f"model '{name}' is a bare BatchNorm layer; wrap it in a module")
        if spec.role == "train":
            module.train()
        else:
            module.requires_grad_(False)
            if spec.role == "frozen":
                module.eval()
        wrapped: nn.Module = ForwardAdapter(module)
        if self.switches.compile is not None:
            wrapped.compile(**self.switches.compile)
        if spec.role == "train" and dist.enabled:
            wrapped = DistributedDataParallel(
                wrapped,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=self.method.find_unused_parameters,
            )
        return ModelHandle(name, module, wrapped, spec.role, channels_last=self.switches.channels_last)

    def _build_streams(self) -> dict[str, TrainStream]:
        recipe, ctx = self.ctx.recipe, self.ctx
        streams = {}
        for name in self.method.streams:
            spec = ctx.stream_spec(name)
            transform = with_normalize(spec.pipeline, ctx.preset.mean, ctx.preset.std)
            streams[name] = TrainStream(name, ctx.open_dataset(spec), transform, spec.batch_size, recipe.seed)
        return streams

    def build(self) -> None:
        """Models, optimiser, schedule, scaler and data streams; restores the checkpoint when resuming."""
        self.setup_models()
        self.streams = self._build_streams()
        if self.resume:
            self.load_state_dict(ckpt.load_checkpoint(self.checkpoint_path))
        else:
            seed_everything(self.ctx.seed_for(0, "loop"))  # per-rank streams for dropout & co.

    def setup_models(self) -> None:
        """The method's models placed and wrapped, the optimiser, the lr schedule and the grad scaler."""
        recipe, ctx = self.ctx.recipe, self.ctx
        if ctx.dist.enabled and self.method.single_process_only:
            raise UserError(
                f"stage '{ctx.name}' ({type(self.method).__name__}): {self.method.single_process_only}",
                fix="run it without torchrun (one device)",
            )
        seed_everything(recipe.seed)
        self.specs = self.method.build_models()
        if not any(s.role == "train" for s in self.specs.values()):
            raise TypeError(
                f"{type(self.method).__name__}.build_models() declares no model with role 'train'"
            )
        self.handles = {name: self._place(name, spec) for name, spec in self.specs.items()}
        self.method.setup(self.handles)
        self.optimizer_specs = self._check_optimizer_specs(self.method.optimizers(self.specs))
        self.optimizers = {
            name: build_optimizer(
                {m: self.handles[m].module for m in spec.models}, spec.optim or recipe.optim
            )
            for name, spec in self.optimizer_specs.items()
        }
        s = recipe.schedule
        self.schedule = PolyWarmupSchedule(
            s.horizon or s.iters,
            power=s.power,
            min_lr=s.min_lr,
            warmup=s.warmup,
            warmup_iters=s.warmup_iters,
            warmup_ratio=s.warmup_ratio,
        )
        self.scaler = grad_scaler(self.switches, ctx.device)

    def _check_optimizer_specs(self, specs: Mapping[str, OptimizerSpec]) -> dict[str, OptimizerSpec]:
        """Every ``"train"`` model in exactly one optimiser, and nothing else in any."""
        method = type(self.method).__name__
        if not specs:
            raise TypeError(f"{method}.optimizers() declares no optimiser")
        owner: dict[str, str] = {}
        for name, spec in specs.items():
            for model in spec.models:
                if model not in self.handles or self.handles[model].role != "train":
                    raise TypeError(
                        f"{method}.optimizers(): '{name}' steps '{model}', which is no 'train' model"
                    )
                if model in owner:
                    raise TypeError(
                        f"{method}.optimizers(): '{model}' is in both '{owner[model]}' and '{name}'"
                    )
                owner[model] = name
        missing = [n for n, h in self.handles.items() if h.role == "train" and n not in owner]
        if missing:
            raise TypeError(f"{method}.optimizers(): no optimiser steps {missing}")
        return dict(specs)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The first optimiser (``"main"`` for single-optimiser methods): its groups' lrs are the ones logged."""
        return next(iter(self.optimizers.values()))

    # ------------------------------------------------------------------------------------ state
    @property
    def checkpoint_path(self) -> Path:
        return self.ctx.out_dir / ckpt.CHECKPOINT_NAME

    def _checkpointed(self) -> dict[str, nn.Module]:
        return {n: h.module for n, h in self.handles.items() if h.role in ("train", "ema")}

    def state_dict(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "stage": self.ctx.name,
            "iteration": self.iteration,
            "models": {n: m.state_dict() for n, m in self._checkpointed().items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "schedule": self.schedule.state_dict(),
            "method": self.method.state_dict(),
            "rng": rng,
            "sampler": {"seed": self.ctx.recipe.seed, "world_size": self.ctx.dist.world_size},
            "best_on_val": self.best.state_dict() if self.best is not None else None,
        }

    def load_state_dict(self, payload: Mapping[str, Any]) -> None:
        path = self.checkpoint_path
        if payload.get("stage") != self.ctx.name:
            raise UserError(f"checkpoint of stage '{payload.get('stage')}', not '{self.ctx.name}'", path=path)
        models = self._checkpointed()
        if set(payload["models"]) != set(models):
            raise UserError(
                f"checkpoint models {sorted(payload['models'])} differ from {sorted(models)}", path=path
            )
        for name, module in models.items():
            module.load_state_dict(payload["models"][name])
        saved = payload["optimizers"] if "optimizers" in payload else {"main": payload["optimizer"]}
        if set(saved) != set(self.optimizers):
            raise UserError(
                f"checkpoint optimisers {sorted(saved)} differ from {sorted(self.optimizers)}", path=path
            )
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(saved[name])
        if self.scaler is not None and payload.get("scaler") is not None:
            self.scaler.load_state_dict(payload["scaler"])
        self.method.load_state_dict(payload.get("method") or {})
        if self.best is not None and payload.get("best_on_val"):
            self.best.load_state_dict(payload["best_on_val"])
        self.iteration = int(payload["iteration"])
        rng = payload["rng"]
        rank = self.ctx.dist.rank
        if payload["sampler"]["world_size"] != self.ctx.dist.world_size:
            self.console.print(
                f"[yellow]resuming a {payload['sampler']['world_size']}-process run on "
                f"{self.ctx.dist.world_size}: the data order changes from here[/]"
            )
        ckpt.restore_rng_state(rng[rank] if rank < len(rng) else rng[0])

    def save_checkpoint(self) -> None:
        """Write ``checkpoint-last.pt`` (rank 0) with every rank's RNG state; all ranks must call it."""
        rng = all_gather_object(ckpt.capture_rng_state(), self.ctx.dist)
        if self.ctx.is_main:
            ckpt.save_checkpoint(self.checkpoint_path, self.state_dict(rng))
        barrier(self.ctx.dist)

    # ------------------------------------------------------------------------------------ logging
    def log_scalars(self, iteration: int, scalars: Mapping[str, float]) -> None:
        """Scalars to ``scalars.csv`` and TensorBoard (rank 0 only)."""
        for writer in self._writers:
            writer.write(iteration, scalars)

    def _open_writers(self) -> None:
        if not self.ctx.is_main:
            return
        out = self.ctx.out_dir
        out.mkdir(parents=True, exist_ok=True)
        start = self.iteration if self.resume else None
        self._writers = [
            CSVWriter(out / CSV_NAME, resume_from=start),
            TensorBoardWriter(out / "tb", purge_step=start),
        ]

    def evaluate(self):
        """The recipe's evaluation of the method's ``eval_model`` (an ``adaptseg.eval.Report``)."""
        from adaptseg.train.evaluation import evaluate_segmentor

        recipe, ctx = self.ctx.recipe, self.ctx
        if not hasattr(self, "_eval_set"):
            self._eval_set = ctx.open_dataset(recipe.eval.dataset)
        handle = self.handles[self.method.eval_model]
        return evaluate_segmentor(
            handle.module,
            self._eval_set,
            mean=ctx.preset.mean,
            std=ctx.preset.std,
            preset=recipe.eval.preset,
            protocol=recipe.eval.protocol,
            device=ctx.device,
            max_images=recipe.eval.max_images,
            amp=self.switches.amp,
            channels_last=self.switches.channels_last,
            console=self.console,
            test_time_prior=recipe.eval.test_time_prior,
        )

    # ---------------------------------------------------------------------------------------- loop
    def _to_device(self, batch: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        device = self.ctx.device
        out = {}
        for stream, fields in batch.items():
            moved = dict(fields)
            image = fields["image"].to(device, non_blocking=True)
            if self.switches.channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            moved["image"] = image
            if "label" in fields:
                moved["label"] = fields["label"].to(device, non_blocking=True).long()
            out[stream] = moved
        return out

    def run_step(self, it: int, batch: dict[str, dict[str, Any]]) -> dict[str, Tensor]:
        """One iteration: lr, method hooks, then every phase's losses, backward and step. Returns detached losses."""
        for name, optimizer in self.optimizers.items():
            if self.optimizer_specs[name].scheduled:
                self.schedule.apply(optimizer, it)
        self.method.before_step(it)
        phases = self.method.phases(batch, it)
        if not phases:
            raise TypeError(f"{type(self.method).__name__}.phases() returned no phase")
        logged: dict[str, Tensor] = {}
        total: Tensor | None = None
        for phase in phases:
            losses, phase_total = self.run_phase(phase)
            for key, value in losses.items():
                key = f"{phase.name}/{key}" if phase.name else key
                if key in logged:
                    raise TypeError(
                        f"{type(self.method).__name__}: loss '{key}' returned by two phases; name them"
                    )
                logged[key] = value
            total = phase_total if total is None else total + phase_total
        if len(logged) > 1:
            logged["total"] = total
        return logged

    def run_phase(self, phase: Phase) -> tuple[dict[str, Tensor], Tensor]:
        """Zero grads, freeze, losses in autocast, backward, (unscale, clip), step; returns detached losses."""
        method = type(self.method).__name__
        stepped = (
            [self.optimizers[n] for n in phase.optimizers]
            if phase.optimizers is not None
            else list(self.optimizers.values())
        )
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=self.method.zero_grad_to_none)
        with self.frozen(phase.frozen):
            with autocast(self.switches, self.ctx.device):
                losses = phase.losses()
            if not isinstance(losses, Mapping) or not losses:
                raise TypeError(f"{method}: a step or phase must return a non-empty dict of losses")
            total = sum(losses.values())
            if not isinstance(total, Tensor) or total.dim() != 0:
                raise TypeError(f"{method}: losses must be scalar tensors")
            clip = self.ctx.recipe.optim.grad_clip
            if self.scaler is not None:
                self.scaler.scale(total).backward()
                if clip:
                    for optimizer in stepped:
                        self.scaler.unscale_(optimizer)
                    self._clip(stepped, clip)
                for optimizer in stepped:
                    self.scaler.step(optimizer)
                self.scaler.update()
            else:
                total.backward()
                if clip:
                    self._clip(stepped, clip)
                for optimizer in stepped:
                    optimizer.step()
        return {k: v.detach().float() for k, v in losses.items()}, total.detach().float()

    @contextlib.contextmanager
    def frozen(self, parts: tuple[str, ...]) -> Iterator[None]:
        """Hold the named models or dotted sub-modules fixed: their parameters stop requiring grad for the block."""
        params: list[nn.Parameter] = []
        for part in parts:
            model, _, sub = part.partition(".")
            if model not in self.handles:
                raise TypeError(
                    f"{type(self.method).__name__}: phase freezes '{part}', but there is no model '{model}'"
                )
            module = self.handles[model].module
            params += [
                p for p in (module.get_submodule(sub) if sub else module).parameters() if p.requires_grad
            ]
        if params and self.ctx.dist.enabled and not self.method.find_unused_parameters:
            raise TypeError(
                f"{type(self.method).__name__} freezes parts of trained models in a phase: under DDP it "
                "must set find_unused_parameters = True"
            )
        for param in params:
            param.requires_grad_(False)
        try:
            yield
        finally:
            for param in params:
                param.requires_grad_(True)

    @staticmethod
    def _clip(optimizers: list[torch.optim.Optimizer], max_norm: float) -> None:
        params = [p for optimizer in optimizers for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    def train(self) -> None:
        """Build (or resume) and run the remaining iterations with the hooks."""
        with determinism(self.ctx.recipe.deterministic, self.ctx.device):
            self._train()

    def _train(self) -> None:
        self.build()
        hooks = self.hooks if self.hooks is not None else default_hooks(self)
        self._open_writers()
        try:
            for hook in hooks:
                hook.before_train(self)
            start = self.iteration
            loader = build_loader(
                self.streams,
                start,
                self.total,
                rank=self.ctx.dist.rank,
                world_size=self.ctx.dist.world_size,
                workers=self.ctx.recipe.workers,
                pin_memory=self.ctx.device.type == "cuda",
            )
            for it, batch in zip(range(start, self.total), loader, strict=True):
                losses = self.run_step(it, self._to_device(batch))
                self.iteration = it + 1
                started = time.perf_counter()
                for hook in hooks:
                    hook.after_step(self, it, losses)
                self.hook_seconds += time.perf_counter() - started
            for hook in hooks:
                hook.after_train(self)
        finally:
            for writer in self._writers:
                writer.close()

    # ------------------------------------------------------------------------------------- outputs
    def plain_model(self, name: str) -> nn.Module:
        """Model ``name`` as it is exported: the segmentor itself (an EMA teacher's averaged copy)."""
        module = self.handles[name].module
        return module.model if isinstance(module, EMATeacher) else module

    def export(self) -> list[str]:
        """Write each ``ModelSpec.export`` as ``<name>.safetensors`` and the method's extra files (rank 0).

        With ``eval.select_best`` the eval model's file holds the best weights on val and
        ``<name>-last.safetensors`` the last ones; ``best_on_val.json`` records the choice.
        """
        from adaptseg.models import save_weights

        written: list[str] = []
        if self.ctx.is_main:
            meta = {
                "preset": self.ctx.recipe.model.preset,
                "stage": self.ctx.name,
                "iteration": str(self.iteration),
            }
            for name, spec in self.specs.items():
                if not spec.export:
                    continue
                module = self.plain_model(name)
                if self.best is not None and name == self.method.eval_model and self.best.weights is not None:
                    last = f"{spec.export}-last.safetensors"
                    save_weights(module, self.ctx.out_dir / last, {**meta, "model": name})
                    best = copy.deepcopy(module).cpu()
                    best.load_state_dict(self.best.weights)
                    save_weights(
                        best,
                        self.ctx.out_dir / f"{spec.export}.safetensors",
                        {
                            **meta,
                            "model": name,
                            "iteration": str(self.best.iteration),
                            "selected": "best on val",
                        },
                    )
                    written += [
                        f"{spec.export}.safetensors",
                        last,
                        self.best.write_record(
                            self.ctx.out_dir,
                            model=name,
                            exported=spec.export,
                            eval_section=self.ctx.recipe.eval,
                        ),
                    ]
                    continue
                save_weights(module, self.ctx.out_dir / f"{spec.export}.safetensors", {**meta, "model": name})
                written.append(f"{spec.export}.safetensors")
            written += self.method.write_outputs(self.ctx.out_dir)
        barrier(self.ctx.dist)
        return written
