"""The evaluation hook: a model over a labelled split through the engine, and mIoU logged during training."""

import numpy as np
import pytest
import torch
from torch import nn

from adaptseg.data.pipeline import open_dataset
from adaptseg.train.evaluation import evaluate_segmentor
from adaptseg.train.logger import read_scalars
from adaptseg.train.pipeline import run_recipe
from tests.train.tiny import make_split, tiny_recipe


class AlwaysRoad(nn.Module):
    """Logits at output stride 8 that always pick class 0 (road); remembers the mode it ran in."""

    num_classes = 19

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        self.ran_training = self.training
        logits = torch.zeros(x.shape[0], 19, x.shape[2] // 8, x.shape[3] // 8, device=x.device)
        logits[:, 0] = 1.0
        return logits


@pytest.fixture(scope="module")
def val(tmp_path_factory):
    return make_split(tmp_path_factory.mktemp("data"), n=3, split="val", seed=5)


def test_constant_model_scores_the_hand_computed_miou(val):
    dataset = open_dataset("cityscapes", str(val), "val")
    labels = [dataset[i].label for i in range(len(dataset))]
    valid = np.concatenate([lab[lab != 255] for lab in labels])
    present = set(np.unique(valid).tolist()) | {0}
    expected = 100 * np.mean(valid == 0) / len(present)  # road IoU = road share; every other class 0
    model = AlwaysRoad().train()
    report = evaluate_segmentor(model, dataset, mean=(0, 0, 0), std=(1, 1, 1), protocol=19)
    assert report.n_images == 3
    assert report.miou == pytest.approx(expected, rel=1e-9)
    assert model.ran_training is False and model.training is True  # evaluated in eval mode, restored after
    assert evaluate_segmentor(model, dataset, mean=(0, 0, 0), std=(1, 1, 1), max_images=1).n_images == 1


def test_training_logs_eval_miou_every_n_iterations(tmp_path, val):
    data = make_split(tmp_path / "train", n=4)
    recipe = tiny_recipe(
        tmp_path / "r.yaml",
        data,
        iters=4,
        eval={"every": 2, "dataset": {"name": "cityscapes", "root": str(val), "split": "val"}},
    )
    run_recipe(recipe, out=tmp_path / "run")
    scalars = read_scalars(tmp_path / "run" / "source" / "scalars.csv")
    assert [i for i, _ in scalars["eval/mIoU19"]] == [2, 4]
    assert all(0.0 <= v <= 100.0 for _, v in scalars["eval/mIoU19"])
