"""ATP — aligning, teaching, propagating: source-free curriculum self-training on DAFormer (atp.md).

Source-free: after the source model is trained, no stage reads source data. A recipe runs the stages
in order, each initialised from the previous one (``train/atp/*.yaml``)::

    source     source_only    labelled source, DAFormer preset (or a given checkpoint, _given-source.yaml)
    align      atp_align      A, init source (partial: the projection head starts at its seeded init)
    teach      atp_teach      T, init align
    rank       atp_rank       entropy ranking of target train with T's student → easy/hard id lists
    propagate  atp_propagate  P, init teach; easy list = pseudo-source, hard list = target

Spec sections implemented here (shared parts are imported from :mod:`adaptseg.methods.parts`):

* §2 "All steps" / §3 "EMA teacher": every training stage has an EMA teacher (α_max 0.999) reset to the
  student at iteration 0, updated before the forward pass; BN in train mode, Dropout/DropPath off;
  pseudo-label = teacher argmax on the *weak* crop; the student sees the strong-augmented crop (§4:
  switches once per iteration, jitter factors per image per call, σ per call).
* §4 "Crops": the class-balanced crop (10 boxes scored on the teacher's pseudo-label, then the label is
  recomputed on the crop) applies whenever the weak target image is larger than the preset's crop —
  ACDC/Dark Zurich, whose pipelines only resize and flip; for Cityscapes (already cropped to 640²) and
  MiniCity it is the identity, as in the release.
* §3 "A: EntropyLoss": ``L_A`` on the student's logits upsampled to the crop (:class:`AtpAlign`).
* §3 "T": ``CE(student, teacher argmax; all pixels, 255 in the denominator) + L_neg`` (:class:`AtpTeach`).
* §2.3: the ranking (:class:`AtpRank`): mean normalised entropy / C of each target-train image, whole
  image at the evaluation preset's resolution (``eval.preset``; mmseg's val and test share one pipeline),
  through the sliding-window engine; the lowest ``⌊0.3·N⌋`` ids go to ``easy_split.txt``, the rest to
  ``hard_split.txt``, scores to ``scores.json``. **Lists, not copies of the images.**
* §3 "P" (:class:`AtpPropagate`): per iteration, easy CE+neg on teacher labels (no CBC crop); cumulative
  mean prototypes from the teacher's projection of the weak easy crop (labels ×4 with the 0.75 share);
  ProtoCL on the strong hard crop from ``proto_start`` (1500), labels with weight-0 pixels → 255,
  ``/100`` temperature and the regulariser; ClassMix easy→hard from the already strong crops, augmented
  again, weight 1 on pasted pixels and the hard quality weight (``plcrop`` rows 0) elsewhere; CE+neg.
  The trainer sums the terms and steps once (same gradient as the release's three backwards).
* §5 "Evaluation": the student; :func:`evaluate_student` optionally with the hidden test-time prior.

Switches (stage ``options``; every ATP stage writes its resolved options to ``atp-options.json``):

================================  =========  =============================================================
switch                            default    what
================================  =========  =============================================================
``detach_focal_weight`` (A)       ``null``   ``null`` follows ``quirks``: ``intended`` detaches (1−H)^5
                                             (entropy always goes down); ``official`` does not (the
                                             release: f(H) = (1−H)^5·H is minimised, which *raises* H
                                             above 1/6). See :mod:`adaptseg.methods.parts.entropy`.
``train_mode`` (rank)             ``null``   ``null`` follows ``quirks``: ``intended`` ranks in eval mode
                                             under no_grad; ``official`` in train mode (Dropout/DropPath
                                             on, BN batch statistics of each image), as the release.
``select_best_on_val`` (A/T/P)    ``false``  export the student with the best target-**val** mIoU as
                                             ``student.safetensors`` (the last one as
                                             ``student-last.safetensors``) and write ``best_on_val.json``.
                                             Uses target labels for model selection (the release's
                                             hard-coded ``save_best='mIoU'``; P starts from T's best).
``test_time_prior`` (A/T/P)       ``false``  the hidden SePiCo/DANNet class prior (softmax × w_c) in the
                                             best-on-val evaluation; :func:`evaluate_student` takes the
                                             same flag. The release applies it to every ``*_rgb_anon.png``
                                             image (ACDC, Dark Zurich) in evaluation and selection.
================================  =========  =============================================================

Reproducing the release's README numbers needs ``quirks: official`` plus ``select_best_on_val: true``
(and ``test_time_prior: true`` for ACDC); none of this is on by default (fidelity policy 3).

Other departures from the release, all deliberate: the ranking writes id lists instead of copying
images; the ACDC P "easy" images come through the target's own pipeline and get a plain random crop
(in :meth:`AtpPropagate.plain_crop`) instead of the release's hand-wired Cityscapes pipeline (fit to
1280×640) whose crop looks at ground truth (§6); the strong
augmentation runs outside autocast (it is data preparation, fp32 as in the release); on MiniCity the
``plcrop`` rows scale with the crop height (rows are given for a 640-row crop) and ProtoCL starts at a
scaled iteration (``proto_start``).
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from adaptseg.config import StrictModel
from adaptseg.data.labels import IGNORE_INDEX
from adaptseg.errors import UserError
from adaptseg.io import write_json_atomic, write_text_atomic
from adaptseg.methods.base import Batch, Method, ModelHandle, ModelSpec, Task, register_method
from adaptseg.methods.parts.augment import StrongAugSwitches, sample_strong_aug_switches, strong_augment
from adaptseg.methods.parts.complementary import NEGATIVE_THRESHOLD, negative_label_loss
from adaptseg.methods.parts.crop import class_balanced_crop, random_crop_boxes
from adaptseg.methods.parts.ema import EMATeacher
from adaptseg.methods.parts.entropy import (
    EASY_FRACTION,
    apply_class_prior,
    class_prior_weights,
    easy_hard_split,
    entropy_curriculum_loss,
    entropy_rank_scores,
)
from adaptseg.methods.parts.losses import cross_entropy, resize_logits
from adaptseg.methods.parts.mix import batch_class_mix_masks, mix_images, mix_labels, mixed_pixel_weight
from adaptseg.methods.parts.modes import batchnorm_train_stochastic_off
from adaptseg.methods.parts.prototypes import (
    PROTO_CONTRAST_TEMPERATURE,
    CumulativeMeanPrototypes,
    proto_contrastive_loss,
    valid_cell_features,
)
from adaptseg.methods.parts.pseudo import (
    LABEL_SHARE_MIN,
    PLCROP_BOTTOM,
    PLCROP_TOP,
    QUALITY_THRESHOLD,
    downscale_label_ratio,
    pseudo_weight_map,
    teacher_pseudo_labels,
)

#: the crop height the release's ``plcrop`` rows (15 top, 120 bottom) are given for
PLCROP_REFERENCE_HEIGHT = 640
EMA_ALPHA_MAX = 0.999
PROTO_START = 1500
OPTIONS_FILE = "atp-options.json"
BEST_FILE = "best_on_val.json"
EASY_LIST = "easy_split.txt"
HARD_LIST = "hard_split.txt"
SCORES_FILE = "scores.json"


# ============================================================================================ options
class AtpTrainOptions(StrictModel):
    """Options every ATP training stage (A, T, P) shares (module docstring: switches)."""

    ema_alpha_max: float = Field(EMA_ALPHA_MAX, ge=0.0, lt=1.0)
    select_best_on_val: bool = False
    best_val_every: int = Field(1000, ge=1)
    test_time_prior: bool = False


class AlignOptions(AtpTrainOptions):
    """A (atp.md §3 "A: EntropyLoss"): γ, α, the two scales and the focal-weight switch."""

    gamma: float = 5.0
    alpha: float = 3.0
    entropy_scale: float = 1e-3
    diversity_scale: float = 1e-4
    detach_focal_weight: bool | None = None


class TeachOptions(AtpTrainOptions):
    """T (atp.md §3 "T"): the negative-label threshold."""

    negative_threshold: float = Field(NEGATIVE_THRESHOLD, gt=0.0, lt=1.0)


class PropagateOptions(AtpTrainOptions):
    """P (atp.md §3 "P"): where the splits come from, ProtoCL and the quality weight."""

    easy_list: str = f"rank/{EASY_LIST}"
    hard_list: str = f"rank/{HARD_LIST}"
    #: the recipe data stream both splits are taken from (with its dataset and pipeline)
    stream: str = "target"
    negative_threshold: float = Field(NEGATIVE_THRESHOLD, gt=0.0, lt=1.0)
    proto_start: int = Field(PROTO_START, ge=0)
    proto_weight: float = 1.0
    proto_temperature: float = Field(PROTO_CONTRAST_TEMPERATURE, gt=0.0)
    use_reg: bool = True
    reg_weight: float = 1.0
    label_share: float = Field(LABEL_SHARE_MIN, gt=0.0, le=1.0)
    quality_threshold: float = Field(QUALITY_THRESHOLD, gt=0.0, le=1.0)
    #: top/bottom rows with pseudo-weight 0, for a 640-row crop (scaled with the crop height)
    plcrop: tuple[int, int] = (PLCROP_TOP, PLCROP_BOTTOM)


class RankOptions(StrictModel):
    """The ranking task (atp.md §2.3)."""

    stream: str = "target"
    easy_fraction: float = Field(EASY_FRACTION, gt=0.0, lt=1.0)
    train_mode: bool | None = None
    batch_size: int = Field(1, ge=1)


# ============================================================================================ helpers
def plcrop_rows(height: int, rows: tuple[int, int] = (PLCROP_TOP, PLCROP_BOTTOM)) -> tuple[int, int]:
    """The ``plcrop`` rows for a crop of ``height`` rows: the 640-row values scaled, rounded (15/120 at 640)."""
    scale = height / PLCROP_REFERENCE_HEIGHT
    return int(round(rows[0] * scale)), int(round(rows[1] * scale))


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Autocast off for data preparation (strong augmentation, mixing) inside an autocast step."""
    with torch.autocast(device.type, enabled=False):
        yield


