"""UMMA's stages as registered methods and tasks (see the package docstring for the pipeline and quirks).

``umma_source`` (stage 0), ``umma_pseudo_label`` (the pseudo-label task before stages 1 and 2),
``umma_joint`` (stage 1) and ``umma_final`` (stage 2). Every model is a
:class:`~adaptseg.models.union.UnionSegmentor`, so each stage's ``student.safetensors`` is a 19-class model
that ``eval``/``infer``/``export`` open by itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from adaptseg.config import StrictModel
from adaptseg.errors import UserError
from adaptseg.io import write_json_atomic
from adaptseg.methods.base import (
    Batch,
    Method,
    ModelHandle,
    ModelSpec,
    OptimizerSpec,
    Phase,
    Task,
    register_method,
)
from adaptseg.methods.parts.adabn import adabn, image_batches
from adaptseg.methods.parts.thresholds import ClassConfidenceHistogram, apply_class_thresholds
from adaptseg.methods.umma import losses as L
from adaptseg.methods.umma.labels import has_others, label_sets, stage0_target
from adaptseg.models.union import Combine, UnionSegmentor, build_union_model, input_affine
from adaptseg.train.config import CheckpointRef, ParamRule

OPTIONS_FILE = "umma.json"
STORE_DIR = "store"
THRESHOLDS_FILE = "thresholds.json"
#: umma.md §3.1: the median (index round(0.5·n_c)), capped at 0.9
THRESHOLD_QUANTILE = 0.5
THRESHOLD_CAP = 0.9
#: the release's DeepLab-v2 head sums only its first two ASPP branches (quirks: official)
RELEASED_SUMMED_BRANCHES = 2


# ============================================================================================ options
class UmmaOptions(StrictModel):
    """What every UMMA stage shares: the label setting and the sources, in head order (umma.md §1)."""

    setting: Literal["f", "p", "n"]
    sources: list[str]
    #: replace the table's class sets (source → owned trainIds); the union must still be all 19 classes
    class_sets: dict[str, list[int]] | None = None


class SourceOptions(UmmaOptions):
    """Stage 0: which source this stage trains (its data stream has the same name unless ``stream`` says)."""

    source: str
    stream: str | None = None


class AdaptOptions(UmmaOptions):
    """Stages 1 and 2: the pseudo-label stage whose store and thresholds they train on."""

    pseudo_labels: str


class PseudoLabelOptions(UmmaOptions):
    """The pseudo-label task: round 1 (from the stage-0 models) or 2 (from the stage-1 model)."""

    round: Literal[1, 2]
    stream: str = "target"
    batch_size: int = Field(1, ge=1)
    #: BatchNorm statistics the labelling models normalise with: ``model`` = their own running statistics
    #: (the release: stage-0 models keep their source domain's); ``target`` = re-estimated on the target
    #: images first (AdaBN, an addition: weights unchanged, labels from target-domain statistics)
    bn_statistics: Literal["model", "target"] = "model"
    quantile: float = Field(THRESHOLD_QUANTILE, gt=0.0, le=1.0)
    cap: float = Field(THRESHOLD_CAP, gt=0.0, le=1.0)


# ============================================================================================ models
def official(ctx) -> bool:
    return ctx.recipe.quirks == "official"


def class_sets_of(options: UmmaOptions) -> list[tuple[int, ...]]:
    return label_sets(options.setting, options.sources, options.class_sets)


def new_union(ctx, options: UmmaOptions, class_sets, *, backbones: int, combine: Combine) -> UnionSegmentor:
    """A seeded, randomly initialised union model of the recipe's preset (2 summed ASPP branches if official)."""
    torch.manual_seed(ctx.recipe.seed)
    return build_union_model(
        ctx.preset,
        class_sets,
        others=has_others(options.setting),
        backbones=backbones,
        combine=combine,
        summed_branches=RELEASED_SUMMED_BRANCHES if official(ctx) else None,
    )


def initial_backbone(ctx) -> nn.Module:
    """The recipe's ``model.init`` backbone (``DeepLab_init.pth`` in the release; the loader skips ``layer5``)."""
    return ctx.build_model("student").backbone


