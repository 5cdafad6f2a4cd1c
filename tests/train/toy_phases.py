"""A two-optimiser, two-phase toy method (a segmentor and a discriminator, as DecoupleNet's phase 1).

Imported by the phase tests and, for the SIGKILL test, by the ``adaptseg train`` child process.
"""

from __future__ import annotations

import torch
from torch import nn

from adaptseg.methods.base import METHODS, Method, ModelSpec, OptimizerSpec, Phase, register_method
from adaptseg.methods.parts.losses import cross_entropy, resize_logits
from adaptseg.train.config import OptimSection
from tests.train.tiny import band_net


class Discriminator(nn.Module):
    """Pixel-wise domain classifier on softmax maps (one logit per pixel)."""

    def __init__(self, num_classes: int = 19):
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(
            nn.Conv2d(num_classes, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(8, 1, 1)
        )

    def forward(self, x):
        return self.net(x)


def _register():
    if "test_adversarial" in METHODS:
        return METHODS["test_adversarial"], METHODS["test_frozen_head"]

    @register_method("test_adversarial")
    class Adversarial(Method):
        """Phase 1: segmentor CE + fool the (frozen) discriminator; phase 2: the discriminator's LSGAN loss."""

        find_unused_parameters = True

        def build_models(self):
            return {
                "student": ModelSpec(band_net(), "train", export="student"),
                "disc": ModelSpec(Discriminator(), "train", export="disc"),
            }

        def optimizers(self, models):
            return {
                "student": OptimizerSpec(("student",)),
                "disc": OptimizerSpec(("disc",), optim=OptimSection(type="adamw", lr=1e-3), scheduled=False),
            }

        def phases(self, batch, it):
            x, y = batch["source"]["image"], batch["source"]["label"]
            student, disc = self.models["student"], self.models["disc"]
            cache = {}

            def segmentor():
                logits = resize_logits(student(x), tuple(y.shape[-2:]))
                cache["probs"] = logits.softmax(1).detach()
                fool = ((disc(logits.softmax(1)) - 1.0) ** 2).mean()
                return {"ce": cross_entropy(logits, y, normalize="all_pixels"), "adv": 0.01 * fool}

            def discriminator():
                return {
                    "d": ((disc(cache["probs"].flip(-1))) ** 2).mean()
                    + ((disc(cache["probs"]) - 1) ** 2).mean()
                }

            return [
                Phase(segmentor, optimizers=("student",), frozen=("disc",), name="seg"),
                Phase(discriminator, optimizers=("disc",), name="disc"),
            ]

    @register_method("test_frozen_head")
    class FrozenHead(Method):
        """Phase 1 trains everything; phase 2 the backbone only (``decode_head`` frozen), as UMMA's step D."""

        def phases(self, batch, it):
            x, y = batch["source"]["image"], batch["source"]["label"]
            student = self.models["student"]

            def ce():
                return {"ce": cross_entropy(student(x), y, normalize="all_pixels")}

            return [Phase(ce, name="all"), Phase(ce, frozen=("student.decode_head",), name="backbone")]

    return Adversarial, FrozenHead


Adversarial, FrozenHead = _register()
