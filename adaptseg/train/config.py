"""The training recipe schema: what ``train/<method>/<benchmark>.yaml`` may say, validated strictly.

A recipe names the model preset, the data streams (``source``, ``target``, … — each a dataset plus its
training pipeline and batch size), the optimiser and lr schedule, the precision/speed switches and an
ordered list of **stages**. Every stage runs one registered method (a training method or a task such as
prototype estimation) with its own options, validated by that method's own schema.

``overrides`` on a stage is a recipe fragment merged into the recipe for that stage only (e.g. DDB's R2
self-training at a 10× lower lr: ``overrides: {optim: {lr: 6.0e-6}}``), so one recipe holds a whole
multi-stage method without copies.

Switches left at ``auto`` follow the device the run lands on: on CUDA, ``amp: bf16``,
``channels_last: true`` and ``compile: true``; on CPU all three off (DESIGN.md; shared/environment.md
measured no CPU speed-up from compile). ``batch_size`` is per process (mmseg's ``samples_per_gpu``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from adaptseg.config import StrictModel, deep_merge, validate
from adaptseg.errors import UserError


class CheckpointRef(StrictModel):
    """A weights file to load into a model (``adaptseg.models.load_checkpoint`` options).

    ``path`` is a file, or ``<stage>/<file>`` naming an earlier stage's output (``source/student.safetensors``).
    ``partial`` allows model tensors the file lacks (ImageNet backbone weights into a segmentor);
    ``prefix`` picks one model out of a multi-model checkpoint (``model.``, ``ema_model.``, ``stu_model.``).
    """

    path: str
    format: str = "auto"
    strict: bool = True
    partial: bool = False
    prefix: str | None = None


class ModelSection(StrictModel):
    """Architecture preset (``models/<name>.yaml`` or a path) and the weights it starts from."""

    preset: str
    init: CheckpointRef | None = None

    @field_validator("init", mode="before")
    @classmethod
    def _path_shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value


class DatasetSpec(StrictModel):
    """One dataset split through a reader of ``adaptseg.data`` (``build_dataset(name, root, split, ...)``).

    ``root`` is a folder in the official layout, or ``minicity:<domain>`` for the built-in MiniCity data
    (generated on first use into the MiniCity cache, see :mod:`adaptseg.data.pipeline`).
    ``ids`` optionally restricts the split to the sample ids listed one per line in a file (a path or an
    earlier stage's output, e.g. ``rank/easy.txt``). ``concat`` appends more datasets to this one, read
    as a single dataset through the same pipeline (DDB's multi-source/multi-target: no domain labels).
    """

    name: str
    root: str
    split: str | None = None
    labels: bool = True
    options: dict[str, Any] = Field(default_factory=dict)
    ids: str | None = None
    concat: list[DatasetSpec] = Field(default_factory=list)


class RareClassSamplingOptions(StrictModel):
    """``data.<stream>.rcs``: DAFormer's rare-class sampling of a labelled stream (adaptseg.data.rcs).

    Defaults as released (``class_temp=0.01, min_pixels=3000, min_crop_ratio=0.5``). ``min_pixels``
    counts pixels of a label as read (full resolution): lower it for small images (MiniCity: about 50).
    """

    temperature: float = Field(0.01, gt=0.0)
    min_pixels: int = Field(3000, ge=0)
    min_crop_ratio: float = Field(0.5, ge=0.0)


class ClassBalancedOptions(StrictModel):
    """``data.<stream>.class_balanced``: DecoupleNet's class-balanced file list (adaptseg.data.class_balanced).

    The list has ``(⌊N·B/sub_epoch⌋ + 1)·sub_epoch`` draws for a stage of N iterations at a total batch B.
    """

    sub_epoch: int = Field(3000, ge=1)


class StreamSpec(DatasetSpec):
    """A training data stream: a dataset, its augmentation pipeline and its per-process batch size.

    ``rcs: {}`` samples it by class rarity instead of in shuffled epochs; ``class_balanced: {}`` runs the
    shuffled epochs over DecoupleNet's class-balanced file list (labelled streams only; not both).
    """

    batch_size: int = Field(2, ge=1)
    pipeline: list[dict[str, Any]] = Field(default_factory=list)
    rcs: RareClassSamplingOptions | None = None
    class_balanced: ClassBalancedOptions | None = None

    @model_validator(mode="after")
    def _one_sampling_rule(self) -> StreamSpec:
        if self.rcs is not None and self.class_balanced is not None:
            raise ValueError("'rcs' and 'class_balanced' are two sampling rules: keep one")
        return self


class EvalSection(StrictModel):
    """Periodic evaluation of the method's ``eval_model`` on a labelled split.

    ``preset`` is an inference preset (``infer/<name>.yaml``: whole image or sliding window, scale,
    batch); ``None`` uses the dataset's evaluation protocol (shared/datasets.md §8).

    Logged only, by default. ``select_best: true`` (opt-in: it selects with target labels, which the
    fidelity policy forbids by default) keeps the evaluated model with the best mIoU and exports it in
    place of the last one (``student.safetensors``; the last as ``student-last.safetensors``; the choice
    in ``best_on_val.json``) — the releases' ``save_best``. ``test_time_prior`` wraps the evaluated model
    in the hidden SePiCo/DANNet class prior (atp.md §5; ATP's release uses it on ACDC and Dark Zurich).
    """

    every: int = Field(0, ge=0)
    dataset: DatasetSpec | None = None
    preset: str | None = None
    protocol: Literal[19, 16, 13] = 19
    max_images: int | None = Field(None, ge=1)
    select_best: bool = False
    test_time_prior: bool = False

    @model_validator(mode="after")
    def _selection_needs_a_dataset(self) -> EvalSection:
        if self.select_best and self.dataset is None:
            raise ValueError(
                "eval.select_best needs eval.dataset (the labelled split the best model is chosen on)"
            )
        return self


class ParamRule(StrictModel):
    """mmcv ``paramwise_cfg.custom_keys`` entry: multipliers for parameters whose name contains the key."""

    lr_mult: float = 1.0
    decay_mult: float = 1.0


class OptimSection(StrictModel):
    """Optimiser (mmcv ``DefaultOptimizerConstructor`` semantics for ``custom_keys``, see optim.py).

    ``adam`` is ``torch.optim.Adam`` (L2 weight decay in the gradient; DecoupleNet's discriminators),
    ``adamw`` decoupled weight decay.
    """

    type: Literal["sgd", "adam", "adamw"]
    lr: float = Field(gt=0)
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = Field(0.0, ge=0)
    custom_keys: dict[str, ParamRule] = Field(default_factory=dict)
    grad_clip: float | None = Field(None, gt=0)


class ScheduleSection(StrictModel):
    """Iteration-based poly decay with optional warmup (mmcv semantics, see schedule.py).

    ``iters`` is how many iterations a training stage runs (a stage's own ``iters`` wins); ``horizon`` is
    the poly decay length when it differs (DecoupleNet decays over 93,750 but stops at 60,000).
    """

    iters: int = Field(ge=1)
    horizon: int | None = Field(None, ge=1)
    power: float = 1.0
    min_lr: float = 0.0
    warmup: Literal["linear", "constant", "exp"] | None = None
    warmup_iters: int = Field(0, ge=0)
    warmup_ratio: float = 1e-6


class CompileSection(StrictModel):
    """Options passed to ``torch.compile`` (crop sizes are fixed so each model compiles once)."""

    backend: str = "inductor"
    mode: str | None = None
    fullgraph: bool = False
    dynamic: bool | None = False


class MiniCitySection(StrictModel):
    """How ``minicity:<domain>`` roots are generated: cache folder (default ``$ADAPTSEG_MINICITY`` or
    ``~/.cache/adaptseg/minicity``), seed, image size and images per split (``None``: generator default)."""

    cache: str | None = None
    seed: int = Field(0, ge=0)
    size: tuple[int, int] = (128, 256)
    images: int | None = None

    def generator_options(self) -> dict[str, Any]:
        """The keyword options ``open_dataset(..., minicity=...)`` takes for ``minicity:`` roots."""
        return {"seed": self.seed, "size": tuple(self.size), "images": self.images, "cache": self.cache}


class StageSpec(StrictModel):
    """One step of the pipeline: a registered method (training) or task, run under ``RUN_DIR/<name>/``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    method: str
    iters: int | None = Field(None, ge=1)
    init_from: dict[str, CheckpointRef] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("init_from", mode="before")
    @classmethod
    def _student_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = {"student": value}
        if isinstance(value, dict):
            return {k: {"path": v} if isinstance(v, str) else v for k, v in value.items()}
        return value


class Recipe(StrictModel):
    """A whole training recipe (one YAML file after ``extends:`` and ``--set``)."""

    model: ModelSection
    data: dict[str, StreamSpec] = Field(default_factory=dict)
    eval: EvalSection = Field(default_factory=EvalSection)
    optim: OptimSection | None = None
    schedule: ScheduleSection | None = None
    stages: list[StageSpec] = Field(min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool | Literal["auto"] | CompileSection = "auto"
    seed: int = Field(0, ge=0)
    deterministic: bool = False
    workers: int = Field(2, ge=0)
    checkpoint_every: int = Field(1000, ge=1)
    log_every: int = Field(50, ge=1)
    quirks: Literal["official", "intended"] = "intended"
    minicity: MiniCitySection = Field(default_factory=MiniCitySection)
    demo: dict[str, Any] | None = Field(
        None,
        description="how `adaptseg demo` presents this recipe (train/demo/; validated by adaptseg.demo.methods)",
    )
    #: stop on label values outside a dataset's label map instead of warning (``adaptseg train --strict``)
    strict_labels: bool = False

    @model_validator(mode="before")
    @classmethod
    def _streams_like_others(cls, value: Any) -> Any:
        """``data.<k>: {like: target, ids: rank/easy_split.txt}`` is stream ``target`` with those keys replaced.

        ATP's P declares its easy/hard streams so: the target stream restricted to the rank stage's lists.
        """
        if not isinstance(value, dict) or not isinstance(value.get("data"), dict):
            return value
        data = value["data"]
        resolved = {}
        for name, spec in data.items():
            if isinstance(spec, dict) and "like" in spec:
                base = data.get(spec["like"])
                if not isinstance(base, dict) or "like" in base:
                    raise ValueError(
                        f"data.{name}.like: {spec['like']!r} is not a stream of the recipe's data "
                        f"(streams: {', '.join(k for k in data if k != name)})"
                    )
                spec = {**base, **{k: v for k, v in spec.items() if k != "like"}}
            resolved[name] = spec
        return {**value, "data": resolved}

    @model_validator(mode="after")
    def _unique_stage_names(self) -> Recipe:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"stage name {stage.name!r} is used twice")
            seen.add(stage.name)
        return self

    def stage(self, name: str) -> StageSpec:
        """The stage called ``name`` (a UserError lists the valid names)."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        import difflib

        close = difflib.get_close_matches(name, [s.name for s in self.stages], n=1)
        fix = f"did you mean '{close[0]}'?" if close else f"stages: {', '.join(s.name for s in self.stages)}"
        raise UserError(f"the recipe has no stage '{name}'", fix=fix)


def stage_recipe(recipe: Recipe, stage: StageSpec, *, source: str | Path | None = None) -> Recipe:
    """The recipe as one stage sees it: the stage's ``overrides`` merged in, its ``iters`` applied."""
    data = recipe.model_dump(mode="python")
    if stage.overrides:
        if "stages" in stage.overrides:
            raise UserError(f"stage '{stage.name}': overrides cannot change 'stages'", path=source)
        data = deep_merge(data, stage.overrides)
    resolved = validate(Recipe, data, source=f"{source} (stage '{stage.name}' overrides)" if source else None)
    if stage.iters is not None and resolved.schedule is not None:
        resolved.schedule = resolved.schedule.model_copy(update={"iters": stage.iters})
    return resolved
