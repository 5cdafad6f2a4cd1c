"""DDB — Deliberated Domain Bridging (Chen et al., NeurIPS 2022), composed from the shared parts.

Spec: ``shared/methods/ddb.md`` (written from the released code ``xiaoachen98/DDB``). Three stage kinds,
which a recipe (``train/ddb/*.yaml``) chains into the two-round pipeline of ddb.md §2::

    r1_st_cu, r1_st_ca      ddb_st          (§3 "ST step", "Bridging": cut / class path)
    r1_proto_cu, r1_proto_ca ddb_prototypes (§3 "Prototypes")
    r1_ckd                  ddb_ckd         (§3 "CKD step")
    r2_st_cu, r2_st_ca      ddb_st          (student ← r1_ckd student, lr ×0.1 via stage overrides)
    r2_proto_cu, r2_proto_ca, r2_ckd        (as in R1; the R2-CKD student starts from ImageNet again)

**Stage initialisation** (ddb.md §2, §6) is the recipe's job, through ``init_from`` and ``model.init``:

* ``ddb_st``: the student from ``init_from.student`` (R2: ``r1_ckd/student.safetensors``, the distilled
  ``stu_model``), else ``model.init`` (ImageNet). The EMA teacher is a copy of the student, copied again
  at ``t = 0`` (:class:`~adaptseg.methods.parts.ema.EMATeacher`). Outputs: ``student.safetensors`` (the
  released ``model.*``) and ``ema.safetensors`` (``ema_model.*``).
* ``ddb_prototypes``: the path's ST **student** (``init_from.student: r1_st_cu/student.safetensors`` —
  the released script strips ``model.`` and drops ``ema_model.*``). Output ``prototypes.safetensors``
  (``prototypes`` [C, D], D = 256 on the full preset, and ``counts`` [C]).
* ``ddb_ckd``: the student from ``model.init`` (ImageNet) in **both** rounds — ``init_from.student``
  is an opt-in switch that the released CKD does not have; the frozen teachers from
  ``init_from.teacher_<path>`` (the ST *students*, not the EMA); their prototypes from
  ``options.prototypes.<path>``. Loading is strict (a released ``.pth`` picks its model with
  ``prefix: model.`` / ``stu_model.``).

**Bridging** (ddb.md §3) is done here, inside the step, on the batch of normalised crops — the released
code does it per sample in its dataset; the maths is the same (every sample draws its own mask, colour
jitter and blur, from ``ctx.generator(it, "bridge")``, so a resumed run replays them). The source and
target crops of a batch row are paired as the two streams deliver them (the released dataset pairs each
source index with a uniformly random target, which the target stream's own shuffling gives).

**One backward.** The released ST step calls ``backward`` on ``L_src`` and then on ``L_mix`` before one
AdamW step; returning both terms to the Trainer, which back-propagates their sum, gives the same
gradient (``adaptseg.methods.base``).

The student/EMA-teacher scaffold, ordered passes over a stream, prototype distances, data-preparation
precision and mixing are the shared parts (:mod:`adaptseg.methods.parts`); each step's targets (mixed
images, labels, pixel weights, masks) come from a ``targets`` method that tests read directly.

On MiniCity (``train/ddb/minicity.yaml``) there is no ImageNet: every "ImageNet" start (the R1-ST
students and both CKD students) is the tiny preset's seeded random init.

Quirk switches (shared/methods/README.md, fidelity policy 2; recipe key ``quirks``):

* ``quirks: official`` → ``horizontal_only_blur=True``: the released ``STDataset.gaussian_blur`` computes
  the kernel size from the unsqueezed image's ``shape[1] = C`` and ``shape[2] = H`` and blurs with a
  ``1 × k(H)`` kernel (``1×51`` at 512²). Default (``intended``): the DACS ``k(H) × k(W)`` blur. Applies to
  the ST mix and the CKD target.

Released behaviours kept in both modes because they are the method, not bugs (each pinned by a test):
class-mix counts and may paste the ignore value 255; the EMA teacher predicts with batch-statistics BN;
``q`` is one scalar per batch (``≥ 0.968`` inclusive); CE averages over all pixels, ignored ones
included; the CKD ensemble multiplies by the prototype weights without renormalising and is not
thresholded; PhotoMetricDistortion only on the CKD source stream (a recipe pipeline, not code here);
prototypes from the target train set through its training pipeline. Not implemented: the unused
``soft_distill`` CKD loss; ``proto_rectify: false`` (the base default that every released CKD config
overrides) is kept as an option.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from adaptseg.config import StrictModel
from adaptseg.errors import UserError
from adaptseg.methods.base import Batch, Method, ModelHandle, ModelSpec, Task, register_method
from adaptseg.methods.parts.augment import strong_augment_each
from adaptseg.methods.parts.losses import cross_entropy, resize_logits
from adaptseg.methods.parts.mean_teacher import MeanTeacherMethod
from adaptseg.methods.parts.mic import MICMixin, MICOption, PseudoLabelledTarget
from adaptseg.methods.parts.mix import (
    class_mix_mask,
    cut_mix_mask,
    mix_images,
    mix_labels,
    mixed_pixel_weight,
    zero_mix_mask,
)
from adaptseg.methods.parts.prototypes import (
    DDB_COUNT_CAP,
    DDB_MIN_PIXELS,
    CappedMeanPrototypes,
    prototype_weights,
    rectified_ensemble,
)
from adaptseg.methods.parts.pseudo import QUALITY_THRESHOLD, quality_weight

MixMode = Literal["cut", "class", "zero"]
#: the bridging of each path (ddb.md §1: coarse region "cu" = cut-mix, fine class "ca" = class-mix)
PATH_MIX: dict[str, MixMode] = {"cu": "cut", "ca": "class"}
PROTOTYPES_FILE = "prototypes.safetensors"


# ------------------------------------------------------------------------------------------ helpers
def horizontal_only_blur(quirks: str) -> bool:
    """The released horizontal-only blur under ``quirks: official``, the 2-D blur otherwise (module docstring)."""
    return quirks == "official"


def bridge_masks(mode: MixMode, source_labels: Tensor, generator: torch.Generator) -> Tensor:
    """N×H×W bridging masks, one per source crop (``M = 1`` = source), drawn in row order (ddb.md §3).

    ``cut``: one box of ~40 % of the crop; ``class``: ``ceil(K/2)`` of the crop's ``K`` label values
    (255 included); ``zero``: all zeros (the mix is the target crop).
    """
    n, height, width = source_labels.shape
    device = source_labels.device
    if mode == "cut":
        masks = [cut_mix_mask(height, width, generator, device=device) for _ in range(n)]
    elif mode == "class":
        masks = [class_mix_mask(label, generator) for label in source_labels]
    elif mode == "zero":
        masks = [zero_mix_mask(height, width, device=device) for _ in range(n)]
    else:
        raise ValueError(f"unknown mix mode {mode!r}")
    return torch.stack(masks)


def bridge(
    mode: MixMode,
    source_images: Tensor,
    source_labels: Tensor,
    target_images: Tensor,
    generator: torch.Generator,
    *,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    horizontal_only: bool = False,
) -> tuple[Tensor, Tensor]:
    """Mixed images and their masks: ``x_m = post(M·x_s + (1 − M)·x_t)`` (ddb.md §3 "Bridging").

    ``post`` is the per-sample colour jitter (p = 0.8) and blur (p = 0.5) of
    :func:`~adaptseg.methods.parts.augment.strong_augment_each`; masks are drawn first, then the
    post-processing, all from ``generator``.
    """
    masks = bridge_masks(mode, source_labels, generator)
    mixed = mix_images(masks, source_images, target_images)
    mixed = strong_augment_each(mixed, generator, mean=mean, std=std, horizontal_only_blur=horizontal_only)
    return mixed, masks


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    return resize_logits(x.float(), size, align_corners=False)


def _require_labels(stream: Mapping, name: str, method: str) -> Tensor:
    if "label" not in stream:
        raise UserError(f"{method} needs labels on the '{name}' stream", fix=f"set data.{name}.labels: true")
    return stream["label"]


def _batch_parts(batch: Batch, method: str, source_stream: str = "source") -> tuple[Tensor, Tensor, Tensor]:
    """``(x_s, y_s, x_t)``; the two crops must have the same size (they are mixed pixel by pixel)."""
    source, target = batch[source_stream], batch["target"]
    x_s, x_t = source["image"], target["image"]
    y_s = _require_labels(source, source_stream, method)
    if x_s.shape[-2:] != x_t.shape[-2:] or x_s.shape[0] != x_t.shape[0]:
        raise UserError(
            f"{method}: source crops {tuple(x_s.shape)} and target crops {tuple(x_t.shape)} differ "
            "(DDB mixes them pixel by pixel)",
            fix="give data.source and data.target the same random_crop size and batch_size",
        )
    return x_s, y_s, x_t


@dataclass
class StepTargets:
    """What one DDB step trains the student on: ``L_src = CE(s(x_s), y_s)``, ``L = CE(s(images), labels)``.

    ``images`` are the bridged crops (ST: ``x_m``; CKD: the jittered/blurred target crop), ``labels`` their
    hard labels (ST: ``y_m``; CKD: the rectified ensemble's argmax), ``weight`` the per-pixel weight (ST:
    1 on source pixels, ``q`` on target pixels; CKD: none), ``masks`` the bridging masks (1 = source),
    ``target`` (ST) the clean target crop with the teacher's labels and ``q``, which the MIC term reads.
    """

    source_images: Tensor
    source_labels: Tensor
    images: Tensor
    labels: Tensor
    weight: Tensor | None
    masks: Tensor
    target: PseudoLabelledTarget | None = None


def step_losses(student: ModelHandle, targets: StepTargets, name: str) -> dict[str, Tensor]:
    """``{"src": L_src, name: L}``, both CEs averaged over all pixels (ddb.md §3)."""
    return {
        "src": cross_entropy(student(targets.source_images), targets.source_labels, normalize="all_pixels"),
        name: cross_entropy(
            student(targets.images), targets.labels, normalize="all_pixels", pixel_weight=targets.weight
        ),
    }


# ------------------------------------------------------------------------------------ self-training
class DDBSelfTrainingOptions(MICOption):
    """``ddb_st`` options (ddb.md §3 "ST step"); ``mic: {...}`` adds masked image consistency (parts/mic.py)."""

    path: Literal["cu", "ca"]
    ema_alpha: float = Field(0.99, ge=0.0, lt=1.0)
    pseudo_threshold: float = Field(QUALITY_THRESHOLD, gt=0.0, le=1.0)


@register_method("ddb_st")
class DDBSelfTraining(MICMixin, MeanTeacherMethod):
    """One DDB bridging path: mean-teacher self-training on cut-mixed (cu) or class-mixed (ca) crops.

    Per iteration ``t`` (ddb.md §3): EMA update before the forward pass (``before_step``);
    ``L_src = CE(f(x_s), y_s)``; the EMA teacher (BN batch statistics, no dropout) labels the clean target
    crop, ``q`` = share of the batch's pixels with confidence ``≥ 0.968``; ``L_mix = CE(f(x_m), y_m)``
    with pixel weight 1 on source pixels and ``q`` on target pixels. Both CEs average over all pixels.
    With ``options.mic``, a third term ``mic``: the student on the masked clean target crop against the
    teacher's labels of it, weighted by ``q`` (:mod:`adaptseg.methods.parts.mic`).
    """

    Options = DDBSelfTrainingOptions
    options: DDBSelfTrainingOptions
    streams = ("source", "target")
    teacher_name = "ema"
    teacher_export = "ema"

    @property
    def ema_alpha_max(self) -> float:
        return self.options.ema_alpha

    @property
    def mix_mode(self) -> MixMode:
        return PATH_MIX[self.options.path]

    def targets(self, batch: Batch, it: int) -> StepTargets:
        """ddb.md §3 ST steps 2–4: the teacher's labels and ``q`` on the clean target, then the bridged crops."""
        x_s, y_s, x_t = _batch_parts(batch, self.name)
        confidence, pseudo = self.teacher_labels(x_t, tuple(y_s.shape[-2:]))
        q = quality_weight(confidence, self.options.pseudo_threshold)
        x_m, masks = stage_bridge(self, self.mix_mode, x_s, y_s, x_t, it)
        return StepTargets(
            x_s,
            y_s,
            x_m,
            mix_labels(masks, y_s, pseudo),
            mixed_pixel_weight(masks, q),
            masks,
            PseudoLabelledTarget(x_t, pseudo, q),
        )

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        targets = self.targets(batch, it)
        return self.with_mic_loss(step_losses(self.student, targets, "mix"), targets.target, it)


