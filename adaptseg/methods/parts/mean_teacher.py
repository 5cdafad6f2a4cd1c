"""The mean-teacher scaffold every self-training method shares: a student and its EMA teacher.

DAFormer/DACS-style self-training (DDB's ST paths, ATP's A/T/P) trains a student and labels target
images with an exponential moving average of it (:class:`~adaptseg.methods.parts.ema.EMATeacher`):

* the student comes from the recipe (``init_from.student`` or ``model.init``), the teacher is a copy of it,
  copied again at ``t = 0`` and averaged in *before* each iteration's forward pass (ddb.md §3 ST step 1,
  atp.md §3);
* the teacher predicts with BatchNorm in train mode and Dropout/DropPath off
  (:func:`~adaptseg.methods.parts.modes.batchnorm_train_stochastic_off`);
* its pseudo-label is the argmax of the softmax of its logits resized to the label size, with the max
  probability as confidence (:func:`~adaptseg.methods.parts.pseudo.teacher_pseudo_labels`).

A method subclasses :class:`MeanTeacherMethod`, says how its teacher is named and exported and which
option holds α_max, and writes only its own step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor

from adaptseg.methods.base import Method, ModelHandle, ModelSpec
from adaptseg.methods.parts.ema import EMATeacher
from adaptseg.methods.parts.losses import resize_logits
from adaptseg.methods.parts.modes import batchnorm_train_stochastic_off
from adaptseg.methods.parts.pseudo import teacher_pseudo_labels


class MeanTeacherMethod(Method):
    """A student (role ``train``, exported as ``student``) and an EMA teacher (role ``ema``).

    Subclasses set :attr:`teacher_name` / :attr:`teacher_export` and implement :attr:`ema_alpha_max`
    (usually from their options). After :meth:`setup`: ``self.student`` and ``self.teacher`` handles.
    """

    #: the teacher's model name (checkpoint key) and export stem (``None``: not exported)
    teacher_name: ClassVar[str] = "teacher"
    teacher_export: ClassVar[str | None] = None

    @property
    def ema_alpha_max(self) -> float:
        """α_max of the teacher's EMA (``ema_alpha`` / ``ema_alpha_max`` option of the method)."""
        raise NotImplementedError

    def build_models(self) -> dict[str, ModelSpec]:
        student = self.ctx.build_model("student")
        return {
            "student": ModelSpec(student, "train", export="student"),
            self.teacher_name: ModelSpec(
                EMATeacher(student, alpha_max=self.ema_alpha_max), "ema", export=self.teacher_export
            ),
        }

    def setup(self, models: Mapping[str, ModelHandle]) -> None:
        super().setup(models)
        self.student = models["student"]
        self.teacher = models[self.teacher_name]
        batchnorm_train_stochastic_off(self.teacher.module)

    def before_step(self, it: int) -> None:
        """Copy the student at ``t = 0``, average it in afterwards — before the iteration's forward pass."""
        self.teacher.module.update(self.student.module, it)

    @torch.no_grad()
    def teacher_labels(self, images: Tensor, size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """``(confidence, label)`` of the teacher on ``images``, logits resized to ``size`` (default: the images')."""
        batchnorm_train_stochastic_off(self.teacher.module)
        logits = self.teacher(images)
        return teacher_pseudo_labels(resize_logits(logits.float(), size or tuple(images.shape[-2:])))