def load_union(ctx, model: UnionSegmentor, role: str) -> UnionSegmentor:
    """Load ``init_from.<role>`` (an earlier UMMA stage's weights) into ``model``, strictly."""
    ref = ctx.init_ref(role)
    if ref is None:
        raise UserError(
            f"stage '{ctx.name}' needs init_from.{role}",
            path=ctx.recipe_path,
            fix=f"set init_from.{role}: <an earlier UMMA stage>/student.safetensors",
        )
    ctx.load_into(model, ref if ref.strict else CheckpointRef(**{**ref.model_dump(), "strict": True}))
    return model


def source_models(ctx, options: UmmaOptions) -> tuple[list[nn.Module], list[nn.Module]]:
    """The stage-0 backbones and heads, one per source, from ``init_from.<source>``."""
    sets = class_sets_of(options)
    backbones, heads = [], []
    for source, owned in zip(options.sources, sets, strict=True):
        single = load_union(ctx, new_union(ctx, options, [owned], backbones=1, combine="lift"), source)
        backbones.append(single.backbones[0])
        heads.append(single.heads[0])
    return backbones, heads


def assemble(ctx, options: UmmaOptions, backbones, heads, combine: Combine) -> UnionSegmentor:
    """A union model over given backbones and heads, built as :func:`new_union` builds one."""
    scale, shift = input_affine(ctx.preset.mean, ctx.preset.std, True)
    return UnionSegmentor(
        backbones,
        heads,
        class_sets_of(options),
        others=has_others(options.setting),
        combine=combine,
        input_scale=scale,
        input_shift=shift,
        preset_name=ctx.preset.name,
        summed_branches=RELEASED_SUMMED_BRANCHES if official(ctx) else None,
        release_input=True,
    )


def released_lr_multipliers(model: UnionSegmentor) -> dict[str, int]:
    """Parameter name → how often the release's backbone generator yields it (umma.md §6.4).

    The release builds group 0 from ``for m in part.modules(): for p in m.parameters(): yield p`` over the
    backbone's parts (``conv1, bn1, layer1..4``), so a parameter is yielded once per module between the part
    and itself (bottleneck weights 3×, downsample 4×, stem 1×) and torch 1.11's SGD steps it that often.
    Parameters yielded once are left out.
    """
    counts: dict[int, int] = {}
    for backbone in model.backbones:
        for part in backbone.children():
            for module in part.modules():
                for param in module.parameters():
                    counts[id(param)] = counts.get(id(param), 0) + 1
    return {name: counts[id(p)] for name, p in model.named_parameters() if counts.get(id(p), 1) > 1}


def released_optimizer(ctx, model: UnionSegmentor) -> OptimizerSpec:
    """One optimiser over the student: the recipe's, plus the duplicated-parameter lr multipliers when official.

    One SGD over every source's parameters steps each exactly as the release's per-source optimisers do
    (SGD is per parameter, every phase of stage 1 steps them all, and stage 2 relies on ``.grad`` being
    None for what a phase leaves alone).
    """
    optim = ctx.recipe.optim
    if official(ctx):
        keys = {name: ParamRule(lr_mult=float(n)) for name, n in released_lr_multipliers(model).items()}
        optim = optim.model_copy(update={"custom_keys": {**optim.custom_keys, **keys}})
    return OptimizerSpec(("student",), optim=optim)


class _UmmaTraining(Method):
    """What the three UMMA training stages share: the union student, the optimiser, options record."""

    single_process_only = "UMMA trains with batch 1 on one device and its phases call model parts directly"

    options: UmmaOptions

    def student_model(self) -> UnionSegmentor:
        return self.models["student"].module  # type: ignore[return-value]

    def optimizers(self, models: Mapping[str, ModelSpec]) -> dict[str, OptimizerSpec]:
        return {"main": released_optimizer(self.ctx, models["student"].module)}

    def write_outputs(self, out_dir: Path) -> list[str]:
        student = self.student_model()
        write_json_atomic(
            out_dir / OPTIONS_FILE,
            {
                "stage": self.ctx.name,
                "method": self.name,
                "options": self.options.model_dump(mode="json"),
                "class_sets": student.class_sets,
                "quirks": self.ctx.recipe.quirks,
                "summed_aspp_branches": student.summed_branches or "all",
                "duplicated_parameter_lr": official(self.ctx),
                "momentum_drift_of_frozen_parts": not self.zero_grad_to_none,
                "selected_on_val": self.ctx.recipe.eval.select_best,
            },
        )
        return [OPTIONS_FILE]


