"""EnD — ensemble-distillation for segmentation UDA (Chao, Cheng, Lee, CVPRW 2021; end.md).

A post-hoc method: several already-adapted **teachers** label the unlabelled target split, their labels
and per-class certainties are **fused** into one pseudo-label per image, and a **student** initialised
from a source-only model is trained on the fused labels with class-balanced CE. A recipe runs::

    teachers   end_teachers   each teacher (a run's stage folder, a weights file or an exported artifact)
                              through the inference engine into a pseudo-label store with certainties
                              (label/, conf/, cert/ = uint8 H×W×C floor(100·p)); resumable per image
    fuse       end_fuse       PLF (default), certainty or majority fusion → labels/<id>.png (trainIds,
                              255 = dropped) and color/<id>.png, written atomically; fusion.json
    student    end_student    class-balanced CE on the fused labels (init: a source-only checkpoint)

Spec sections implemented here (rules in :mod:`adaptseg.methods.parts.label_fusion` and
:mod:`adaptseg.methods.parts.class_balance`):

* §2.1 teacher export: whole images at the target dataset's evaluation protocol (Cityscapes: inferred at
  1024×512, probabilities upsampled to 2048×1024), certainties floor(100·softmax) as uint8 H×W×C in the
  store's ``cert/`` (compressed ``.npz``, not a 40 MB ``.npy`` per image and teacher).
* §3 fusion: PLF with a class → teacher table from the recipe (``assignment``), or — when the recipe says
  ``assign_by_iou`` — from each teacher's per-class IoU on a labelled **source** split; a split of the
  target dataset is refused unless ``allow_target_labels: true`` (fidelity policy 3). τ = 90.
* §4 student: per iteration, the target images come through the stream's deterministic resize (1024×512);
  the fused label (full resolution) is resized nearest to the image, both are cropped at one random box
  of the preset's crop (256×512), flipped only with ``random_mirror``; logits are upsampled bilinearly
  (``align_corners=True``) to the crop. Loss: class-weighted CE with ``class_balance`` (7 below
  ``rare_pixels_per_image``·B pixels), ``often_balance`` (EMA of absent classes) and the hard-pixel filter.
  Optimiser (recipe): SGD, Nesterov, momentum 0.9, wd 5e-4, head ×10, poly 0.9, no warm-up.
* §6 evaluation: the student, by the Trainer's evaluation; best-on-val selection is the opt-in recipe key
  ``eval.select_best`` (the release keeps the best val-GT checkpoint every 1000 iterations).

Switches (``end_student`` options; the resolved values are written to ``end.json``):

========================  =========  ===================================================================
switch                    default    what
========================  =========  ===================================================================
``hard_pixel_filter``     ``true``   the release's ``--only-hard-label 80``, silently on in its README
                                     command: only pixels whose weighted loss reaches the 80th percentile
                                     of the batch (``hard_pixel_percentile``) are trained on (§7.1).
``class_balance``         ``true``   weight 7 for classes with fewer than 64·64·B pixels in the batch.
``often_balance``         ``true``   the EMA weight of classes absent from recent batches (needs
                                     ``class_balance``, as in the release).
``norm_params_trained``   ``null``   ``null`` follows ``quirks``. The release's DeepLab-v2 trainer leaves
                                     BatchNorm weights out of its optimiser (``freeze_bn`` is a bound
                                     method, hence truthy) while BN stays in train mode; v3+ trains them
                                     (a shadowing ``freeze_bn=False``). ``intended``: trained for every
                                     model; ``official``: held fixed for a DeepLab-v2 head (§5).
========================  =========  ===================================================================

quirks: official changes only ``norm_params_trained`` (above). Other departures, all deliberate: the
release's DeepLab-v2 student (jfzhang95 R101 at OS 16 with multi-grid, AdaptSegNet head summing only
d6 + d12) is approximated by the ``deeplabv2-r101`` preset (OS 8, four branches); images are resized by
the pipeline's ``resize`` (bilinear, not bicubic); the majority rule's SYNTHIA branch, which raises
``TypeError`` in the release, works.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from adaptseg.config import StrictModel
from adaptseg.data.labels import CLASSES, colorize
from adaptseg.errors import UserError
from adaptseg.io import read_label, write_json_atomic, write_png
from adaptseg.methods.base import Batch, Method, ModelHandle, ModelSpec, Task, register_method
from adaptseg.methods.parts.class_balance import (
    HARD_PIXEL_PERCENTILE,
    RARE_CLASS_WEIGHT,
    RARE_PIXELS_PER_IMAGE,
    AbsentClassWeights,
    class_pixel_counts,
    class_weighted_cross_entropy,
    hard_pixel_labels,
    rare_class_weights,
    weighted_pixel_losses,
)
from adaptseg.methods.parts.crop import random_crop_boxes
from adaptseg.methods.parts.label_fusion import (
    FUSION_THRESHOLD,
    FusionRule,
    assignment_from_iou,
    assignment_from_table,
    fuse_certainty,
    fuse_majority,
    fuse_plf,
)
from adaptseg.methods.parts.losses import resize_logits
from adaptseg.train.config import DatasetSpec

TEACHERS_FILE = "teachers.json"
FUSION_FILE = "fusion.json"
OPTIONS_FILE = "end.json"
LABELS_DIR = "labels"
COLOR_DIR = "color"


# ============================================================================================ teachers
class TeachersOptions(StrictModel):
    """The teacher pass: teacher name → model (``<stage>/…`` of this run, a weights file, an export)."""

    teachers: dict[str, str] = Field(min_length=2)
    stream: str = "target"
    #: inference preset (``infer/<name>.yaml``); ``None``: the target dataset's evaluation protocol
    preset: str | None = None
    batch_size: int | None = Field(None, ge=1)


def target_dataset(ctx, stream: str):
    """The unlabelled target split of ``stream`` (the images every EnD stage reads)."""
    spec = ctx.stream_spec(stream)
    return ctx.open_dataset(spec.model_copy(update={"labels": False}))


def inference_config(dataset, preset: str | None, batch_size: int | None = None):
    from adaptseg.infer.config import dataset_preset, load_preset

    config = load_preset(preset if preset is not None else dataset_preset(getattr(dataset, "name", "")))
    return config if batch_size is None else config.model_copy(update={"batch_size": batch_size})


def teacher_backend(ctx, ref: str):
    """The inference backend of a teacher reference (``load_backend``: run/stage folder, weights, artifact)."""
    from adaptseg.infer.backends import load_backend

    return load_backend(ctx.resolve(ref), ctx.device)


@register_method("end_teachers")
class EndTeachers(Task):
    """Each teacher labels the target split into ``<stage>/<teacher>/`` with certainties (end.md §2.1).

    Resumable like ``adaptseg pseudo-label``: a store records its model (by the hash of its bytes), data
    and inference settings, complete images are skipped, and a store of another model is refused.
    """

    Options = TeachersOptions
    options: TeachersOptions

    def run(self) -> list[str]:
        from adaptseg.infer.run import pseudo_label_split
        from adaptseg.infer.store import PseudoLabelStore, StoreOrigin

        dataset = target_dataset(self.ctx, self.options.stream)
        config = inference_config(dataset, self.options.preset, self.options.batch_size)
        record = {}
        for name, ref in self.options.teachers.items():
            model = self.ctx.resolve(ref)
            origin = StoreOrigin.of(model, dataset, self.options.preset, config)
            store = PseudoLabelStore(self.ctx.out_dir / name, certainty=True, origin=origin)
            summary = pseudo_label_split(teacher_backend(self.ctx, ref), dataset, store, config)
            if summary.skipped:
                raise UserError(
                    f"teacher {name!r}: {len(summary.skipped)} target image(s) could not be read, "
                    f"e.g. {summary.skipped[0]!r}",
                    path=self.ctx.out_dir / name,
                    fix="fix or remove them, then run the stage again (it resumes)",
                )
            record[name] = {"model": ref, "store": name, "images": len(store.ids())}
        write_json_atomic(
            self.ctx.out_dir / TEACHERS_FILE, {"teachers": record, "certainty": "floor(100 * p)"}
        )
        return [TEACHERS_FILE, *self.options.teachers]


def read_teachers(ctx, stage: str) -> dict[str, dict[str, Any]]:
    """The teachers a teacher-pass stage labelled with (``teachers.json``), in their order."""
    path = ctx.resolve(f"{stage}/{TEACHERS_FILE}")
    try:
        return dict(json.loads(path.read_text())["teachers"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"unreadable teacher record ({exc})",
            path=path,
            fix=f"run stage '{stage}' again (delete its {TEACHERS_FILE} first)",
        ) from None


# ============================================================================================ fusion
class IouAssignment(StrictModel):
    """Assign each class to the teacher with the best IoU on this labelled split (end.md §3)."""

    dataset: DatasetSpec
    preset: str | None = None
    #: score only the first images of the split
    max_images: int | None = Field(None, ge=1)
    #: the split may belong to the target dataset (uses target labels: opt-in, fidelity policy 3)
    allow_target_labels: bool = False


class FuseOptions(StrictModel):
    """The fusion task (end.md §3)."""

    teachers_stage: str = "teachers"
    rule: FusionRule = "plf"
    threshold: float = Field(FUSION_THRESHOLD, ge=0, le=100)
    #: PLF's class → teacher table: ``{teacher: [class names or trainIds] | "others"}``
    assignment: dict[str, list[str | int] | str] | None = None
    assign_by_iou: IouAssignment | None = None
    stream: str = "target"
    colour: bool = True

    @model_validator(mode="after")
    def _one_assignment(self) -> FuseOptions:
        if self.rule == "plf" and (self.assignment is None) == (self.assign_by_iou is None):
            raise ValueError(
                "PLF fusion needs exactly one of 'assignment' (a class → teacher table) "
                "and 'assign_by_iou' (a labelled source split)"
            )
        return self


def teacher_ious(
    ctx, teachers: Mapping[str, Mapping[str, Any]], by: IouAssignment, num_classes: int, target: DatasetSpec
) -> np.ndarray:
    """M×C per-class IoU of each teacher on ``by.dataset`` (NaN where a class never occurs)."""
    from adaptseg.infer.evaluate import evaluate_model

    if (by.dataset.name, by.dataset.root) == (target.name, target.root) and not by.allow_target_labels:
        raise UserError(
            f"stage '{ctx.name}': assign_by_iou would rank the teachers with target labels "
            f"({by.dataset.name} at {by.dataset.root})",
            path=ctx.recipe_path,
            fix="use a labelled source split, or set assign_by_iou.allow_target_labels: true "
            "(the run then selects with target labels)",
        )
    dataset = ctx.open_dataset(by.dataset)
    if by.max_images is not None:
        dataset.entries = dataset.entries[: by.max_images]
    rows = []
    for teacher in teachers.values():
        cm, _ = evaluate_model(teacher_backend(ctx, teacher["model"]), dataset, by.preset)
        rows.append(cm.iou()[:num_classes])
    return np.stack(rows)


@register_method("end_fuse")
class EndFuse(Task):
    """Fuse the teachers' labels and certainties into ``labels/<id>.png`` (+ ``color/``) (end.md §3)."""

    Options = FuseOptions
    options: FuseOptions

    def stores(self):
        from adaptseg.infer.store import PseudoLabelStore

        stage = self.options.teachers_stage
        teachers = read_teachers(self.ctx, stage)
        return teachers, [
            PseudoLabelStore(self.ctx.resolve(f"{stage}/{t['store']}")) for t in teachers.values()
        ]

    def assignment(
        self, teachers: Mapping[str, Any], num_classes: int
    ) -> tuple[list[int], np.ndarray | None]:
        names = list(teachers)
        if self.options.assignment is not None:
            try:
                return assignment_from_table(self.options.assignment, names, num_classes), None
            except UserError as exc:
                raise UserError(
                    f"stage '{self.ctx.name}' assignment: {exc}", path=self.ctx.recipe_path
                ) from None
        target = self.ctx.stream_spec(self.options.stream)
        ious = teacher_ious(self.ctx, teachers, self.options.assign_by_iou, num_classes, target)
        return assignment_from_iou(ious), ious

    def fuse(self, stores, image_id: str, assignment: list[int] | None, num_classes: int) -> np.ndarray:
        rule, threshold = self.options.rule, self.options.threshold
        labels = np.stack([store.read(image_id).label for store in stores])
        if rule == "majority":
            return fuse_majority(labels, num_classes).numpy()
        certainties = np.stack([store.read_certainty(image_id) for store in stores])
        if rule == "certainty":
            return fuse_certainty(certainties, threshold=threshold).numpy()
        return fuse_plf(labels, certainties, assignment, threshold=threshold).numpy()

    def run(self) -> list[str]:
        teachers, stores = self.stores()
        num_classes = int(stores[0].num_classes or len(CLASSES))
        assignment, ious = (
            self.assignment(teachers, num_classes) if self.options.rule == "plf" else (None, None)
        )
        names = list(teachers)
        ids = stores[0].ids()
        missing = [
            (name, i) for name, store in zip(names, stores, strict=True) for i in ids if i not in store
        ]
        if missing:
            name, image_id = missing[0]
            raise UserError(
                f"teacher {name!r} has no pseudo-label for {image_id!r}",
                path=self.ctx.resolve(f"{self.options.teachers_stage}/{teachers[name]['store']}"),
                fix=f"run stage '{self.options.teachers_stage}' again (it resumes)",
            )
        out = self.ctx.out_dir
        kept = np.zeros(num_classes + 1, np.int64)  # pixels per fused class, last: dropped (255)
        for image_id in ids:
            fused = self.fuse(stores, image_id, assignment, num_classes)
            write_png(out / LABELS_DIR / f"{image_id}.png", fused)
            if self.options.colour:
                write_png(out / COLOR_DIR / f"{image_id}.png", colorize(fused))
            kept += np.bincount(np.minimum(fused.ravel(), num_classes), minlength=num_classes + 1)
        names_of = [CLASSES[c] if c < len(CLASSES) else str(c) for c in range(num_classes)]
        write_json_atomic(
            out / FUSION_FILE,
            {
                "rule": self.options.rule,
                "threshold": self.options.threshold,
                "teachers": names,
                "assignment": None
                if assignment is None
                else {names_of[c]: names[t] for c, t in enumerate(assignment)},
                "assigned_by": "table"
                if self.options.assignment is not None
                else ("iou" if ious is not None else None),
                "teacher_iou": None
                if ious is None
                else {
                    n: [None if np.isnan(v) else float(v) for v in row]
                    for n, row in zip(names, ious, strict=True)
                },
                "images": len(ids),
                "kept_fraction": float(kept[:-1].sum() / max(kept.sum(), 1)),
                "pixels_per_class": {names_of[c]: int(kept[c]) for c in range(num_classes)},
            },
        )
        return [LABELS_DIR, *([COLOR_DIR] if self.options.colour else []), FUSION_FILE]