def write_options(out_dir: Path, stage: str, method: str, options: StrictModel, resolved: Mapping[str, Any]) -> str:
    """Write ``atp-options.json``: every option with its default filled in, plus the values quirks decide."""
    write_json_atomic(out_dir / OPTIONS_FILE, {
        "stage": stage, "method": method, "options": options.model_dump(mode="json"), "resolved": dict(resolved),
    })
    return OPTIONS_FILE


class ClassPriorSegmentor(nn.Module):
    """The hidden test-time prior around a segmentor (atp.md §5): softmax at input size × ``w_c``.

    ``forward(x)`` returns the re-weighted probabilities at the input resolution (not logits); anything
    that upsamples and takes the argmax (the trainer's evaluation, the inference engine) then scores
    exactly what the release's ``simple_test`` does. Sharing the wrapped model's parameters, it is only
    ever used for evaluation.
    """

    def __init__(self, model: nn.Module, weights: Tensor | None = None):
        super().__init__()
        self.model = model
        self.num_classes = getattr(model, "num_classes", 19)
        self.register_buffer("weights", class_prior_weights() if weights is None else weights, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        logits = resize_logits(self.model(x).float(), tuple(x.shape[-2:]))
        return apply_class_prior(torch.softmax(logits, dim=1), self.weights)


def evaluate_student(
    model: nn.Module,
    dataset,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    preset: str | Path | None = None,
    protocol: int = 19,
    device: torch.device | str = "cpu",
    test_time_prior: bool = False,
    max_images: int | None = None,
):
    """Evaluate ``model`` on a labelled reader (atp.md §5); returns an ``adaptseg.eval.Report``.

    The trainer's evaluation (``adaptseg.train.evaluation.evaluate_segmentor``: the sliding-window engine
    with an inference preset, by default the dataset's protocol), with the test-time prior wrapped around
    the model when ``test_time_prior`` is set.
    """
    from adaptseg.train.evaluation import evaluate_segmentor

    target = ClassPriorSegmentor(model).to(device) if test_time_prior else model
    return evaluate_segmentor(target, dataset, mean=mean, std=std, preset=preset, protocol=protocol,
                              device=device, max_images=max_images)


def resolve_quirk(value: bool | None, quirks: str, official: bool) -> bool:
    """An option left at ``null`` takes its ``quirks: official`` value when the recipe says so."""
    if value is not None:
        return value
    return official if quirks == "official" else not official


# ============================================================================================ training
class _AtpTraining(Method):
    """What A, T and P share: student + EMA teacher, weak→teacher labels, CBC crop, strong aug, best-on-val."""

    streams: ClassVar[tuple[str, ...]] = ("target",)
    # the projection head gets no gradient in A/T (and in P before ProtoCL starts)
    find_unused_parameters = True
    options: AtpTrainOptions

    def __init__(self, options: StrictModel, ctx):
        super().__init__(options, ctx)
        self.best_miou: float | None = None
        self.best_iteration: int | None = None
        self.best_history: list[tuple[int, float]] = []

    # -- models ---------------------------------------------------------------------------------------
    def build_models(self) -> dict[str, ModelSpec]:
        student = self.ctx.build_model("student")
        best = self.options.select_best_on_val
        specs = {
            "student": ModelSpec(student, "train", export="student-last" if best else "student"),
            "teacher": ModelSpec(EMATeacher(student, alpha_max=self.options.ema_alpha_max), "ema"),
        }
        if best:
            # role "ema": no gradient, checkpointed with the run (so a resumed run keeps its best)
            specs["best"] = ModelSpec(copy.deepcopy(student).requires_grad_(False), "ema", export="student")
        return specs

    def setup(self, models: Mapping[str, ModelHandle]) -> None:
        super().setup(models)
        self.student = models["student"]
        self.teacher = models["teacher"]
        self.mean = tuple(self.ctx.preset.mean)
        self.std = tuple(self.ctx.preset.std)
        self.crop = tuple(self.ctx.preset.crop)
        self.num_classes = int(getattr(self.student.module, "num_classes", self.ctx.preset.num_classes))

    def before_step(self, it: int) -> None:
        if self.options.select_best_on_val and it > 0 and it % self.options.best_val_every == 0:
            self._consider_best(it)
        self.teacher.module.update(self.student.module, it)

    # -- pieces of a step -------------------------------------------------------------------------------
    def generator(self, it: int, what: str) -> torch.Generator:
        """CPU generator for the step's draws (the shared parts draw on the CPU)."""
        return self.ctx.generator(it, what, device="cpu")

    @torch.no_grad()
    def teacher_labels(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(confidence, label)`` of the teacher on ``images`` (logits upsampled to the image size)."""
        batchnorm_train_stochastic_off(self.teacher.module)
        logits = self.teacher(images)
        return teacher_pseudo_labels(resize_logits(logits.float(), tuple(images.shape[-2:])))

    def weak_target(self, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Weak target images (CBC-cropped when larger than the crop) with the teacher's confidence and labels.

        atp.md §4: the class-balanced crop is chosen on the teacher's pseudo-label of the whole image,
        then the label is recomputed on the crop (``regen_pseudo``).
        """
        confidence, labels = self.teacher_labels(images)
        height, width = images.shape[-2:]
        crop = (min(self.crop[0], height), min(self.crop[1], width))
        if (height, width) != crop:
            images, _, _ = class_balanced_crop(images, labels, crop, generator)
            confidence, labels = self.teacher_labels(images)
        return images, confidence, labels

    def strong(self, images: Tensor, generator: torch.Generator, switches: StrongAugSwitches) -> Tensor:
        """One strong-augmentation call (atp.md §4), in full precision."""
        with full_precision(images.device):
            return strong_augment(images.float(), generator, switches, mean=self.mean, std=self.std)

    def student_logits(self, images: Tensor, size: tuple[int, int]) -> Tensor:
        """Student logits upsampled to ``size`` (the label size, as mmseg's decode loss does)."""
        return resize_logits(self.student(images).float(), size)

    # -- best on val (opt-in; uses target labels) -------------------------------------------------------
    def evaluate(self, model: nn.Module):
        recipe = self.ctx.recipe
        if recipe.eval.dataset is None:
            raise UserError(f"stage '{self.ctx.name}': select_best_on_val needs eval.dataset (a labelled target val)",
                            path=self.ctx.recipe_path)
        if not hasattr(self, "_val_set"):
            self._val_set = self.ctx.open_dataset(recipe.eval.dataset)
        return evaluate_student(
            model, self._val_set, mean=self.mean, std=self.std, preset=recipe.eval.preset,
            protocol=recipe.eval.protocol, device=self.ctx.device, test_time_prior=self.options.test_time_prior,
            max_images=recipe.eval.max_images,
        )

    def _consider_best(self, it: int) -> bool:
        """Evaluate the student (state after ``it`` iterations); keep it when it is the best so far."""
        if not self.ctx.is_main:
            return False
        miou = float(self.evaluate(self.student.module).miou)
        self.best_history.append((it, miou))
        if self.best_miou is None or miou > self.best_miou:
            self.best_miou, self.best_iteration = miou, it
            if "best" in self.models:
                self.models["best"].module.load_state_dict(self.student.module.state_dict())
            return True
        return False

    # -- state and outputs ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"best_miou": self.best_miou, "best_iteration": self.best_iteration,
                "best_history": list(self.best_history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_miou = state.get("best_miou")
        self.best_iteration = state.get("best_iteration")
        self.best_history = [tuple(x) for x in state.get("best_history", [])]

    def resolved_switches(self) -> dict[str, Any]:
        return {"quirks": self.ctx.recipe.quirks}

    def write_outputs(self, out_dir: Path) -> list[str]:
        written = [write_options(out_dir, self.ctx.name, self.name, self.options, self.resolved_switches())]
        if self.options.select_best_on_val:
            from adaptseg.models import save_weights

            final = self.ctx.iters
            if not self.best_history or self.best_history[-1][0] != final:
                if self._consider_best(final):
                    # the trainer exported the previous best a moment ago; the final model beats it
                    save_weights(self.student.module, out_dir / "student.safetensors",
                                 {"preset": self.ctx.recipe.model.preset, "stage": self.ctx.name,
                                  "iteration": str(final), "model": "best"})
            write_json_atomic(out_dir / BEST_FILE, {
                "selected_with_target_labels": True,
                "test_time_prior": self.options.test_time_prior,
                "dataset": self.ctx.recipe.eval.dataset.model_dump(mode="json") if self.ctx.recipe.eval.dataset else None,
                "protocol": self.ctx.recipe.eval.protocol,
                "best_iteration": self.best_iteration,
                "best_mIoU": self.best_miou,
                "history": [{"iteration": i, "mIoU": m} for i, m in self.best_history],
                "student.safetensors": "best on val", "student-last.safetensors": "last iteration",
            })
            written.append(BEST_FILE)
        return written


@register_method("atp_align")
class AtpAlign(_AtpTraining):
    """A: curriculum entropy minimisation with the diversity term on the strong target crop (atp.md §3)."""

    Options = AlignOptions
    options: AlignOptions

    @property
    def detach_focal_weight(self) -> bool:
        return resolve_quirk(self.options.detach_focal_weight, self.ctx.recipe.quirks, official=False)

    def resolved_switches(self) -> dict[str, Any]:
        return {**super().resolved_switches(), "detach_focal_weight": self.detach_focal_weight}

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        generator = self.generator(it, "atp")
        switches = sample_strong_aug_switches(generator)
        images = batch["target"]["image"]
        height, width = images.shape[-2:]
        if (height, width) != (min(self.crop[0], height), min(self.crop[1], width)):
            images, _, _ = self.weak_target(images, generator)  # the teacher only picks the crop in A
        strong = self.strong(images, generator, switches)
        logits = self.student_logits(strong, tuple(images.shape[-2:]))
        o = self.options
        loss = entropy_curriculum_loss(logits, gamma=o.gamma, alpha=o.alpha, entropy_scale=o.entropy_scale,
                                       diversity_scale=o.diversity_scale, detach_focal_weight=self.detach_focal_weight)
        return {"entropy": loss}


def ce_and_negative(
    logits: Tensor, labels: Tensor, *, pixel_weight: Tensor | None = None, threshold: float = NEGATIVE_THRESHOLD
) -> tuple[Tensor, Tensor]:
    """ATP's modified ``CrossEntropyLoss`` on label-size logits: (CE over all pixels, negative loss) (atp.md §3)."""
    ce = cross_entropy(logits, labels, normalize="all_pixels", pixel_weight=pixel_weight)
    return ce, negative_label_loss(logits, threshold=threshold)


@register_method("atp_teach")
class AtpTeach(_AtpTraining):
    """T: CE on the teacher's argmax of the weak crop (every pixel, no weight) + the negative loss (atp.md §3)."""

    Options = TeachOptions
    options: TeachOptions

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        generator = self.generator(it, "atp")
        switches = sample_strong_aug_switches(generator)
        images, _, labels = self.weak_target(batch["target"]["image"], generator)
        strong = self.strong(images, generator, switches)
        logits = self.student_logits(strong, tuple(labels.shape[-2:]))
        ce, neg = ce_and_negative(logits, labels, threshold=self.options.negative_threshold)
        return {"ce": ce, "neg": neg}


@register_method("atp_propagate")
class AtpPropagate(_AtpTraining):
    """P: easy split as pseudo-source, prototypes, ProtoCL on hard, ClassMix easy→hard (atp.md §3 "P").

    The two streams ``easy`` and ``hard`` are the recipe's ``target`` stream (dataset and pipeline)
    restricted to the ids listed by the rank stage (``easy_list``/``hard_list``). Hard images larger than
    the crop get the class-balanced crop on the teacher's label (ACDC); easy ones never do (§3 P.1): they
    get a plain random crop (the release's ACDC easy pipeline chose that crop with ground truth, §6).
    """

    Options = PropagateOptions
    options: PropagateOptions
    streams: ClassVar[tuple[str, ...]] = ("easy", "hard")

    def __init__(self, options: StrictModel, ctx):
        super().__init__(options, ctx)
        self.prototypes: CumulativeMeanPrototypes | None = None
        self._pending_prototypes: Mapping[str, Tensor] | None = None
        if ctx is not None:
            ctx.recipe = split_streams(ctx.recipe, self.options, ctx.recipe_path)

    def setup(self, models: Mapping[str, ModelHandle]) -> None:
        super().setup(models)
        dim = int(self.ctx.preset.auxiliary_head.options.get("channels", 512)) if self.ctx.preset.auxiliary_head else 0
        if dim <= 0:
            raise UserError(f"stage '{self.ctx.name}' (atp_propagate) needs a model with ATP's projection head",
                            path=self.ctx.recipe_path, fix="use the atp-daformer-mitb5 or tiny-atp-daformer preset")
        self.prototypes = CumulativeMeanPrototypes(self.num_classes, dim, device=self.ctx.device)
        if self._pending_prototypes is not None:
            self.prototypes.load_state_dict(dict(self._pending_prototypes))

    def plain_crop(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """A uniformly placed crop of the preset's size per image when the images are larger (no labels used)."""
        height, width = images.shape[-2:]
        crop = (min(self.crop[0], height), min(self.crop[1], width))
        if (height, width) == crop:
            return images
        boxes = [random_crop_boxes(height, width, crop, generator, num=1)[0] for _ in range(images.shape[0])]
        return torch.stack([image[:, y0:y1, x0:x1] for image, (y0, y1, x0, x1) in zip(images, boxes, strict=True)])

    def plcrop(self, height: int) -> tuple[int, int]:
        return plcrop_rows(height, tuple(self.options.plcrop))

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        o = self.options
        generator = self.generator(it, "atp")
        switches = sample_strong_aug_switches(generator)
        easy = self.plain_crop(batch["easy"]["image"], generator)
        size = tuple(easy.shape[-2:])

        # 1-2. teacher labels and projection features of the weak easy crop (no CBC crop); prototypes
        with torch.no_grad():
            batchnorm_train_stochastic_off(self.teacher.module)
            teacher_easy = self.teacher.features(easy)
            _, easy_labels = teacher_pseudo_labels(resize_logits(teacher_easy["logits"].float(), size))
            features = teacher_easy["aux"].float()
            scale = size[0] // features.shape[-2]
            cells = downscale_label_ratio(easy_labels, scale, self.num_classes, min_ratio=o.label_share)
            self.prototypes.update(*valid_cell_features(features, cells))

        # hard: teacher labels (CBC crop when larger than the crop) and the quality-weight map
        hard, hard_conf, hard_labels = self.weak_target(batch["hard"]["image"], generator)
        top, bottom = self.plcrop(hard.shape[-2])
        hard_weight = pseudo_weight_map(hard_conf, o.quality_threshold, ignore_top=top, ignore_bottom=bottom)

        strong_easy = self.strong(easy, generator, switches)
        strong_hard = self.strong(hard, generator, switches)
        losses: dict[str, Tensor] = {}

        # 1. easy: CE + negative on the teacher's labels, unweighted
        logits = self.student_logits(strong_easy, size)
        losses["easy_ce"], losses["easy_neg"] = ce_and_negative(logits, easy_labels, threshold=o.negative_threshold)

        # 3. ProtoCL on the strong hard crop (aux head only), from proto_start
        if it >= o.proto_start:
            projection = self.student.features(strong_hard)["aux"]
            labels = torch.where(hard_weight == 0, torch.full_like(hard_labels, IGNORE_INDEX), hard_labels)
            scale = hard.shape[-2] // projection.shape[-2]
            cells = downscale_label_ratio(labels, scale, self.num_classes, min_ratio=o.label_share)
            losses["proto"] = o.proto_weight * proto_contrastive_loss(
                projection, cells, self.prototypes.prototypes, temperature=o.proto_temperature,
                use_reg=o.use_reg, reg_weight=o.reg_weight,
            )

        # 4. ClassMix easy → hard from the strong crops, augmented again; weight 1 pasted, q elsewhere
        with full_precision(easy.device):
            masks = batch_class_mix_masks(easy_labels, generator)
            mixed = mix_images(masks, strong_easy, strong_hard)
        mixed = self.strong(mixed, generator, switches)
        mixed_labels = mix_labels(masks, easy_labels, hard_labels)
        weight = mixed_pixel_weight(masks, hard_weight)
        logits = self.student_logits(mixed, tuple(mixed_labels.shape[-2:]))
        losses["mix_ce"], losses["mix_neg"] = ce_and_negative(
            logits, mixed_labels, pixel_weight=weight, threshold=o.negative_threshold
        )
        return losses

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.prototypes is not None:
            state["prototypes"] = self.prototypes.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if "prototypes" in state:
            if self.prototypes is None:
                self._pending_prototypes = state["prototypes"]
            else:
                self.prototypes.load_state_dict(dict(state["prototypes"]))

    def resolved_switches(self) -> dict[str, Any]:
        crop = self.crop[0] if hasattr(self, "crop") else self.ctx.preset.crop[0]
        return {**super().resolved_switches(), "plcrop_rows_at_crop": list(self.plcrop(crop)),
                "easy_ids": self.options.easy_list, "hard_ids": self.options.hard_list}


def split_streams(recipe, options: PropagateOptions, source: Path | None = None):
    """The recipe with ``data.easy`` / ``data.hard``: ``data.<stream>`` restricted to the rank stage's lists."""
    if options.stream not in recipe.data:
        raise UserError(
            f"atp_propagate reads the easy/hard splits of data stream '{options.stream}', which the recipe lacks",
            path=source, fix=f"add data.{options.stream} (the target train images the rank stage ranked)",
        )
    base = recipe.data[options.stream]
    easy = base.model_copy(update={"ids": options.easy_list})
    hard = base.model_copy(update={"ids": options.hard_list})
    return recipe.model_copy(update={"data": {**recipe.data, "easy": easy, "hard": hard}})


# ============================================================================================ ranking
class _Scorer:
    """The engine's ``predict``: 0–255 crops → logits at the crop size, in eval or train mode, no grad."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], device: torch.device,
                 train_mode: bool):
        from adaptseg.models import DeployModule

        self.module = DeployModule(model, mean, std).to(device)
        self.device = device
        self.mean = tuple(float(v) for v in mean)
        self.train_mode = train_mode

    def __call__(self, crops: Tensor) -> Tensor:
        self.module.train(self.train_mode)
        with torch.inference_mode():
            return self.module(crops.to(self.device, torch.float32)).float()


@register_method("atp_rank")
class AtpRank(Task):
    """Entropy ranking of the target train images with the stage's model → easy/hard id lists (atp.md §2.3).

    Each image is resized as the recipe's evaluation preset resizes it (``eval.preset``, else the target
    dataset's protocol preset; mmseg's test pipeline, shared by val and test) and goes through one
    whole-image forward in the sliding-window engine; its score is the mean over (C, H, W) of
    ``−p·log₂p/log₂C`` at that input resolution, as in the release. Outputs: ``easy_split.txt`` /
    ``hard_split.txt`` (ids, one per line, in ascending score order) and ``scores.json``.
    """

    Options = RankOptions
    options: RankOptions

    @property
    def train_mode(self) -> bool:
        return resolve_quirk(self.options.train_mode, self.ctx.recipe.quirks, official=True)

    def dataset(self):
        recipe = self.ctx.recipe
        if self.options.stream not in recipe.data:
            raise UserError(f"atp_rank ranks data stream '{self.options.stream}', which the recipe lacks",
                            path=self.ctx.recipe_path, fix=f"add data.{self.options.stream}")
        spec = recipe.data[self.options.stream]
        return self.ctx.open_dataset(spec.model_copy(update={"labels": False}))

    def inference_config(self, dataset):
        """The evaluation preset's resize, whole image, no TTA."""
        from adaptseg.infer.config import InferenceConfig, dataset_preset, load_preset

        preset = self.ctx.recipe.eval.preset
        config = load_preset(preset if preset is not None else dataset_preset(getattr(dataset, "name", "")))
        return InferenceConfig(mode="whole", resize=config.resize, upscale=config.upscale,
                               batch_size=1 if self.train_mode else self.options.batch_size, workers=1)

    def scores(self, model: nn.Module, dataset) -> dict[str, float]:
        """Image id → score, over every image of ``dataset``.

        The images are resized here (as the engine would) and the engine runs at their resized size, so
        the score is taken at the network's input resolution (the engine would upsample to the original).
        """
        import cv2

        from adaptseg.infer.engine import SlidingWindow, variant_size

        preset = self.ctx.preset
        config = self.inference_config(dataset)

        def item(index: int):
            def load() -> np.ndarray:
                image = dataset[index].image
                size = variant_size(image.shape[0], image.shape[1], config)
                if size != image.shape[:2]:
                    image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                return image
            return dataset.entries[index].id, load

        scorer = _Scorer(model, preset.mean, preset.std, self.ctx.device, self.train_mode)
        native = config.model_copy(update={"resize": None})
        engine = SlidingWindow(scorer, native, output="logits", device=self.ctx.device, pad_value=scorer.mean)
        out: dict[str, float] = {}
        for prediction in engine.run(item(i) for i in range(len(dataset))):
            out[prediction.id] = float(entropy_rank_scores(prediction.output.unsqueeze(0))[0])
            prediction.release()
        return out

    def run(self) -> list[str]:
        model = self.ctx.build_model("student").to(self.ctx.device)
        dataset = self.dataset()
        scores = self.scores(model, dataset)
        ids = list(scores)
        easy, hard = easy_hard_split([scores[i] for i in ids], easy_fraction=self.options.easy_fraction)
        out = self.ctx.out_dir
        write_text_atomic(out / EASY_LIST, "".join(f"{ids[i]}\n" for i in easy))
        write_text_atomic(out / HARD_LIST, "".join(f"{ids[i]}\n" for i in hard))
        write_json_atomic(out / SCORES_FILE, {
            "mode": "train" if self.train_mode else "eval",
            "easy_fraction": self.options.easy_fraction,
            "n_easy": len(easy), "n_hard": len(hard),
            "scores": {ids[i]: scores[ids[i]] for i in easy + hard},
        })
        options = write_options(out, self.ctx.name, self.name, self.options,
                                {"quirks": self.ctx.recipe.quirks, "train_mode": self.train_mode})
        return [EASY_LIST, HARD_LIST, SCORES_FILE, options]


def read_split(path: str | Path) -> list[str]:
    """The ids of an ``easy_split.txt`` / ``hard_split.txt`` file."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def read_scores(path: str | Path) -> dict[str, Any]:
    """``scores.json`` of a rank stage."""
    return json.loads(Path(path).read_text())