# ============================================================================================ stage 0
@register_method("umma_source")
class UmmaSource(_UmmaTraining):
    """Stage 0: one source model on its own labelled data, under its class set (umma.md §2 stage 0).

    The model is a one-source :class:`UnionSegmentor` (the ``model.init`` backbone + a head over L_s),
    trained with CE over valid pixels on :func:`~adaptseg.methods.umma.labels.stage0_target` (void →
    "others" in p/n). Its 19-class output lifts "others" uniformly, so it evaluates as a 19-class model.
    """

    Options = SourceOptions
    options: SourceOptions

    @property  # type: ignore[override]
    def streams(self) -> tuple[str, ...]:
        return (self.options.stream or self.options.source,)

    def owned(self) -> tuple[int, ...]:
        if self.options.source not in self.options.sources:
            raise UserError(
                f"stage '{self.ctx.name}': source {self.options.source!r} is not one of "
                f"options.sources {self.options.sources}",
                path=self.ctx.recipe_path,
                fix="name one of the listed sources",
            )
        return class_sets_of(self.options)[self.options.sources.index(self.options.source)]

    def build_models(self) -> dict[str, ModelSpec]:
        model = new_union(self.ctx, self.options, [self.owned()], backbones=1, combine="lift")
        model.backbones[0] = initial_backbone(self.ctx)
        return {"student": ModelSpec(model, "train", export="student")}

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        stream = batch[self.streams[0]]
        if "label" not in stream:
            raise UserError(
                f"umma_source needs labels on the '{self.streams[0]}' stream",
                fix=f"set data.{self.streams[0]}.labels: true",
            )
        model = self.student_model()
        target = stage0_target(stream["label"], self.owned(), self.options.setting)
        logits = model.head_logits(
            0, model.backbones[0](model.release_input(stream["image"])), list(target.shape[-2:])
        )
        return {"ce": L.ce(logits, target)}


# ============================================================================================ pseudo-labels
class PipelineImages:
    """A dataset reader whose images come through a stream's deterministic pipeline (resize, pad).

    The pseudo-labels must sit on the pixels the training stages see, so they are made at the size the
    target stream's pipeline gives (the release: 1024×512). UMMA trains without augmentation; a pipeline
    with random steps is refused.
    """

    def __init__(self, dataset, pipeline: list[dict[str, Any]], *, recipe_path=None):
        from adaptseg.data.transforms import build_pipeline

        random_steps = [
            next(iter(step))
            for step in pipeline
            if next(iter(step)) in ("random_crop", "flip", "photometric")
            or (
                next(iter(step)) == "resize"
                and isinstance(step["resize"], dict)
                and "ratio_range" in step["resize"]
            )
        ]
        if random_steps:
            raise UserError(
                f"UMMA's target pipeline must be deterministic (it has {', '.join(random_steps)})",
                path=recipe_path,
                fix="keep only resize/pad steps in data.target.pipeline (umma.md §4)",
            )
        self.dataset = dataset
        self.entries = dataset.entries
        self.name = getattr(dataset, "name", "")
        self.split = getattr(dataset, "split", "")
        self.transform = build_pipeline(pipeline)

    def __len__(self) -> int:
        return len(self.dataset)

    def read_image(self, i: int) -> np.ndarray:
        return self.transform(self.dataset.read_image(i), None, np.random.default_rng(0))[0]


