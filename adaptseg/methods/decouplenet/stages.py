"""DecoupleNet's stages as registered methods and a task (see the package docstring for the pipeline and quirks).

``decouplenet_phase1`` (decoupled stems, two discriminators, self-discrimination), ``decouplenet_soft_labels``
(offline soft labels + per-class thresholds) and ``decouplenet_phase2`` (online-enhanced self-training).
The source-only model they start from is the ``source_only`` method's (``train/decouplenet/*.yaml``, stage
``source``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

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
from adaptseg.methods.decouplenet.network import (
    AuxClassifier,
    DomainStem,
    check_decouplable,
    head_outputs,
    low_level_features,
)
from adaptseg.methods.decouplenet.soft_labels import (
    LOGITS_DIR,
    STORE_DIR,
    SoftLabels,
    fuse_pseudo_labels,
    logits_file,
    offline_thresholds,
    save_logits,
    save_thresholds,
    thresholds_path,
    upsampled_soft_label,
)
from adaptseg.methods.parts.confidence_bank import (
    SD_BANK_CAPACITY,
    SD_PERCENTILE,
    ClassConfidenceBank,
)
from adaptseg.methods.parts.discriminator import FCDiscriminator, lsgan_loss
from adaptseg.methods.parts.geometry import (
    RANDOM_SIZED_RANGE,
    RANDOM_SIZED_WIDTH,
    sample_random_sized_crop,
    warp_to_crop,
)
from adaptseg.methods.parts.losses import cross_entropy, resize_logits
from adaptseg.methods.parts.pseudo import teacher_pseudo_labels
from adaptseg.methods.parts.thresholds import apply_class_thresholds
from adaptseg.methods.parts.torchvision_jitter import DECOUPLENET_JITTER, jitter_normalized
from adaptseg.train.config import OptimSection

#: decouplenet.md §3: domain labels of the discriminators
SOURCE, TARGET = 0.0, 1.0
TEMPERATURE = 1.8


#: DecoupleNet's steps call model parts (stems, shared layers) directly, which DDP would not synchronise
SINGLE_PROCESS = (
    "DecoupleNet's phases call the stems and shared layers directly, which DDP does not synchronise"
)


# ============================================================================================ phase 1
class Phase1Options(StrictModel):
    """decouplenet.md §3-4: temperature, loss weights, SD bank, discriminator widths and optimiser."""

    temperature: float = Field(TEMPERATURE, gt=0)
    adv_low_weight: float = 0.1
    adv_out_weight: float = 0.01
    sd_weight: float = 0.1
    sd_percentile: float = Field(SD_PERCENTILE, gt=0, lt=1)
    sd_bank: int = Field(SD_BANK_CAPACITY, ge=1)
    ndf_low: int = Field(32, ge=1)
    ndf_out: int = Field(64, ge=1)
    discriminator_optim: OptimSection = OptimSection(type="adam", lr=1e-4, betas=(0.9, 0.99))


@register_method("decouplenet_phase1")
class DecoupleNetPhase1(Method):
    """Phase 1 (decouplenet.md §3 "Phase 1"): per-domain stems, output- and feature-level LSGAN, SD.

    ``init_from.student`` (or ``model.init``): the source-only model. Models: ``student`` (``g_tgt →
    g_share → head → C``, exported), ``source_stem`` (``g_src``, exported as ``source_stem.safetensors``),
    ``aux`` (``C_aux``), ``d_low`` and ``d_out`` (not saved, as in the release). Per iteration two phases:
    ``G`` (source CE at T, the two adversarial terms, SD; the discriminators frozen) steps the segmentor
    optimiser; ``D`` (the discriminators on the G phase's detached inputs) steps theirs — so G's terms see
    the pre-update discriminators, as in the release's single step of all optimisers.
    """

    single_process_only = SINGLE_PROCESS

    Options = Phase1Options
    options: Phase1Options
    streams = ("source", "target")
    find_unused_parameters = True

    def __init__(self, options: StrictModel, ctx):
        super().__init__(options, ctx)
        self.bank = ClassConfidenceBank(
            ctx.preset.num_classes, capacity=self.options.sd_bank, percentile=self.options.sd_percentile
        )

    def build_models(self) -> dict[str, ModelSpec]:
        student = self.ctx.build_model("student")
        check_decouplable(student, self.ctx.preset.name)
        torch.manual_seed(self.ctx.recipe.seed)
        o = self.options
        return {
            "student": ModelSpec(student, "train", export="student"),
            "source_stem": ModelSpec(DomainStem(student.backbone), "train", export="source_stem"),
            "aux": ModelSpec(AuxClassifier(student.decode_head.conv_seg), "train"),
            "d_low": ModelSpec(FCDiscriminator(student.backbone.out_channels[0], o.ndf_low), "train"),
            "d_out": ModelSpec(FCDiscriminator(student.num_classes, o.ndf_out), "train"),
        }

    def optimizers(self, models: Mapping[str, ModelSpec]) -> dict[str, OptimizerSpec]:
        return {
            "main": OptimizerSpec(("student", "source_stem", "aux")),
            "discriminators": OptimizerSpec(("d_low", "d_out"), optim=self.options.discriminator_optim),
        }

    def sd_labels(self, logits: Tensor) -> Tensor:
        """Online SD pseudo-labels (§3): argmax of softmax(logits), 255 below the banked class threshold."""
        confidence, label = teacher_pseudo_labels(logits)
        thresholds = self.ctx.mean_across_ranks(self.bank.update(label, confidence).to(confidence.device))
        return apply_class_thresholds(label, confidence, thresholds)

    def phases(self, batch: Batch, it: int) -> list[Phase]:
        source, target = batch["source"], batch["target"]
        if "label" not in source:
            raise UserError(
                "decouplenet_phase1 needs labels on the source stream", fix="set data.source.labels: true"
            )
        student = self.models["student"].module
        stem, aux = self.models["source_stem"].module, self.models["aux"].module
        d_low, d_out = self.models["d_low"].module, self.models["d_out"].module
        o, t = self.options, self.options.temperature
        xs, ys, xt = source["image"], source["label"], target["image"]
        cache: dict[str, Tensor] = {}

        def up(x: Tensor, like: Tensor) -> Tensor:
            return resize_logits(x, tuple(like.shape[-2:]), align_corners=True)

        def generator() -> dict[str, Tensor]:
            phi_s = stem(xs)
            logits_s, _ = head_outputs(student, phi_s)
            phi_t = low_level_features(student.backbone, xt)
            logits_t, feature_t = head_outputs(student, phi_t)
            phi_s_up = up(phi_s, xs)
            soft_t = torch.softmax(up(logits_t, xt) / t, dim=1)
            cache.update(
                phi_s=phi_s_up.detach(),
                phi_t=up(phi_t, xt).detach(),
                soft_t=soft_t.detach(),
                soft_s=torch.softmax(up(logits_s, xs) / t, dim=1).detach(),
            )
            return {
                "source_ce": cross_entropy(
                    logits_s, ys, normalize="valid_pixels", align_corners=True, temperature=t
                ),
                "adv_low": o.adv_low_weight * lsgan_loss(d_low(phi_s_up), TARGET),
                "adv_out": o.adv_out_weight * lsgan_loss(d_out(soft_t), SOURCE),
                "sd": o.sd_weight
                * cross_entropy(aux(feature_t), self.sd_labels(logits_t), normalize="valid_pixels"),
            }

        def discriminators() -> dict[str, Tensor]:
            return {
                "d_low": 0.5 * lsgan_loss(d_low(cache["phi_s"]), SOURCE)
                + 0.5 * lsgan_loss(d_low(cache["phi_t"]), TARGET),
                "d_out": 0.5 * lsgan_loss(d_out(cache["soft_s"]), SOURCE)
                + 0.5 * lsgan_loss(d_out(cache["soft_t"]), TARGET),
            }

        return [
            Phase(generator, optimizers=("main",), frozen=("d_low", "d_out"), name="G"),
            Phase(discriminators, optimizers=("discriminators",), name="D"),
        ]

    def state_dict(self) -> dict:
        return {"sd_bank": self.bank.state_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        if "sd_bank" in state:
            self.bank.load_state_dict(state["sd_bank"])


# ============================================================================================ soft labels
#: what :meth:`DecoupleNetSoftLabels.write_logits` records beside the logits it writes
ORIGIN_FILE = "origin.json"
RESTART_FIX = "run the decouplenet_soft_labels stage again into an empty folder (delete this one first)"


class SoftLabelOptions(StrictModel):
    """Which stream to label, in which form (``float16`` logits: compact; ``topk``: most compact; ``float32``:
    the release's logits)."""

    stream: str = "target"
    form: Literal["float16", "topk", "float32"] = "float16"
    topk: int = Field(4, ge=1)
    percentile: float = Field(SD_PERCENTILE, gt=0, lt=1)
    batch_size: int = Field(1, ge=1)


@register_method("decouplenet_soft_labels")
class DecoupleNetSoftLabels(Task):
    """Offline soft labels and per-class thresholds of the phase-1 target path (§2.2-2.3).

    ``init_from.student``: phase 1's ``student.safetensors``. Eval mode, whole images at their size, no
    augmentation. ``form: topk`` writes the pseudo-label store with top-k soft labels at the output stride
    through the inference engine; ``form: float32`` / ``float16`` write the release's raw logits at that
    precision. All write
    ``<folder>_thresholds_p0.8.npy``.
    """

    Options = SoftLabelOptions
    options: SoftLabelOptions

    def run(self) -> list[str]:
        spec = self.ctx.stream_spec(self.options.stream)
        dataset = self.ctx.open_dataset(spec.model_copy(update={"labels": False}))
        model = self.ctx.build_model("student").to(self.ctx.device).eval()
        if self.options.form == "topk":
            folder, maps = self.write_store(dataset, model)
        else:
            folder, maps = self.write_logits(dataset, model)
        thresholds = offline_thresholds(maps, model.num_classes, self.options.percentile)
        path = thresholds_path(folder, self.options.percentile)
        save_thresholds(path, thresholds)
        return [folder.name, path.name]

    def write_store(self, dataset, model):
        from adaptseg.infer.config import InferenceConfig
        from adaptseg.infer.run import pseudo_label_split
        from adaptseg.infer.store import PseudoLabelStore

        store = PseudoLabelStore(
            self.ctx.out_dir / STORE_DIR, topk=self.options.topk, topk_stride=model.output_stride
        )
        config = InferenceConfig(mode="whole", batch_size=self.options.batch_size, workers=1)
        summary = pseudo_label_split(self.ctx.backend(model), dataset, store, config)
        self.refuse_skipped(summary.skipped, store.root)

        def maps():
            for image_id in store.ids():
                topk = store.read(image_id).topk
                yield torch.from_numpy(topk.classes[0].astype(np.int64)), torch.from_numpy(topk.probs[0])

        return store.root, maps()

    @torch.no_grad()
    def write_logits(self, dataset, model):
        from adaptseg.data.transforms import normalize

        folder = self.ctx.out_dir / LOGITS_DIR
        self.claim_logits_folder(folder, dataset)
        files = []
        for i, entry in enumerate(dataset.entries):
            path = logits_file(folder, entry.image_path)
            files.append(path)
            if not path.is_file():  # written atomically: a file that exists is whole
                image = normalize(dataset.read_image(i), self.ctx.preset.mean, self.ctx.preset.std)
                logits = model(torch.from_numpy(image)[None].to(self.ctx.device))[0]
                save_logits(path, logits, self.options.form)

        def maps():
            for path in files:
                confidence, label = torch.from_numpy(np.load(path)).float().softmax(0).max(0)
                yield label, confidence

        return folder, maps()

    def claim_logits_folder(self, folder: Path, dataset) -> None:
        """Record what writes ``folder`` (``origin.json``: the phase-1 weights' hash, the data, the form), or
        check that a resumed folder was written by the same — files that exist are reused, so logits of
        another model or precision must not be there (what :class:`PseudoLabelStore` does for the store)."""
        from adaptseg.infer.store import StoreOrigin, model_sha256

        ref = self.ctx.init_ref("student")
        model = self.ctx.resolve(ref.path) if ref is not None else None
        origin = StoreOrigin(
            model=str(model),
            model_sha256=model_sha256(model) if model is not None else None,
            dataset=dataset.name,
            split=str(dataset.split),
            preset=None,
            inference={"form": self.options.form},
        )
        record = folder / ORIGIN_FILE
        if record.is_file():
            try:
                recorded = json.loads(record.read_text())
            except (OSError, ValueError) as exc:
                raise UserError(f"unreadable record ({exc})", path=record, fix=RESTART_FIX) from None
            for name, had, asked in origin.differences(recorded):
                raise UserError(
                    f"these soft labels were written with {name}={had!r}, not {asked!r}",
                    path=record,
                    fix=RESTART_FIX,
                )
            return
        if folder.is_dir() and any(folder.iterdir()):
            raise UserError("soft labels without a record of what wrote them", path=folder, fix=RESTART_FIX)
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record, asdict(origin))

    def refuse_skipped(self, skipped: list[str], where) -> None:
        if skipped:
            raise UserError(
                f"{len(skipped)} target image(s) could not be read, e.g. {skipped[0]!r}",
                path=where,
                fix="fix or remove them, then run the stage again",
            )


# ============================================================================================ phase 2
class Phase2Options(StrictModel):
    """decouplenet.md §3 "Phase 2", §4 "Augmentation": the soft-label stage and the crop geometry."""

    soft_labels: str
    target_stream: str = "target"
    crop: tuple[int, int] = (512, 896)
    random_sized_width: int = Field(RANDOM_SIZED_WIDTH, ge=1)
    scale_range: tuple[float, float] = RANDOM_SIZED_RANGE
    jitter: tuple[float, float, float, float] = DECOUPLENET_JITTER
    source_weight: float = 1.0


@register_method("decouplenet_phase2")
class DecoupleNetPhase2(Method):
    """Phase 2, OEST (decouplenet.md §3 "Phase 2"): source CE + target CE on fused, thresholded pseudo-labels.

    ``init_from.student``: phase 1's target path (``g_src`` is not loaded: source images also go through
    ``g_tgt``). The target stream gives whole, un-augmented images; each gets one random-sized crop and
    flip here, applied alike to the image, the offline soft label (upsampled to the image, then warped,
    then softmaxed) and the online prediction of the whole image (train mode, upsampled to the crop size,
    softmaxed, then warped). Source and target crops are colour-jittered. No EMA, discriminators or C_aux.
    """

    single_process_only = SINGLE_PROCESS

    Options = Phase2Options
    options: Phase2Options

    @property  # type: ignore[override]
    def streams(self) -> tuple[str, ...]:
        return ("source", self.options.target_stream)

    def setup(self, models: Mapping[str, ModelHandle]) -> None:
        super().setup(models)
        spec = self.ctx.stream_spec(self.options.target_stream)
        moving = [
            next(iter(step))
            for step in spec.pipeline
            if next(iter(step)) != "resize"
            or (isinstance(step["resize"], dict) and "ratio_range" in step["resize"])
        ]
        if moving:
            raise UserError(
                f"decouplenet_phase2 crops the whole target image itself; data.{self.options.target_stream} "
                f"has {', '.join(moving)}",
                path=self.ctx.recipe_path,
                fix=f"keep only a fixed resize in data.{self.options.target_stream}.pipeline",
            )
        dataset = self.ctx.open_dataset(spec.model_copy(update={"labels": False}))
        self.soft = SoftLabels(
            self.ctx.resolve(self.options.soft_labels),
            {e.id: e.image_path for e in dataset.entries},
            self.ctx.preset.num_classes,
        )

    def jitter(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return jitter_normalized(
            images, generator, self.ctx.preset.mean, self.ctx.preset.std, self.options.jitter
        )

    @torch.no_grad()
    def pseudo_labels(self, student, full: Tensor, ids: list[str], geometries) -> Tensor:
        """Fused, thresholded labels on the crops: offline soft label and online whole-image prediction (§3)."""
        crop = tuple(self.options.crop)
        online = torch.softmax(resize_logits(student(full), crop, align_corners=True).float(), dim=1)
        offline, warped = [], []
        for i, (image_id, geometry) in enumerate(zip(ids, geometries, strict=True)):
            logits = upsampled_soft_label(self.soft.logits(image_id).to(full.device), tuple(full.shape[-2:]))
            offline.append(torch.softmax(warp_to_crop(logits, geometry, align_corners=True), dim=0))
            warped.append(warp_to_crop(online[i], geometry, align_corners=True))
        return fuse_pseudo_labels(torch.stack(offline), torch.stack(warped), self.soft.thresholds)

    def step(self, batch: Batch, it: int) -> dict[str, Tensor]:
        source, target = batch["source"], batch[self.options.target_stream]
        if "label" not in source:
            raise UserError(
                "decouplenet_phase2 needs labels on the source stream", fix="set data.source.labels: true"
            )
        student = self.models["student"]
        generator = self.ctx.generator(it, "augment", device="cpu")
        source_ce = cross_entropy(
            student(self.jitter(source["image"], generator)),
            source["label"],
            normalize="valid_pixels",
            align_corners=True,
        )
        full = target["image"]
        geometries = [
            sample_random_sized_crop(
                full.shape[-2],
                full.shape[-1],
                tuple(self.options.crop),
                generator,
                base_width=self.options.random_sized_width,
                scale_range=tuple(self.options.scale_range),
            )
            for _ in range(len(full))
        ]
        labels = self.pseudo_labels(student, full, list(target["id"]), geometries)
        crops = torch.stack(
            [warp_to_crop(image, g, align_corners=False) for image, g in zip(full, geometries, strict=True)]
        )
        target_ce = cross_entropy(
            student(self.jitter(crops, generator)), labels, normalize="valid_pixels", align_corners=True
        )
        return {"source_ce": self.options.source_weight * source_ce, "target_ce": target_ce}


__all__ = ["DecoupleNetPhase1", "DecoupleNetPhase2", "DecoupleNetSoftLabels"]