def stage_bridge(
    method: Method, mode: MixMode, x_s: Tensor, y_s: Tensor, x_t: Tensor, it: int
) -> tuple[Tensor, Tensor]:
    """:func:`bridge` with the stage's normalisation, blur quirk and per-iteration generator."""
    preset = method.ctx.preset
    return bridge(
        mode,
        x_s,
        y_s,
        x_t,
        method.ctx.generator(it, "bridge", device="cpu"),
        mean=preset.mean,
        std=preset.std,
        horizontal_only=horizontal_only_blur(method.ctx.recipe.quirks),
    )


# ------------------------------------------------------------------------------------- prototypes
class DDBPrototypeOptions(StrictModel):
    """``ddb_prototypes`` options (ddb.md §3 "Prototypes"; the released ``--epochs`` is ``passes``)."""

    stream: str = "target"
    passes: int = Field(4, ge=1)
    batch_size: int = Field(4, ge=1)
    min_pixels: int = Field(DDB_MIN_PIXELS, ge=1)
    cap: int = Field(DDB_COUNT_CAP, ge=1)


@register_method("ddb_prototypes")
class DDBPrototypes(Task):
    """Class prototypes of one ST student over the target train set (ddb.md §3 "Prototypes").

    The model (``init_from.student``: the path's ST student) runs in eval mode over the stream's
    dataset *through its training pipeline* (random crop, flip), in dataset order, ``passes`` times;
    per image and per class with ``≥ min_pixels`` argmax pixels, the mean of the crop-size-upsampled
    feature updates the capped mean (:class:`CappedMeanPrototypes`). Writes ``prototypes.safetensors``.
    """

    Options = DDBPrototypeOptions
    options: DDBPrototypeOptions

    def batches(self):
        """Normalised N×3×H×W crops: ``passes`` unshuffled passes over the stream through its training pipeline."""
        return self.ctx.ordered_batches(
            self.options.stream,
            batch_size=self.options.batch_size,
            passes=self.options.passes,
            key="prototypes",
        )

    @torch.no_grad()
    def estimate(self, model: nn.Module) -> CappedMeanPrototypes:
        """Run ``model`` (eval mode) over :meth:`batches` and fold every image's class means in."""
        device = self.ctx.device
        model.to(device).eval()
        estimator: CappedMeanPrototypes | None = None
        for images in self.batches():
            images = images.to(device)
            out = model.forward_features(images)
            size = (int(images.shape[-2]), int(images.shape[-1]))
            logits, features = _resize(out["logits"], size), _resize(out["feature"], size)
            if estimator is None:
                estimator = CappedMeanPrototypes(
                    logits.shape[1], features.shape[1], cap=self.options.cap, device=device
                )
            estimator.update_from_predictions(features, logits, min_pixels=self.options.min_pixels)
        assert estimator is not None  # open_dataset refuses empty datasets
        return estimator

    def run(self) -> list[str]:
        if self.ctx.init_ref("student") is None:
            raise UserError(
                f"stage '{self.ctx.name}' needs the ST student whose prototypes it estimates",
                path=self.ctx.recipe_path,
                fix="set init_from: <st stage>/student.safetensors",
            )
        estimator = self.estimate(self.ctx.build_model("student"))
        save_prototypes(
            self.ctx.out_dir / PROTOTYPES_FILE,
            estimator,
            {"stage": self.ctx.name, "preset": self.ctx.recipe.model.preset},
        )
        return [PROTOTYPES_FILE]


