"""FCDiscriminator and the LSGAN loss (adaptseg/methods/parts/discriminator.py)."""

import pytest
import torch

from adaptseg.methods.parts.discriminator import FCDiscriminator, lsgan_loss


def test_five_stride_2_convs_give_raw_scores_at_one_32nd():
    d = FCDiscriminator(19, ndf=8)
    assert [c.out_channels for c in d.convs] == [8, 16, 32, 64] and d.classifier.out_channels == 1
    assert all(
        c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) and c.bias is not None
        for c in [*d.convs, d.classifier]
    )
    with torch.no_grad():
        d.classifier.bias.fill_(-3.0)
        d.classifier.weight.zero_()
        out = d(torch.rand(2, 19, 64, 96))
    assert out.shape == (2, 1, 2, 3) and torch.all(out == -3.0)  # no sigmoid: raw scores


def test_lsgan_is_the_mean_squared_distance_to_the_domain_label():
    scores = torch.tensor([[0.5, -1.0], [2.0, 1.0]])
    assert lsgan_loss(scores, 1.0).item() == pytest.approx((0.25 + 4 + 1 + 0) / 4)
    assert lsgan_loss(scores, 0.0).item() == pytest.approx((0.25 + 1 + 4 + 1) / 4)
