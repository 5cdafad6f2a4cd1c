"""Class-wise median thresholds from a bounded histogram (adaptseg/methods/parts/thresholds.py; umma.md §3.1, §7)."""

import numpy as np
import pytest
import torch

from adaptseg.methods.parts.thresholds import ClassConfidenceHistogram, apply_class_thresholds


def thresholds_of(confs, bins=101, cap=0.9):
    histogram = ClassConfidenceHistogram(2, bins=bins)
    histogram.update(np.zeros(len(confs), dtype=np.uint8), np.array(confs))
    return histogram, histogram.thresholds(0.5, cap)[0]


def test_the_median_is_taken_at_round_half_n_and_equality_is_kept():
    histogram, t = thresholds_of([0.2, 0.5, 0.7, 0.95])  # index round(2.0) = 2 → 0.7
    assert t == pytest.approx(0.7)
    levels = torch.tensor(histogram.threshold_levels(0.5, 0.9))
    label = torch.zeros(3, dtype=torch.long)
    kept = apply_class_thresholds(label, torch.tensor([69, 70, 71]), levels)  # conf levels 0.69, 0.70, 0.71
    assert kept.tolist() == [255, 0, 0]


def test_the_median_is_capped_at_0_9_and_python_round_is_half_to_even():
    histogram, t = thresholds_of([0.95, 0.96, 0.97])  # index round(1.5) = 2 → 0.97
    assert histogram.thresholds(0.5)[0] == pytest.approx(0.97) and t == pytest.approx(0.9)
    assert thresholds_of([0.1, 0.3, 0.5, 0.6, 0.8])[1] == pytest.approx(0.5)  # round(2.5) = 2 (not 3)
    # the cap in levels keeps exactly the confidences ≥ 0.9
    assert histogram.threshold_levels(0.5, 0.9)[0] == 90


def test_a_class_nobody_predicts_has_threshold_0_and_ignored_pixels_are_not_counted():
    histogram = ClassConfidenceHistogram(3, bins=256)
    histogram.update(
        np.array([[0, 255], [0, 2]], dtype=np.uint8), np.array([[10, 250], [20, 30]], dtype=np.uint8)
    )
    assert histogram.counts.sum() == 3 and histogram.threshold_levels().tolist() == [20, 0, 30]


def test_the_histogram_matches_sorting_every_pixel():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(6, 32, 32)).astype(np.uint8)
    labels[0, :4] = 255
    confs = rng.integers(0, 256, size=labels.shape).astype(np.uint8)
    histogram = ClassConfidenceHistogram(6)
    for label, conf in zip(labels, confs, strict=True):  # image by image, as the store is read
        histogram.update(label, conf)
    got = histogram.threshold_levels(0.5, 0.9)
    for c in range(6):
        values = np.sort(confs[labels == c])
        expected = 0 if values.size == 0 else min(int(values[round(0.5 * values.size)]), 230)
        assert got[c] == expected
    assert histogram.counts.nbytes == 6 * 256 * 8  # bounded: independent of the number of pixels


def test_float_confidences_are_rounded_to_the_nearest_level():
    histogram = ClassConfidenceHistogram(1, bins=256)
    with pytest.raises(ValueError, match="levels"):
        histogram.update(np.zeros(1, dtype=np.uint8), np.array([300]))
    histogram.update(np.zeros(2, dtype=np.uint8), np.array([0.5, 1.0]))
    assert histogram.counts[0, 128] == 1 and histogram.counts[0, 255] == 1
