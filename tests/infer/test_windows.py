"""The window grid (mmseg's rule, last window shifted back) and the overlap weights."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from adaptseg.infer.windows import Window, axis_starts, window_counts, window_grid, window_weights


def mmseg_grid(
    h_img: int, w_img: int, crop: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[int, ...]]:
    """mmseg EncoderDecoder.slide_inference's loop, verbatim."""
    h_crop, w_crop = crop
    h_stride, w_stride = stride
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    out = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1 = h_idx * h_stride
            x1 = w_idx * w_stride
            y2 = min(y1 + h_crop, h_img)
            x2 = min(x1 + w_crop, w_img)
            y1 = max(y2 - h_crop, 0)
            x1 = max(x2 - w_crop, 0)
            out.append((y1, y2, x1, x2))
    return out


def test_axis_grid_examples():
    assert axis_starts(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]
    # 11 is not reached by the stride: the last window is shifted back to end at the border
    assert axis_starts(11, 4, 3) == [(0, 4), (3, 7), (6, 10), (7, 11)]
    # crop larger than the image: one window over the whole axis (the engine pads it)
    assert axis_starts(5, 8, 4) == [(0, 5)]
    assert axis_starts(8, 8, 4) == [(0, 8)]


def test_grid_is_row_major_windows():
    grid = window_grid(11, 5, crop=(4, 8), stride=(3, 4))
    assert grid == [Window(0, 4, 0, 5), Window(3, 7, 0, 5), Window(6, 10, 0, 5), Window(7, 11, 0, 5)]
    assert grid[0].height == 4 and grid[0].width == 5


@given(
    h=st.integers(1, 80),
    w=st.integers(1, 80),
    ch=st.integers(1, 40),
    cw=st.integers(1, 40),
    sh=st.integers(1, 40),
    sw=st.integers(1, 40),
)
def test_grid_matches_mmseg_and_covers_the_image(h, w, ch, cw, sh, sw):
    sh, sw = min(sh, ch), min(sw, cw)  # a stride beyond the crop leaves gaps (rejected, see below)
    grid = window_grid(h, w, (ch, cw), (sh, sw))
    assert [tuple(g) for g in grid] == mmseg_grid(h, w, (ch, cw), (sh, sw))
    covered = torch.zeros(h, w, dtype=torch.int32)
    for win in grid:
        assert 0 <= win.y0 < win.y1 <= h and 0 <= win.x0 < win.x1 <= w
        assert win.height == min(ch, h) and win.width == min(cw, w)
        covered[win.y0 : win.y1, win.x0 : win.x1] += 1
    assert int(covered.min()) >= 1
    # the engine divides by the count map it computes per axis instead of accumulating it
    assert torch.equal(window_counts(h, w, (ch, cw), (sh, sw)), covered.float())


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError):
        axis_starts(0, 4, 2)
    with pytest.raises(ValueError):
        axis_starts(4, 4, 0)
    with pytest.raises(ValueError, match="gaps"):
        window_grid(20, 20, crop=(4, 4), stride=(5, 4))


def test_uniform_weights_are_plain_counts():
    assert window_weights((8, 8), "uniform") is None
    # axis 10, crop 4, stride 3 covers [0,4) [3,7) [6,10): counts 1 1 1 2 1 1 2 1 1 1 per axis
    per_axis = torch.tensor([1, 1, 1, 2, 1, 1, 2, 1, 1, 1], dtype=torch.float32)
    assert torch.equal(window_counts(10, 10, (4, 4), (3, 3)), per_axis[:, None] * per_axis[None, :])


def test_gaussian_weights_peak_in_the_middle():
    w = window_weights((9, 13), "gaussian", sigma_scale=0.25)
    assert w.shape == (9, 13) and w.dtype == torch.float32
    assert float(w[4, 6]) == pytest.approx(1.0)
    assert torch.equal(w, w.flip(0)) and torch.equal(w, w.flip(1))
    assert float(w.min()) > 0
    # falls off from the centre along each axis
    assert bool((w[4, :6].diff() > 0).all()) and bool((w[:4, 6].diff() > 0).all())
    # σ = 0.25 × side: 10 px from the centre of a 41-px window the weight is exp(-(10 / 10.25)² / 2)
    w2 = window_weights((41, 41), "gaussian", sigma_scale=0.25)
    assert float(w2[20, 30]) == pytest.approx(math.exp(-0.5 * (10 / 10.25) ** 2), rel=1e-5)
    with pytest.raises(ValueError):
        window_weights((4, 4), "cosine")  # type: ignore[arg-type]
