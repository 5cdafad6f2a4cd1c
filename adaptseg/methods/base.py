"""What a method is, as the Trainer sees it, and the registry that recipes pick methods from by name.

A recipe stage names a registered method (``method: source_only``). There are two kinds:

* :class:`Method` — a **training** stage. It says which models it needs and how they start
  (:meth:`Method.build_models`: a student that is trained, an EMA teacher, frozen teachers), and computes a
  dict of named losses for one iteration (:meth:`Method.step`). It never touches devices, AMP, DDP,
  ``torch.compile``, optimisers or checkpoint files: the Trainer owns those, sums the losses, scales,
  steps, logs and saves (DESIGN.md "methods").
* :class:`Task` — a **non-training** stage (prototype estimation, entropy ranking, pseudo-labelling) that
  runs a function writing files into its stage folder.

Lifecycle of a :class:`Method` inside the Trainer::

    method = MethodClass(options, ctx)          # options validated by MethodClass.Options
    specs = method.build_models()               # {name: ModelSpec(module, role)}; weights loaded here
    # Trainer: device, channels-last, SyncBN (CUDA + DDP), torch.compile, DDP for role "train"
    method.setup(handles)                       # {name: ModelHandle}; keep what you need
    optimizers = method.optimizers(specs)       # {name: OptimizerSpec}; default: one over every "train" model
    for it in range(start, iters):
        method.before_step(it)                  # e.g. EMATeacher.update(student, it) before the forward
        for phase in method.phases(batch, it):  # default: [Phase(lambda: method.step(batch, it))]
            # Trainer: zero grads, freeze phase.frozen, losses = phase.losses() inside autocast,
            #          sum → (scale) → backward → (unscale, clip) → step phase.optimizers → log
    method.write_outputs(out_dir)               # extra files; ModelSpec.export weights are written for you

**Single-phase methods** (source-only, DDB, ATP) implement :meth:`Method.step` only: one backward on the
sum of the returned losses, then one step of every optimiser. Seeds that call ``backward`` on each loss in
turn and then step once (DDB: L_src, then L_mix; ATP P: easy, proto, mix) compute the same gradient —
gradients add up in ``.grad`` either way — so a method returns the terms and lets the Trainer sum them.

**Multi-phase methods** (UMMA stage 1: A+B, then the heads only, then the backbones only; DecoupleNet:
segmentor, then two discriminators) override :meth:`Method.phases` and return an ordered list of
:class:`Phase`: each is one backward and one step of the optimisers it names, with some model parts held
fixed. A phase's losses are computed when the phase runs, after the earlier phases stepped, so each sees
the weights the previous one left. The Trainer owns AMP (a GradScaler cycle per phase), DDP (one gradient
all-reduce per phase's backward), clipping, logging and the checkpoint of every optimiser.

Randomness inside a step (mix masks, jitter) should come from ``ctx.generator(it, "what")`` so that a
resumed run replays the same draws.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import torch
from torch import Tensor, nn

from adaptseg.config import StrictModel
from adaptseg.errors import UserError

if TYPE_CHECKING:
    from adaptseg.train.context import StageContext

Role = Literal["train", "ema", "frozen"]
Batch = dict[str, dict[str, Any]]


class NoOptions(StrictModel):
    """The options schema of a method that takes none (any key is an error)."""


@dataclass
class ModelSpec:
    """A model a method needs.

    ``role``: ``"train"`` — optimised (gradients, DDP, SyncBN on CUDA, train mode);
    ``"ema"`` — updated by the method (no gradients, checkpointed, SyncBN on CUDA; its train/eval mode is
    the method's choice); ``"frozen"`` — fixed (no gradients, eval mode, rebuilt from its files on
    resume, so not checkpointed). ``export``: a file stem; the model's weights are written to
    ``<stage>/<export>.safetensors`` when the stage finishes (the student is ``"student"``).
    """

    module: nn.Module
    role: Role = "train"
    export: str | None = None


class ModelHandle:
    """A model as the Trainer placed it: call it for logits, :meth:`features` for ``forward_features``.

    Both go through the wrapped forward (``torch.compile`` and DDP where enabled), so gradients are
    synchronised across processes. ``module`` is the plain model: read its attributes, pass it to
    ``EMATeacher.update``, save it.
    """

    def __init__(
        self, name: str, module: nn.Module, wrapped: nn.Module, role: Role, channels_last: bool = False
    ):
        self.name = name
        self.module = module
        self.role = role
        self._wrapped = wrapped
        self._channels_last = channels_last

    def _prep(self, x: Tensor) -> Tensor:
        if self._channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def __call__(self, x: Tensor) -> Tensor:
        return self._wrapped(self._prep(x))

    def features(self, x: Tensor) -> dict[str, Tensor]:
        return self._wrapped(self._prep(x), features=True)

    def train(self, mode: bool = True) -> ModelHandle:
        self.module.train(mode)
        return self

    def eval(self) -> ModelHandle:
        return self.train(False)

    def __repr__(self) -> str:
        return f"ModelHandle({self.name!r}, role={self.role!r}, {type(self.module).__name__})"


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimiser a method asks for, over the parameters of the named ``"train"`` models.

    ``optim`` replaces the recipe's ``optim`` section for this optimiser (DecoupleNet's discriminators use
    Adam at their own lr); ``scheduled`` says whether the recipe's lr schedule drives it.
    """

    models: tuple[str, ...]
    optim: Any = None  # adaptseg.train.config.OptimSection; None = the recipe's
    scheduled: bool = True


