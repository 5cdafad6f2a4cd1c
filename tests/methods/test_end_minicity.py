"""EnD end to end on MiniCity: three teachers trained in the recipe, the teacher pass (resumable store with
certainties), PLF fusion with an IoU assignment on the source, the class-balanced student, its export with
parity and its evaluation — in a few seconds (2 iterations per training stage, 4 tiny images)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptseg.config import load_recipe
from adaptseg.errors import UserError
from adaptseg.infer.store import PseudoLabelStore
from adaptseg.io import read_label
from adaptseg.methods import get_method
from adaptseg.methods.parts.label_fusion import fuse_plf
from adaptseg.train.config import Recipe, stage_recipe
from adaptseg.train.context import StageContext
from adaptseg.train.distributed import DistInfo
from adaptseg.train.pipeline import run_recipe, stage_complete
from tests.parity import assert_exports_with_parity_and_evaluates

RECIPE = Path(__file__).resolve().parents[2] / "train" / "end" / "minicity.yaml"
TINY = [
    "minicity.size=[64,128]",
    "minicity.images=4",
    "schedule.iters=2",
    "schedule.warmup_iters=1",
    "workers=0",
]
TEACHERS = ("source", "ddb_cu", "ddb_ca")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("end")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTSEG_MINICITY", str(root / "cache"))
        run_recipe(RECIPE, TINY, out=root / "run")
        yield root / "run", root / "cache"


def test_every_stage_finishes_with_a_store_per_teacher_and_fused_labels(run):
    run_dir, _ = run
    assert all(stage_complete(run_dir / s) for s in (*TEACHERS, "teachers", "fuse", "student"))
    stores = [PseudoLabelStore(run_dir / "teachers" / t) for t in TEACHERS]
    ids = stores[0].ids()
    assert len(ids) == 4 and all(s.ids() == ids for s in stores)
    cert = stores[0].read_certainty(ids[0])
    assert cert.dtype == np.uint8 and cert.shape == (64, 128, 19) and cert.max() <= 100
    fusion = json.loads((run_dir / "fuse" / "fusion.json").read_text())
    assert fusion["assigned_by"] == "iou" and set(fusion["assignment"].values()) <= set(TEACHERS)
    # the fused PNG is the PLF rule applied to the stores with the recorded assignment
    assignment = [TEACHERS.index(fusion["assignment"][c]) for c in fusion["assignment"]]
    labels = np.stack([s.read(ids[0]).label for s in stores])
    certainties = np.stack([s.read_certainty(ids[0]) for s in stores])
    fused = read_label(run_dir / "fuse" / "labels" / f"{ids[0]}.png")
    assert np.array_equal(
        fused, fuse_plf(labels, certainties, assignment, threshold=fusion["threshold"]).numpy()
    )
    assert (run_dir / "fuse" / "color" / f"{ids[0]}.png").is_file()
    options = json.loads((run_dir / "student" / "end.json").read_text())
    assert options["options"]["hard_pixel_filter"] is True and options["norm_params_trained"] is True


def stage_task(run_dir: Path, name: str, **options):
    """The task of stage ``name`` of the tiny recipe, its options updated with ``options``."""
    recipe = load_recipe(Recipe, RECIPE, TINY)
    stage = recipe.stage(name)
    stage = stage.model_copy(update={"options": {**stage.options, **options}})
    ctx = StageContext(
        stage=stage,
        recipe=stage_recipe(recipe, stage),
        run_dir=run_dir,
        device=torch.device("cpu"),
        dist=DistInfo(),
        stage_names=tuple(s.name for s in recipe.stages),
    )
    cls = get_method(stage.method)
    return cls(cls.Options(**stage.options), ctx)


def test_the_teacher_pass_resumes_and_refuses_another_model(run, monkeypatch):
    run_dir, cache = run
    monkeypatch.setenv("ADAPTSEG_MINICITY", str(cache))
    store = run_dir / "teachers" / "source"
    first, *rest = PseudoLabelStore(store).ids()
    kept = {p: p.stat().st_mtime_ns for i in rest for p in PseudoLabelStore(store).paths(i).values()}
    (store / "label" / f"{first}.png").unlink()  # an interrupted image
    stage_task(run_dir, "teachers").run()
    assert PseudoLabelStore(store).is_complete(first)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # complete images are not redone
    teachers = {"source": "ddb_ca", "ddb_cu": "ddb_cu", "ddb_ca": "ddb_ca"}
    with pytest.raises(UserError, match="other weights"):
        stage_task(run_dir, "teachers", teachers=teachers).run()


def test_the_student_exports_with_parity_and_evaluates(run, tmp_path):
    run_dir, cache = run
    weights = run_dir / "student" / "student.safetensors"
    assert_exports_with_parity_and_evaluates(weights, "onnx", cache / "s0-64x128-n4" / "cityscapes", tmp_path)


def test_assigning_by_iou_on_target_labels_is_refused_unless_asked(run, monkeypatch):
    run_dir, cache = run
    monkeypatch.setenv("ADAPTSEG_MINICITY", str(cache))
    target = {"dataset": {"name": "cityscapes", "root": "minicity:cityscapes", "split": "train"}}
    task = stage_task(run_dir, "fuse", assign_by_iou=target)
    teachers = json.loads((run_dir / "teachers" / "teachers.json").read_text())["teachers"]
    with pytest.raises(UserError, match="target labels"):
        task.assignment(teachers, 19)
    allowed = stage_task(
        run_dir, "fuse", assign_by_iou={**target, "allow_target_labels": True, "max_images": 1}
    )
    assignment, ious = allowed.assignment(teachers, 19)
    assert len(assignment) == 19 and ious.shape == (3, 19)