@register_method("umma_pseudo_label")
class UmmaPseudoLabel(Task):
    """Pseudo-labels for stage 1 (round 1) or 2 (round 2) through the inference engine and the store (§3.1).

    Round 1: ``init_from.<source>`` = each stage-0 model; fusion = mean of the lifted softmaxes.
    Round 2: ``init_from.student`` = the stage-1 model; fusion = mean over backbones of σ(E(g_s(x))).
    Both run in eval mode over the target stream's images (through its resize), whole image (with
    ``bn_statistics: target``, after re-estimating the models' BatchNorm statistics on those images), and write
    ``store/`` (raw argmax + confidence) and ``thresholds.json`` (class medians over the whole split from a
    256-level histogram of the stored confidences, capped at 0.9); the training stages apply them.
    """

    Options = PseudoLabelOptions
    options: PseudoLabelOptions

    def model(self) -> UnionSegmentor:
        if self.options.round == 1:
            backbones, heads = source_models(self.ctx, self.options)
            return assemble(self.ctx, self.options, backbones, heads, "lift")
        sets = class_sets_of(self.options)
        return load_union(
            self.ctx, new_union(self.ctx, self.options, sets, backbones=len(sets), combine="union"), "student"
        )

    def run(self) -> list[str]:
        from adaptseg.infer.config import InferenceConfig
        from adaptseg.infer.run import pseudo_label_split
        from adaptseg.infer.store import PseudoLabelStore

        spec = self.ctx.stream_spec(self.options.stream)
        dataset = self.ctx.open_dataset(spec.model_copy(update={"labels": False}))
        images = PipelineImages(dataset, spec.pipeline, recipe_path=self.ctx.recipe_path)
        model = self.model().to(self.ctx.device).eval()
        if self.options.bn_statistics == "target":
            preset = self.ctx.preset
            adabn(model, image_batches(images, preset.mean, preset.std, batch_size=1, device=self.ctx.device))
        store = PseudoLabelStore(self.ctx.out_dir / STORE_DIR)
        config = InferenceConfig(mode="whole", batch_size=self.options.batch_size, workers=1)
        summary = pseudo_label_split(self.ctx.backend(model), images, store, config)
        if summary.skipped:
            raise UserError(
                f"{len(summary.skipped)} target image(s) could not be read, e.g. {summary.skipped[0]!r}",
                path=self.ctx.out_dir / STORE_DIR,
                fix="fix or remove them, then run the stage again",
            )
        histogram = ClassConfidenceHistogram(model.num_classes)
        for image_id in store.ids():
            label, confidence, _ = store.read(image_id)
            histogram.update(label, np.rint(confidence * 255).astype(np.uint8))
        write_thresholds(self.ctx.out_dir / THRESHOLDS_FILE, histogram, self.options)
        return [STORE_DIR, THRESHOLDS_FILE]


def write_thresholds(path: Path, histogram: ClassConfidenceHistogram, options: PseudoLabelOptions) -> None:
    """``thresholds.json``: per-class thresholds as store levels (what is applied) and as probabilities."""
    levels = histogram.threshold_levels(options.quantile, options.cap)
    write_json_atomic(
        path,
        {
            "rule": f"class-wise sorted confidence at index round({options.quantile}·n_c), capped at {options.cap}; "
            "0 for classes no pixel predicts; keep conf ≥ t",
            "levels": levels.tolist(),
            "thresholds": (levels / (histogram.bins - 1)).tolist(),
            "pixels": histogram.counts.sum(1).tolist(),
        },
    )


class PseudoLabels:
    """A pseudo-label stage's store and thresholds, read for training batches (255 where conf < t_ŷ)."""

    def __init__(self, ctx, stage: str):
        from adaptseg.infer.store import PseudoLabelStore

        self.store = PseudoLabelStore(ctx.resolve(f"{stage}/{STORE_DIR}"))
        file = ctx.resolve(f"{stage}/{THRESHOLDS_FILE}")
        try:
            self.levels = torch.tensor(json.loads(file.read_text())["levels"], dtype=torch.long)
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(
                f"unreadable thresholds file ({exc})",
                path=file,
                fix=f"run stage '{stage}' again (delete its folder first)",
            ) from None

    def labels(self, ids: list[str], size: tuple[int, int], device: torch.device) -> Tensor:
        """N×H×W long labels of ``ids`` with the class thresholds applied; they must be ``size``."""
        out = []
        for image_id in ids:
            label, confidence, _ = self.store.read(image_id)
            if label.shape != size:
                raise UserError(
                    f"pseudo-label of {image_id!r} is {label.shape[1]}×{label.shape[0]}, the training "
                    f"image {size[1]}×{size[0]}",
                    path=self.store.root,
                    fix="label with the same target pipeline the training stage uses",
                )
            levels = torch.from_numpy(np.rint(confidence * 255).astype(np.int64))
            out.append(apply_class_thresholds(torch.from_numpy(label.astype(np.int64)), levels, self.levels))
        return torch.stack(out).to(device)


