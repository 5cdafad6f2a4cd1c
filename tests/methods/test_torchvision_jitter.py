"""torchvision ColorJitter semantics on tensors (adaptseg/methods/parts/torchvision_jitter.py)."""

import pytest
import torch

from adaptseg.methods.parts.torchvision_jitter import grey, jitter_image, jitter_normalized


def test_brightness_multiplies_every_pixel_by_one_factor():
    image = torch.rand(3, 8, 8) * 0.5
    out = jitter_image(image, torch.Generator().manual_seed(0), (0.5, 0.0, 0.0, 0.0))
    factor = (out.sum() / image.sum()).item()
    assert torch.allclose(out, image * factor, atol=1e-5) and 0.5 <= factor <= 1.5


def test_contrast_blends_with_the_mean_grey_and_saturation_with_the_pixel_grey():
    image = torch.rand(3, 6, 6)
    contrast = jitter_image(image, torch.Generator().manual_seed(1), (0.0, 0.5, 0.0, 0.0))
    c = ((contrast - grey(image).mean()) / (image - grey(image).mean())).flatten()
    assert torch.allclose(c, c[0].expand_as(c), atol=1e-4) and 0.5 <= c[0].item() <= 1.5
    grey_image = grey(image).expand(3, -1, -1)
    assert torch.allclose(
        jitter_image(grey_image, torch.Generator(), (0.0, 0.0, 0.5, 0.0)), grey_image, atol=1e-3
    )


def test_zero_strength_is_the_identity_through_normalisation():
    mean, std = (0.0, 0.0, 0.0), (255.0, 255.0, 255.0)
    images = torch.rand(2, 3, 4, 5)
    out = jitter_normalized(images, torch.Generator(), mean, std, (0.0, 0.0, 0.0, 0.0))
    assert out == pytest.approx(images, abs=1e-5)