# ============================================================================================ student
class StudentOptions(StrictModel):
    """The student (end.md §4); see the module docstring's switch table."""

    labels: str = "fuse"
    class_balance: bool = True
    often_balance: bool = True
    max_value: float = Field(RARE_CLASS_WEIGHT, ge=1)
    rare_pixels_per_image: int = Field(RARE_PIXELS_PER_IMAGE, ge=0)
    hard_pixel_filter: bool = True
    hard_pixel_percentile: float = Field(HARD_PIXEL_PERCENTILE, ge=0, le=100)
    #: the training crop (H, W); ``None``: the preset's (256×512 for EnD's presets)
    crop: tuple[int, int] | None = None
    random_mirror: bool = False
    align_corners: bool = True
    norm_params_trained: bool | None = None


#: pipeline steps that keep the image aligned with a label resized to it (no crop, flip or padding)
ALIGNED_STEPS = ("resize", "normalize", "photometric")


class FusedLabels:
    """The fused labels of an ``end_fuse`` stage, read per training batch at the images' size (nearest)."""

    def __init__(self, ctx, stage: str):
        self.folder = ctx.resolve(f"{stage}/{LABELS_DIR}")
        self.stage = stage

    def read(self, ids: list[str], size: tuple[int, int]) -> Tensor:
        out = []
        for image_id in ids:
            path = self.folder / f"{image_id}.png"
            if not path.is_file():
                raise UserError(
                    f"no fused label for {image_id!r}",
                    path=path,
                    fix=f"run stage '{self.stage}' again (delete its folder first)",
                )
            label = read_label(path)
            if label.shape != size:
                label = cv2.resize(label, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
            out.append(torch.from_numpy(label))
        return torch.stack(out)


@register_method("end_student")
class EndStudent(Method):
    """Train the student on the fused labels with class-balanced, hard-pixel CE (end.md §4)."""

    Options = StudentOptions
    options: StudentOptions
    streams: ClassVar[tuple[str, ...]] = ("target",)

    def __init__(self, options: StrictModel, ctx):
        super().__init__(options, ctx)
        self.absent: AbsentClassWeights | None = None
        self._pending_state: Mapping[str, Any] | None = None
        self.check_pipeline()

    def check_pipeline(self) -> None:
        steps = [next(iter(step)) for step in self.ctx.stream_spec("target").pipeline]
        bad = [s for s in steps if s not in ALIGNED_STEPS]
        resize_ranges = [
            step
            for step in self.ctx.stream_spec("target").pipeline
            if isinstance(step.get("resize"), dict) and "ratio_range" in step["resize"]
        ]
        if bad or resize_ranges:
            raise UserError(
                f"stage '{self.ctx.name}': the target pipeline must keep images aligned with the "
                f"fused labels (it has {', '.join(bad) or 'a random resize'})",
                path=self.ctx.recipe_path,
                fix="keep only a fixed resize in data.target.pipeline; end_student crops and flips itself",
            )

    @property
    def norm_params_trained(self) -> bool:
        if self.options.norm_params_trained is not None:
            return self.options.norm_params_trained
        head = getattr(self.ctx.preset.decode_head, "type", "")
        return not (self.ctx.recipe.quirks == "official" and head == "deeplabv2")

    def build_models(self) -> dict[str, ModelSpec]:
        model = self.ctx.build_model("student")
        if not self.norm_params_trained:  # BN stays in train mode (running statistics update), weights fixed
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.requires_grad_(False)
        return {"student": ModelSpec(model, "train", export="student")}

    def setup(self, models: Mapping[str, ModelHandle]) -> None:
        super().setup(models)
        self.student = models["student"]
        self.num_classes = int(getattr(self.student.module, "num_classes", self.ctx.preset.num_classes))
        self.crop = tuple(self.options.crop or self.ctx.preset.crop)
        self.fused = FusedLabels(self.ctx, self.options.labels)
        self.absent = AbsentClassWeights(self.num_classes, max_value=self.options.max_value)
        if self._pending_state is not None:
            self.absent.load_state_dict(dict(self._pending_state))

    def crops(self, images: Tensor, labels: Tensor, it: int) -> tuple[Tensor, Tensor]:
        """One random crop box of the preset's size per image (and a flip with ``random_mirror``)."""
        generator = self.ctx.generator(it, "crop", device="cpu")
        height, width = images.shape[-2:]
        crop = (min(self.crop[0], height), min(self.crop[1], width))
        boxes = [random_crop_boxes(height, width, crop, generator, num=1)[0] for _ in range(images.shape[0])]
        images = torch.stack(
            [im[:, y0:y1, x0:x1] for im, (y0, y1, x0, x1) in zip(images, boxes, strict=True)]
        )
        labels = torch.stack([lb[y0:y1, x0:x1] for lb, (y0, y1, x0, x1) in zip(labels, boxes, strict=True)])
        if self.options.random_mirror:
            flip = torch.rand(images.shape[0], generator=generator) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)
            labels = torch.where(flip.view(-1, 1, 1).to(labels.device), labels.flip(-1), labels)
        return images, labels

    def class_weights(self, labels: Tensor) -> Tensor:
        """``W_c = w_c·ō_c`` for this batch (all ones without ``class_balance``)."""
        if not self.options.class_balance:
            return torch.ones(self.num_classes)
        counts = class_pixel_counts(labels.cpu(), self.num_classes)
        weights = rare_class_weights(
            counts,
            labels.shape[0],
            max_value=self.options.max_value,
            pixels_per_image=self.options.rare_pixels_per_image,
        )
        if self.options.often_balance:
            weights = weights * self.absent.update(counts)
        return weights

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        target = batch["target"]
        images = target["image"]
        labels = self.fused.read(list(target["id"]), tuple(images.shape[-2:])).to(images.device).long()
        images, labels = self.crops(images, labels, it)
        weights = self.class_weights(labels).to(images.device)
        logits = resize_logits(
            self.student(images).float(), tuple(labels.shape[-2:]), align_corners=self.options.align_corners
        )
        if self.options.hard_pixel_filter:
            labels = hard_pixel_labels(
                weighted_pixel_losses(logits, labels, weights), labels, self.options.hard_pixel_percentile
            )
        return {"ce": class_weighted_cross_entropy(logits, labels, weights)}

    def state_dict(self) -> dict[str, Any]:
        return {"absent_class_weights": self.absent.state_dict()} if self.absent is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "absent_class_weights" in state:
            if self.absent is None:
                self._pending_state = state["absent_class_weights"]
            else:
                self.absent.load_state_dict(dict(state["absent_class_weights"]))

    def write_outputs(self, out_dir: Path) -> list[str]:
        write_json_atomic(
            out_dir / OPTIONS_FILE,
            {
                "stage": self.ctx.name,
                "method": self.name,
                "options": self.options.model_dump(mode="json"),
                "quirks": self.ctx.recipe.quirks,
                "norm_params_trained": self.norm_params_trained,
                "selected_on_val": self.ctx.recipe.eval.select_best,
            },
        )
        return [OPTIONS_FILE]