@dataclass(frozen=True)
class Phase:
    """One backward pass and one optimiser step inside an iteration.

    Args:
        losses: called when the phase runs (inside autocast); returns named scalar losses.
        optimizers: names of the optimisers to step after the backward (``None``: every optimiser).
        frozen: model parts held fixed during the phase: a model name (``"student"``) or a dotted
            sub-module (``"src0.decode_head"``). Their parameters do not require grad while the phase's
            losses are computed and back-propagated, so their ``.grad`` is left as the phase found it.
        name: prefixes the phase's loss names in the logs (``"heads/ce"``); unnamed phases must not repeat
            a loss name.
    """

    losses: Callable[[], Mapping[str, Tensor]]
    optimizers: tuple[str, ...] | None = None
    frozen: tuple[str, ...] = ()
    name: str = ""


class StageMethod:
    """Common base of :class:`Method` and :class:`Task`: a name, an options schema and the stage context."""

    name: ClassVar[str] = ""
    kind: ClassVar[Literal["train", "task"]]
    #: the schema of ``stages[i].options`` for this method
    Options: ClassVar[type[StrictModel]] = NoOptions

    def __init__(self, options: StrictModel, ctx: StageContext):
        self.options = options
        self.ctx = ctx


class Method(StageMethod):
    """A training stage: models, per-step losses, optional hooks (see the module docstring)."""

    kind = "train"
    #: the data streams (recipe ``data:`` keys) this method reads; ATP's adaptation stages say ("target",)
    streams: ClassVar[tuple[str, ...]] = ("source",)
    #: the model evaluated by the periodic evaluation hook (the field reports the student, not the EMA)
    eval_model: ClassVar[str] = "student"
    #: set when some trained parameters get no gradient in some steps (DDP must then look for them);
    #: required by phases that freeze part of a model trained under DDP
    find_unused_parameters: ClassVar[bool] = False
    #: ``optimizer.zero_grad(set_to_none=...)`` before each phase. ``False`` keeps zero-filled gradients on
    #: parameters a phase froze, so SGD momentum and weight decay still move them (UMMA's released
    #: behaviour, umma.md §6.5); ``True`` (default) leaves them untouched.
    zero_grad_to_none: bool = True
    #: why this stage cannot run under torchrun (empty: it can). Set by methods whose steps call model
    #: parts directly, which DDP would not synchronise; the Trainer refuses such a run in one line.
    single_process_only: ClassVar[str] = ""

    def build_models(self) -> dict[str, ModelSpec]:
        """The models this stage needs, with their weights loaded. Default: the recipe's student."""
        return {"student": ModelSpec(self.ctx.build_model("student"), "train", export="student")}

    def setup(self, models: Mapping[str, ModelHandle]) -> None:
        """Receive the placed models (called once, after the Trainer wrapped them, before any step)."""
        self.models = dict(models)

    def optimizers(self, models: Mapping[str, ModelSpec]) -> dict[str, OptimizerSpec]:
        """The optimisers to build. Default: one, ``"main"``, over every ``"train"`` model with the recipe's optim."""
        return {"main": OptimizerSpec(tuple(name for name, spec in models.items() if spec.role == "train"))}

    def before_step(self, it: int) -> None:
        """Called at the start of iteration ``it``, before the batch's forward pass (EMA updates go here)."""

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        """Named scalar losses of iteration ``it`` for ``batch`` (``{stream: {"image", "label", "id"}}``).

        The whole work of a single-phase method; multi-phase methods override :meth:`phases` instead.
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither step() nor phases()")

    def phases(self, batch: Batch, it: int) -> list[Phase]:
        """The iteration's ordered phases. Default: one phase of :meth:`step` stepping every optimiser."""
        return [Phase(lambda: self.step(batch, it))]

    def state_dict(self) -> dict[str, Any]:
        """The method's own state for bit-exact resume (running prototypes, counters); models are saved apart.

        Tensors and plain containers only (checkpoints load with ``weights_only=True``). Under DDP the
        Trainer saves rank 0's: keep it identical across ranks (all-reduce what the ranks accumulate).
        """
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def write_outputs(self, out_dir: Path) -> list[str]:
        """Write extra output files (not model weights) into ``out_dir``; return their names."""
        return []


