"""Small real inputs for the training tests: a learnable Cityscapes-layout split and tiny recipes.

Scenes are horizontal bands (sky, building, vegetation, road) with a car box; each class has its own
colour plus noise, so a tiny model learns them in a few dozen iterations. Labels are written as official
``*_gtFine_labelIds.png`` so the real Cityscapes reader reads them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from adaptseg.io import write_png

#: a ResNet-18-v1c DeepLab-v2 at 1/16 width (47k parameters) for tests of the training machinery
MICRO_PRESET = Path(__file__).with_name("micro-deeplabv2.yaml")

# labelId: (trainId, RGB)
CLASSES = {
    23: (10, (70, 130, 180)),
    11: (2, (90, 90, 90)),
    21: (8, (60, 140, 40)),
    7: (0, (128, 64, 128)),
    26: (13, (10, 10, 150)),
}


def make_split(
    root: Path, n: int = 8, size: tuple[int, int] = (32, 48), split: str = "train", seed: int = 0
) -> Path:
    """Write ``leftImg8bit/<split>`` and ``gtFine/<split>`` with ``n`` band scenes; returns ``root``."""
    rng = np.random.default_rng(seed)
    h, w = size
    for i in range(n):
        label = np.empty((h, w), np.uint8)
        cuts = np.sort(rng.integers(h // 6, h - h // 6, 3))
        label[: cuts[0]] = 23
        label[cuts[0] : cuts[1]] = 11
        label[cuts[1] : cuts[2]] = 21
        label[cuts[2] :] = 7
        x0 = int(rng.integers(0, w // 2))
        label[max(cuts[2] - 3, 0) : min(cuts[2] + 4, h), x0 : x0 + w // 4] = 26
        image = np.zeros((h, w, 3), np.float32)
        for label_id, (_, colour) in CLASSES.items():
            image[label == label_id] = colour
        image += rng.normal(0, 12, image.shape)
        city = ("aachen", "bremen")[i % 2]
        stem = f"{city}_{i:06d}_000019"
        write_png(
            root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
            np.clip(image, 0, 255).astype(np.uint8),
        )
        write_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label)
    return root


def tiny_recipe(path: Path, data_root: Path, *, iters: int = 6, extra: dict | None = None, **top) -> Path:
    """A source-only recipe on the tiny split with the micro DeepLab-v2 preset (CPU, no workers)."""
    recipe = {
        "model": {"preset": str(MICRO_PRESET)},
        "data": {
            "source": {
                "name": "cityscapes",
                "root": str(data_root),
                "split": "train",
                "batch_size": 2,
                "pipeline": [{"random_crop": {"size": [32, 32]}}, {"flip": 0.5}],
            }
        },
        "optim": {
            "type": "sgd",
            "lr": 0.01,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "custom_keys": {"head": {"lr_mult": 10.0}},
        },
        "schedule": {"iters": iters, "power": 0.9},
        "stages": [{"name": "source", "method": "source_only"}],
        "device": "cpu",
        "workers": 0,
        "log_every": 2,
        "checkpoint_every": 3,
        **top,
    }
    if extra:
        from adaptseg.config import deep_merge

        recipe = deep_merge(recipe, extra)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------- in-process helpers


def recipe_dict(data_root: Path, **top) -> dict:
    """The dict :func:`tiny_recipe` writes (for building a :class:`Recipe` in memory)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_recipe(Path(tmp) / "r.yaml", data_root, **top)
        return yaml.safe_load(path.read_text())


def make_context(run_dir: Path, data_root: Path, **top):
    """A single-process CPU :class:`StageContext` for the first stage of a tiny recipe."""
    import torch

    from adaptseg.config import validate
    from adaptseg.train.config import Recipe, stage_recipe
    from adaptseg.train.context import StageContext
    from adaptseg.train.distributed import DistInfo

    recipe = validate(Recipe, recipe_dict(data_root, **top))
    stage = recipe.stages[0]
    return StageContext(
        stage=stage,
        recipe=stage_recipe(recipe, stage),
        run_dir=run_dir,
        device=torch.device("cpu"),
        dist=DistInfo(),
        stage_names=tuple(s.name for s in recipe.stages),
    )


def band_net(num_classes: int = 19):
    """A 2-layer conv segmentor without BatchNorm (so DDP over 2×B equals one process over 2B)."""
    import torch
    from torch import nn

    class _BandNet(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.backbone = nn.Conv2d(3, 8, 3, padding=1)
            self.decode_head = nn.Conv2d(8, num_classes, 1)
            self.num_classes = num_classes

        def forward_features(self, x):
            feature = torch.relu(self.backbone(x))
            return {"logits": self.decode_head(feature), "feature": feature}

        def forward(self, x):
            return self.forward_features(x)["logits"]

    return _BandNet()


def _register_test_methods():
    from adaptseg.methods.base import METHODS, Method, ModelSpec, Task, register_method
    from adaptseg.methods.parts.losses import cross_entropy

    if "test_two_view" in METHODS:
        return METHODS["test_two_view"]

    @register_method("test_two_view")
    class TwoView(Method):
        """CE on the batch and on its mirror image: two forwards, one backward (as DDB's L_src + L_mix)."""

        def build_models(self):
            return {"student": ModelSpec(band_net(), "train", export="student")}

        def step(self, batch, it):
            x, y = batch["source"]["image"], batch["source"]["label"]
            student = self.models["student"]
            return {
                "ce": cross_entropy(student(x), y, normalize="all_pixels"),
                "ce_flip": cross_entropy(
                    student.features(x.flip(-1))["logits"], y.flip(-1), normalize="all_pixels"
                ),
            }

    @register_method("test_count_weights")
    class CountWeights(Task):
        """A non-training stage: reads an earlier stage's weights, writes a JSON file."""

        def run(self):
            import json

            from safetensors.torch import load_file

            state = load_file(self.ctx.resolve(self.ctx.stage.init_from["student"].path))
            out = self.ctx.out_dir / "count.json"
            out.write_text(json.dumps({"tensors": len(state), "run_by_rank": self.ctx.dist.rank}))
            return ["count.json"]

    return TwoView


TwoView = _register_test_methods()
