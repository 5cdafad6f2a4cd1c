"""What a stage sees: its resolved recipe, folders, device, process rank and helpers to build things.

Methods and tasks receive a :class:`StageContext` (``self.ctx``). It resolves references to earlier
stages' outputs (``source/student.safetensors`` → ``RUN_DIR/source/student.safetensors``), builds the
recipe's model with its initial weights, opens datasets, and hands out deterministic random generators
keyed by iteration so that a resumed run replays the same draws.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adaptseg.config import StrictModel
from adaptseg.errors import UserError
from adaptseg.models.pretrained import encoder_path, is_named
from adaptseg.resources import shipped_file
from adaptseg.train.config import CheckpointRef, DatasetSpec, Recipe, StageSpec
from adaptseg.train.distributed import DistInfo


@dataclass
class StageContext:
    """One stage of one run, as seen from one process."""

    stage: StageSpec
    recipe: Recipe  # with the stage's overrides and iters applied
    run_dir: Path
    device: torch.device
    dist: DistInfo
    recipe_path: Path | None = None
    stage_names: tuple[str, ...] = ()
    options: StrictModel | None = None

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def out_dir(self) -> Path:
        return self.run_dir / self.stage.name

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def iters(self) -> int:
        if self.recipe.schedule is None:
            raise UserError(
                f"stage '{self.name}' trains but the recipe has no 'schedule'",
                path=self.recipe_path,
                fix="add schedule: {iters: ...}",
            )
        return self.recipe.schedule.iters

    @cached_property
    def preset(self):
        """The model preset (``adaptseg.models.ModelPreset``: mean/std, crop, classes)."""
        from adaptseg.models import load_preset

        return load_preset(self.recipe.model.preset)

    # -- references to files ------------------------------------------------------------------------
    def resolve(self, ref: str) -> Path:
        """A path from a recipe: ``<stage>/<file>`` names an earlier stage's output, anything else a file.

        A relative file missing from the working folder is looked up beside the shipped presets too
        (``models/pretrained/…``: weights that come with adaptseg, found from any folder).
        """
        path = Path(ref).expanduser()
        if not path.is_absolute() and path.parts and path.parts[0] in self.stage_names:
            stage = path.parts[0]
            resolved = self.run_dir / path
            if not resolved.exists():
                raise UserError(
                    f"stage '{self.name}' needs '{ref}', an output of stage '{stage}', which is missing",
                    path=resolved,
                    fix=f"run stage '{stage}' first (adaptseg train RECIPE --stage {stage})",
                )
            return resolved
        if not path.exists() and not path.is_absolute():
            shipped = shipped_file(path)
            if shipped is not None:
                return shipped
        if not path.exists():
            raise UserError(
                f"stage '{self.name}': file not found", path=path, fix="check the path in the recipe"
            )
        return path

    def init_ref(self, model: str) -> CheckpointRef | None:
        """Where model ``model`` starts from: the stage's ``init_from[model]``, else ``model.init`` for the student.

        ``pretrained:<name>`` becomes the shipped encoder for the preset's backbone (:mod:`adaptseg.models.pretrained`).
        """
        if model in self.stage.init_from:
            ref = self.stage.init_from[model]
        else:
            ref = self.recipe.model.init if model == "student" else None
        if ref is not None and is_named(ref.path):  # pretrained:<name>: the shipped encoder for this backbone
            path = encoder_path(ref.path, self.preset.backbone.type)
            ref = ref.model_copy(update={"path": path, "prefix": "backbone.", "partial": True})
        return ref

    # -- models -------------------------------------------------------------------------------------
    def load_into(self, model: nn.Module, ref: CheckpointRef):
        """Load ``ref`` into ``model`` (``adaptseg.models.load_checkpoint``); returns its load report."""
        from adaptseg.models import load_checkpoint

        return load_checkpoint(
            model,
            self.resolve(ref.path),
            format=ref.format,
            strict=ref.strict,
            partial=ref.partial,
            prefix=ref.prefix,
        )

    def build_model(self, init: str | None = "student") -> nn.Module:
        """The recipe's model preset, with the weights of ``init_ref(init)`` loaded (random when none).

        Pass the role name whose initial weights to load (``"student"``, or e.g. ``"teacher_cu"`` for a
        frozen DDB teacher from ``init_from``), or ``None`` for random weights.
        """
        from adaptseg.models import build_model

        torch.manual_seed(self.recipe.seed)  # identical random init on every rank and every run
        model = build_model(self.preset)
        ref = self.init_ref(init) if init is not None else None
        if ref is not None:
            self.load_into(model, ref)
        return model

    # -- data ---------------------------------------------------------------------------------------
    def minicity_options(self) -> dict[str, Any]:
        return self.recipe.minicity.generator_options()

    def open_dataset(self, spec: DatasetSpec):
        """A dataset reader for a recipe dataset spec (``minicity:`` roots generated on demand; ``concat``
        datasets appended, as one :class:`~adaptseg.data.pipeline.ConcatReader`; a stream with ``rcs``
        wrapped in a :class:`~adaptseg.data.rcs.RareClassReader` whose statistics live in the run, one with
        ``class_balanced`` in a :class:`~adaptseg.data.class_balanced.ClassBalancedReader`)."""
        from adaptseg.data.pipeline import ConcatReader, open_dataset

        reader = open_dataset(
            spec.name,
            spec.root,
            spec.split,
            labels=spec.labels,
            options=spec.options,
            ids=self.resolve(spec.ids) if spec.ids else None,
            minicity=self.minicity_options(),
        )
        if spec.concat:
            reader = ConcatReader([reader, *(self.open_dataset(extra) for extra in spec.concat)])
        rcs = getattr(spec, "rcs", None)  # a training stream's rare-class sampling (StreamSpec.rcs)
        if rcs is not None:
            from adaptseg.data.rcs import RareClassReader, statistics_file

            reader = RareClassReader(reader, rcs, statistics_file(self.run_dir, spec))
        balanced = getattr(spec, "class_balanced", None)  # StreamSpec.class_balanced
        if balanced is not None:
            from adaptseg.data.class_balanced import ClassBalancedReader, balanced_list_length
            from adaptseg.data.rcs import statistics_file

            iterations = self.stage.iters or self.recipe.schedule.iters
            total_batch = spec.batch_size * self.dist.world_size
            reader = ClassBalancedReader(
                reader,
                statistics_file(self.run_dir, spec),
                balanced_list_length(iterations, total_batch, balanced.sub_epoch),
                seed=(self.recipe.seed, zlib.crc32(f"class_balanced/{self.name}".encode())),
                sub_epoch=balanced.sub_epoch,
            )
        return reader

    def stream_spec(self, name: str) -> DatasetSpec:
        """The recipe's data stream ``name``; a one-line error naming the recipe when it has none."""
        if name not in self.recipe.data:
            have = ", ".join(self.recipe.data) or "none"
            raise UserError(
                f"stage '{self.name}' reads data stream '{name}', but the recipe's data has {have}",
                path=self.recipe_path,
                fix=f"add data.{name}: {{name: ..., root: ..., pipeline: [...]}}",
            )
        return self.recipe.data[name]

    def ordered_batches(self, stream: str, *, batch_size: int, passes: int = 1, key: str = "ordered"):
        """Model inputs of stream ``stream`` in dataset order through its pipeline, ``passes`` times, unshuffled.

        The pipeline's random draws for image ``i`` of pass ``p`` come from :meth:`seed_for` ``(p, key, i)``,
        so a rerun sees the same crops. For passes over data that are not training (DDB's prototypes).
        """
        from adaptseg.data.pipeline import with_normalize
        from adaptseg.methods.parts.batches import ordered_batches

        spec = self.stream_spec(stream)
        return ordered_batches(
            self.open_dataset(spec),
            with_normalize(spec.pipeline, self.preset.mean, self.preset.std),
            batch_size=batch_size,
            passes=passes,
            sample_rng=lambda pass_index, index: np.random.default_rng(self.seed_for(pass_index, key, index)),
        )

    # -- inference ----------------------------------------------------------------------------------
    def backend(self, model: nn.Module, *, train_mode: bool = False):
        """``model`` behind the inference engine's eager backend (deploy contract: 0–255 crops in, logits out).

        ``train_mode`` runs it with Dropout/DropPath on and BatchNorm on batch statistics, under no_grad
        (ATP's released ranking); the default is eval mode.
        """
        from adaptseg.infer import TorchBackend

        backend = TorchBackend.from_model(model, self.preset.mean, self.preset.std, device=self.device)
        backend.module.train(train_mode)
        return backend

    # -- processes ----------------------------------------------------------------------------------
    def mean_across_ranks(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of ``values`` over the run's processes (itself in one process)."""
        from adaptseg.train.distributed import mean_across_ranks

        return mean_across_ranks(values)

    # -- randomness ---------------------------------------------------------------------------------
    def seed_for(self, it: int, *keys: str | int) -> int:
        """A 63-bit seed that depends on the recipe seed, the stage, the iteration, the rank and ``keys``."""
        parts = [self.recipe.seed, zlib.crc32(self.name.encode()), it, self.dist.rank]
        parts += [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
        return int(np.random.SeedSequence(parts).generate_state(1, np.uint64)[0]) & (2**63 - 1)

    def generator(
        self, it: int, *keys: str | int, device: torch.device | str | None = None
    ) -> torch.Generator:
        """A ``torch.Generator`` (on ``device``, default the stage's) seeded by :meth:`seed_for`."""
        gen = torch.Generator(device=device or self.device)
        gen.manual_seed(self.seed_for(it, *keys))
        return gen