class Task(StageMethod, ABC):
    """A non-training stage: runs once and writes files into ``ctx.out_dir``."""

    kind = "task"
    #: run on every process (True: the task splits work by ``ctx.dist``) or on rank 0 only (False)
    distributed: ClassVar[bool] = False

    @abstractmethod
    def run(self) -> list[str]:
        """Do the work; return the names of the files written into ``ctx.out_dir`` (the stage's outputs)."""


# ------------------------------------------------------------------------------------------ registry
METHODS: dict[str, type[StageMethod]] = {}
M = TypeVar("M", bound=type[StageMethod])

_SKIP_MODULES = frozenset({"base", "parts"})


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: make a :class:`Method` or :class:`Task` available to recipes as ``method: <name>``."""

    def decorator(cls: M) -> M:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method {name!r} registered twice")
        if not issubclass(cls, Method | Task):
            raise TypeError(f"{cls.__name__} must subclass Method or Task")
        if issubclass(cls, Method) and cls.step is Method.step and cls.phases is Method.phases:
            raise TypeError(f"{cls.__name__} must implement step() (one phase) or phases() (several)")
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorator


def _import_builtin_methods() -> None:
    """Import every module of ``adaptseg.methods`` (each registers its methods)."""
    from adaptseg.plugins import import_submodules

    import_submodules("adaptseg.methods", _SKIP_MODULES)


def get_method(name: str) -> type[StageMethod]:
    """The method class registered as ``name``; a UserError names the nearest registered one."""
    if name not in METHODS:
        _import_builtin_methods()
    if name not in METHODS:
        import difflib

        close = difflib.get_close_matches(name, list(METHODS), n=1)
        fix = f"did you mean '{close[0]}'?" if close else f"registered methods: {', '.join(sorted(METHODS))}"
        raise UserError(f"unknown method '{name}'", fix=fix)
    return METHODS[name]


def list_methods() -> list[str]:
    """Names of every registered method and task."""
    _import_builtin_methods()
    return sorted(METHODS)
