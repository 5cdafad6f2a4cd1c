"""MiniCity: procedural street scenes written as small GTA5, SYNTHIA, Synscapes, Cityscapes, ACDC and
Dark Zurich datasets in their official layouts (DESIGN.md, "MiniCity — the embedded default data").

``scene`` lays out a street (the same distribution in every domain, SYNTHIA-like from higher up),
``render`` gives it a domain's look (``styles``), ``layouts`` writes each dataset's files and
``generator`` puts it together::

    from adaptseg.data.minicity import generate
    roots = generate("data/minicity", seed=0)   # {"gta5": Path("data/minicity/gta5"), ...}
"""

from adaptseg.data.minicity.generator import DOMAINS, PHOTO_STRENGTH, SPECS, generate, make_sample

__all__ = ["DOMAINS", "PHOTO_STRENGTH", "SPECS", "generate", "make_sample"]