def save_prototypes(path, estimator: CappedMeanPrototypes, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``prototypes`` [C, D] and ``counts`` [C] as safetensors, atomically."""
    from safetensors.torch import save_file

    from adaptseg.io import atomic_path

    state = {k: v.detach().cpu().contiguous() for k, v in estimator.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={str(k): str(v) for k, v in (metadata or {}).items()})


def load_prototypes(path, num_classes: int, dim: int) -> Tensor:
    """The [C, D] ``prototypes`` tensor of a :func:`save_prototypes` file, shape-checked."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    if "prototypes" not in state:
        raise UserError(
            "no 'prototypes' tensor in the file", path=path, fix="point at a ddb_prototypes output"
        )
    protos = state["prototypes"].float()
    if tuple(protos.shape) != (num_classes, dim):
        raise UserError(
            f"prototypes of shape {tuple(protos.shape)}, expected ({num_classes}, {dim})",
            path=path,
            fix="estimate them with the same model preset",
        )
    return protos


# --------------------------------------------------------------------------- cross-path distillation
class DDBDistillOptions(StrictModel):
    """``ddb_ckd`` options (ddb.md §3 "CKD step").

    ``prototypes`` maps each teacher path to its prototype file (``r1_proto_cu/prototypes.safetensors``);
    the teacher weights come from the stage's ``init_from.teacher_<path>``. ``source_stream`` names the
    labelled stream: the released CKD source pipeline adds PhotoMetricDistortion to the ST one, so the
    recipes define a second stream (``source_pmd``) over the same data and point this option at it.
    """

    prototypes: dict[str, str] = Field(min_length=1)
    proto_rectify: bool = True
    source_stream: str = "source"


@register_method("ddb_ckd")
class DDBDistillation(Method):
    """Cross-path knowledge distillation into a fresh student (ddb.md §3 "CKD step").

    Frozen teachers (eval mode, running-statistics BN) label the clean target crop with the
    prototype-rectified ensemble ``argmax_c mean_k w_k ⊙ softmax(z_k)`` — hard labels, no threshold,
    weight 1. ``L = CE(s(x_s), y_s) + CE(s(x_t_strong), ŷ)``; ``x_t_strong`` is the target crop after the
    per-sample colour jitter and blur (mix mode ``zero``). The source stream's pipeline carries the
    PhotoMetricDistortion (set in the recipe's stage overrides).
    """

    Options = DDBDistillOptions
    options: DDBDistillOptions
    eval_model = "student"

    @property  # type: ignore[override]
    def streams(self) -> tuple[str, ...]:
        """The labelled stream of ``options.source_stream`` and the target stream."""
        return (self.options.source_stream, "target")

    @property
    def paths(self) -> list[str]:
        return list(self.options.prototypes)

    def build_models(self) -> dict[str, ModelSpec]:
        specs = {"student": ModelSpec(self.ctx.build_model("student"), "train", export="student")}
        for path in self.paths:
            role = f"teacher_{path}"
            if self.ctx.init_ref(role) is None:
                raise UserError(
                    f"stage '{self.ctx.name}': teacher '{path}' has no weights",
                    path=self.ctx.recipe_path,
                    fix=f"set init_from.{role}: <the {path} ST stage>/student.safetensors",
                )
            specs[role] = ModelSpec(self.ctx.build_model(role), "frozen")
        return specs

    def setup(self, models: Mapping[str, ModelHandle]) -> None:
        super().setup(models)
        self.student = models["student"]
        self.teachers = {path: models[f"teacher_{path}"] for path in self.paths}
        self.prototypes: dict[str, Tensor] = {}
        for path, teacher in self.teachers.items():
            num_classes, dim = _head_shape(teacher.module)
            file = self.ctx.resolve(self.options.prototypes[path])
            self.prototypes[path] = load_prototypes(file, num_classes, dim).to(self.ctx.device)

    @torch.no_grad()
    def ensemble_labels(self, x_t: Tensor) -> Tensor:
        """Hard labels ``argmax_c P`` of the rectified ensemble on the clean target crops (N×H×W)."""
        size = (int(x_t.shape[-2]), int(x_t.shape[-1]))
        logits, weights = [], []
        for path, teacher in self.teachers.items():
            teacher.module.eval()
            out = teacher.features(x_t)
            logits.append(_resize(out["logits"], size))
            if self.options.proto_rectify:
                weights.append(prototype_weights(_resize(out["feature"], size), self.prototypes[path]))
            else:
                weights.append(torch.ones_like(logits[-1]))
        return rectified_ensemble(logits, weights)[1]

    def targets(self, batch: Batch, it: int) -> StepTargets:
        """ddb.md §3 CKD: the ensemble's labels on the clean target crop, the crop jittered/blurred (mode zero)."""
        x_s, y_s, x_t = _batch_parts(batch, self.name, self.options.source_stream)
        labels = self.ensemble_labels(x_t)
        x_strong, masks = stage_bridge(self, "zero", x_s, y_s, x_t, it)
        return StepTargets(x_s, y_s, x_strong, labels, None, masks)

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        return step_losses(self.student, self.targets(batch, it), "tgt")


def _head_shape(model: nn.Module) -> tuple[int, int]:
    """``(num_classes, feature_dim)`` of a segmentor whose head has a 1×1 ``conv_seg``."""
    conv = getattr(getattr(model, "decode_head", None), "conv_seg", None)
    if not isinstance(conv, nn.Conv2d):
        raise UserError(
            f"{type(model).__name__} has no decode_head.conv_seg; DDB needs the dlv2red-adapter head",
            fix="use the ddb-dlv2red-adapter-r101 or tiny-dlv2red-adapter preset",
        )
    return conv.out_channels, conv.in_channels


__all__ = [
    "PATH_MIX",
    "DDBDistillation",
    "DDBPrototypes",
    "DDBSelfTraining",
    "bridge",
    "bridge_masks",
    "horizontal_only_blur",
    "load_prototypes",
    "save_prototypes",
    "stage_bridge",
    "step_losses",
]
