"""Fully convolutional domain discriminators and the least-squares GAN loss (AdaptSegNet, DecoupleNet).

Spec rules implemented here (decouplenet.md §3-4; the same discriminator as AdaptSegNet's ``FCDiscriminator``):

* :class:`FCDiscriminator`: five 4×4 convolutions with stride 2 and padding 1, all with bias, LeakyReLU(0.2)
  after the first four; widths ``ndf·(1, 2, 4, 8)`` then 1. Its output is a raw score map at 1/32 of the
  input (no sigmoid): a 512×896 input gives 1×16×28.
* :func:`lsgan_loss` (``--gan LS``): the mean squared error between the raw scores and a constant domain
  label (DecoupleNet: source = 0, target = 1).

Quirk switches: none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEAKY_SLOPE = 0.2


class FCDiscriminator(nn.Module):
    """AdaptSegNet's fully convolutional discriminator (raw scores at stride 32, see the module docstring)."""

    def __init__(self, in_channels: int, ndf: int = 64):
        super().__init__()
        widths = [in_channels, ndf, ndf * 2, ndf * 4, ndf * 8]
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, 4, stride=2, padding=1)
            for cin, cout in zip(widths[:-1], widths[1:], strict=True)
        )
        self.classifier = nn.Conv2d(ndf * 8, 1, 4, stride=2, padding=1)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = self.act(conv(x))
        return self.classifier(x)


def lsgan_loss(scores: Tensor, domain: float) -> Tensor:
    """Least-squares GAN loss: ``mean((scores − domain)²)`` against a constant domain label."""
    scores = scores.float()
    return F.mse_loss(scores, torch.full_like(scores, float(domain)))


__all__ = ["FCDiscriminator", "lsgan_loss"]
