"""adaptseg.data: dataset readers in the official layouts, label maps, transforms, MiniCity.

Importing this package stays light (NumPy and OpenCV only); ``check`` (Rich) loads on use.
"""

from adaptseg.data.datasets import DATASETS, Entry, Sample, SegDataset, build_dataset

__all__ = ["DATASETS", "Entry", "Sample", "SegDataset", "build_dataset"]
