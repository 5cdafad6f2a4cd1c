"""One random-sized crop + flip for image, soft label and prediction (adaptseg/methods/parts/geometry.py)."""

import torch

from adaptseg.methods.parts.geometry import CropGeometry, sample_random_sized_crop, warp_to_crop


def test_random_sized_crop_follows_the_release_formula():
    g = torch.Generator().manual_seed(3)
    ratio = 0.5 + torch.rand((), generator=torch.Generator().manual_seed(3), dtype=torch.float64).item()
    geometry = sample_random_sized_crop(1024, 2048, (512, 896), g)
    w = int(ratio * 2200)
    assert geometry.size == (int(w / 2.0), w)
    y1, y2, x1, x2 = geometry.box
    assert 0 <= y1 and y2 <= geometry.size[0] and 0 <= x1 and x2 <= geometry.size[1]
    assert (y2 - y1, x2 - x1) == (512, 896)
    again = sample_random_sized_crop(1024, 2048, (512, 896), torch.Generator().manual_seed(3))
    assert again == geometry  # a seeded generator replays the draw


def test_a_resized_side_smaller_than_the_crop_is_raised_to_it():
    geometry = sample_random_sized_crop(
        100, 400, (64, 112), torch.Generator().manual_seed(0), base_width=150, scale_range=(1.0, 1.0)
    )
    assert geometry.size == (64, 150) and geometry.top == 0


def test_warp_resizes_then_crops_then_flips():
    x = torch.arange(8.0).view(1, 2, 4)
    out = warp_to_crop(
        x, CropGeometry(size=(2, 4), top=1, left=1, crop=(1, 2), flip=True), align_corners=True
    )
    assert out.tolist() == [[[6.0, 5.0]]]