class _UmmaAdaptation(_UmmaTraining):
    """Stages 1 and 2: the unlabelled target stream plus the pseudo-labels of an earlier stage."""

    streams = ("target",)
    options: AdaptOptions
    find_unused_parameters = True

    def setup(self, models: Mapping[str, ModelHandle]) -> None:
        super().setup(models)
        self.pseudo = PseudoLabels(self.ctx, self.options.pseudo_labels)

    def inputs(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(x, y)``: the target batch in the release's convention and its thresholded pseudo-labels."""
        images = batch["target"]["image"]
        y = self.pseudo.labels(list(batch["target"]["id"]), tuple(images.shape[-2:]), images.device)
        return self.student_model().release_input(images), y


# ============================================================================================ stage 1
@register_method("umma_joint")
class UmmaJoint(_UmmaAdaptation):
    """Stage 1: the S source models trained jointly on the round-1 pseudo-labels (umma.md §3.2).

    ``init_from.<source>``: each stage-0 model. Phases per iteration: A+B (every backbone and head), C
    (heads only), D (backbones only). The student's 19-class output (what the periodic evaluation scores)
    is the mean over backbones of σ(E(g_s(x))).
    """

    Options = AdaptOptions

    def __init__(self, options: StrictModel, ctx):
        super().__init__(options, ctx)
        # umma.md §6.5: torch 1.11 zero-fills grads, so frozen parts still move by momentum + weight decay
        self.zero_grad_to_none = not official(ctx)

    def build_models(self) -> dict[str, ModelSpec]:
        backbones, heads = source_models(self.ctx, self.options)
        return {
            "student": ModelSpec(
                assemble(self.ctx, self.options, backbones, heads, "union"), "train", export="student"
            )
        }

    def phases(self, batch: Batch, it: int) -> list[Phase]:
        model = self.student_model()
        x, y = self.inputs(batch)
        permutation = L.nonidentity_permutation(
            len(model.heads), self.ctx.generator(it, "permutation", device="cpu")
        )

        def joint() -> dict[str, Tensor]:
            cmc1, cmc2 = L.cross_model_consistency(model, x, permutation, tuple(y.shape[-2:]))
            return {"pseudo": L.pseudo_label_loss(model, x, y), "cmc1": cmc1, "cmc2": cmc2}

        return [
            Phase(joint, name="joint"),
            Phase(lambda: {"heads": L.classifier_loss(model, x, y)}, frozen=("student.backbones",), name="C"),
            Phase(lambda: {"backbones": L.backbone_loss(model, x, y)}, frozen=("student.heads",), name="D"),
        ]


# ============================================================================================ stage 2
class SourceBackbones(nn.Module):
    """The stage-1 source backbones, frozen in stage 2 but in train mode (their BN statistics drift, §4)."""

    def __init__(self, backbones: list[nn.Module]):
        super().__init__()
        self.backbones = nn.ModuleList(backbones)

    def forward(self, x: Tensor) -> list[list[Tensor]]:
        return [backbone(x) for backbone in self.backbones]


@register_method("umma_final")
class UmmaFinal(_UmmaAdaptation):
    """Stage 2: a new backbone g_fin under the stage-1 heads, on the round-2 pseudo-labels (umma.md §3.3).

    ``init_from.sources``: the stage-1 model (its backbones stay frozen, its heads keep training);
    g_fin starts from ``model.init``. The student — g_fin + all source heads, logits averaged per class
    over the owning heads — is the deployed model. Phases: A (everything trainable), B (heads only), C
    (g_fin only).
    """

    Options = AdaptOptions

    def build_models(self) -> dict[str, ModelSpec]:
        sets = class_sets_of(self.options)
        joint = load_union(
            self.ctx, new_union(self.ctx, self.options, sets, backbones=len(sets), combine="union"), "sources"
        )
        student = assemble(self.ctx, self.options, [initial_backbone(self.ctx)], list(joint.heads), "union")
        return {
            "student": ModelSpec(student, "train", export="student"),
            "sources": ModelSpec(SourceBackbones(list(joint.backbones)), "ema"),
        }

    def setup(self, models: Mapping[str, ModelHandle]) -> None:
        super().setup(models)
        self.sources = models["sources"].module.train()

    def phases(self, batch: Batch, it: int) -> list[Phase]:
        model = self.student_model()
        backbones = self.sources.backbones
        x, y = self.inputs(batch)
        return [
            Phase(lambda: {"union": L.final_model_loss(model, x, y)}, name="A"),
            Phase(
                lambda: {"heads": L.source_heads_loss(model, backbones, x, y)},
                frozen=("student.backbones",),
                name="B",
            ),
            Phase(
                lambda: {"kl": L.distillation_loss(model, backbones, x)}, frozen=("student.heads",), name="C"
            ),
        ]


__all__ = [
    "PipelineImages",
    "PseudoLabels",
    "UmmaFinal",
    "UmmaJoint",
    "UmmaPseudoLabel",
    "UmmaSource",
    "released_lr_multipliers",
    "released_optimizer",
]
