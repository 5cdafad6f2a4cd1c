"""Small real inputs for the inference tests: a random tiny conv net under the deploy contract, images
of odd sizes, and a Cityscapes-layout split on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from adaptseg.infer.backends import TorchBackend
from adaptseg.infer.config import BackendOptions
from adaptseg.io import write_png

MEAN = (120.0, 110.0, 100.0)
STD = (60.0, 55.0, 50.0)


class TinyNet(nn.Module):
    """A random segmentor: normalised input → logits at stride 2 (3×3 convs, so windows see context)."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(8, num_classes, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) * 3.0  # sharper probabilities than a random init gives


class Deploy(nn.Module):
    """The deploy contract (0–255 RGB in, crop-sized logits out), written out here for the tests."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model((x - self.mean) / self.std)
        return nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny convs run ~10× faster on one thread than on two cores shared with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_backend(num_classes: int = 5, seed: int = 0) -> TorchBackend:
    torch.manual_seed(seed)
    return TorchBackend(
        Deploy(TinyNet(num_classes)),
        num_classes=num_classes,
        device="cpu",
        options=BackendOptions(channels_last=False),
    )


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> str:
    """Fixed random weights of the tiny-deeplabv2 preset, named in the file's header (for plumbing tests)."""
    from adaptseg.models import build_model, save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "student.safetensors"
    save_weights(build_model("tiny-deeplabv2"), path, {"preset": "tiny-deeplabv2"})
    return str(path)


@pytest.fixture(scope="session")
def minicity(tmp_path_factory) -> Path:
    """A small MiniCity Cityscapes-layout tree (4 images per split, 64×128)."""
    from adaptseg.data.minicity import generate

    out = tmp_path_factory.mktemp("minicity")
    return generate(out, images=4, size=(64, 128), domains=["cityscapes"], progress=False)["cityscapes"]


@pytest.fixture
def backend() -> TorchBackend:
    return tiny_backend()


def random_image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth-ish random RGB image (blocks + noise) so predictions vary across the image."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(h // 6, 1), max(w // 6, 1), 3), dtype=np.uint8)
    import cv2

    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.int16)
    img += rng.integers(-20, 21, size=img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_cityscapes(root: Path, sizes: list[tuple[int, int]], split: str = "val", seed: int = 0) -> list[str]:
    """A Cityscapes-layout split (leftImg8bit + gtFine labelIds); returns the ids."""
    rng = np.random.default_rng(seed)
    label_ids = np.array([7, 8, 11, 21, 23, 24, 26, 0])  # road … car, and 0 (ignored)
    ids = []
    for i, (h, w) in enumerate(sizes):
        city = ("aachen", "bochum")[i % 2]
        base = f"{city}_{i:06d}_000019"
        write_png(
            root / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png", random_image(h, w, seed + i)
        )
        labels = rng.choice(label_ids, size=(h, w)).astype(np.uint8)
        write_png(root / "gtFine" / split / city / f"{base}_gtFine_labelIds.png", labels)
        ids.append(f"{city}/{base}")
    return ids
