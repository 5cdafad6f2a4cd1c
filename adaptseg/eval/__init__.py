"""adaptseg.eval: the dataset-level confusion matrix, the metrics read from it, and reports.

``ConfusionMatrix`` accumulates pixel counts over a split (rows: ground truth); ``Report`` turns one
into per-class IoU, mIoU over the 19/16/13-class protocols and pixel accuracy, printed as a table or
written as JSON. ``eval.plots`` draws the pictures, ``eval.predictions`` scores folders of PNGs.
"""

from adaptseg.eval.confusion import ConfusionMatrix
from adaptseg.eval.report import Report

__all__ = ["ConfusionMatrix", "Report"]
