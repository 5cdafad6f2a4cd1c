"""adaptseg: domain-adaptive semantic segmentation — train the published UDA methods, export the
adapted students, run them fast."""

__version__ = "0.1.0"
