"""UMMA end to end on MiniCity (two sources, setting p): every stage in a few seconds, the deployed
union module through export (TorchScript, ONNX) and eval, and the phase structure of stage 1 under the
quirk switch (umma.md §7 "step structure", §6.5 momentum drift)."""

import copy
import shutil
from pathlib import Path

import pytest
import torch

from adaptseg.config import load_recipe
from adaptseg.errors import UserError
from adaptseg.methods.umma.stages import PipelineImages, UmmaJoint
from adaptseg.models.loading import load_model
from adaptseg.models.union import UnionSegmentor
from adaptseg.train.config import Recipe, stage_recipe
from adaptseg.train.context import StageContext
from adaptseg.train.distributed import DistInfo
from adaptseg.train.pipeline import run_recipe, stage_complete
from adaptseg.train.trainer import Trainer
from tests.parity import assert_exports_with_parity_and_evaluates

RECIPE = Path(__file__).resolve().parents[2] / "train" / "umma" / "minicity-synscapes+gta5-p.yaml"
TINY = [
    "minicity.size=[64,128]",
    "minicity.images=4",
    "schedule.iters=2",
    "schedule.warmup_iters=1",
    "eval.every=2",
    "eval.max_images=2",
    "workers=0",
]
STAGES = ("s0_synscapes", "s0_gta5", "pl1", "joint", "pl2", "final")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("umma")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTSEG_MINICITY", str(root / "cache"))
        run_recipe(RECIPE, [*TINY, "eval.select_best=true"], out=root / "run")
        yield root / "run", root / "cache"


@pytest.fixture(scope="module")
def official_run(run):
    """The stage-0 models and round-1 pseudo-labels under ``quirks: official`` (two-branch heads)."""
    run_dir, cache = run
    out = run_dir.parent / "official"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTSEG_MINICITY", str(cache))
        for stage in ("s0_synscapes", "s0_gta5", "pl1"):
            run_recipe(RECIPE, [*TINY, "quirks=official"], out=out, stage=stage)
    return out


def test_every_stage_finishes_and_pseudo_labels_cover_the_target_split(run):
    run_dir, _ = run
    assert all(stage_complete(run_dir / s) for s in STAGES)
    for pl in ("pl1", "pl2"):
        labels = sorted((run_dir / pl / "store" / "label").rglob("*.png"))
        assert len(labels) == 4 and (run_dir / pl / "thresholds.json").is_file()
    # best-on-val is the Trainer's opt-in hook, recorded as selecting with target labels
    assert '"selected_with_target_labels": true' in (run_dir / "final" / "best_on_val.json").read_text()
    assert not load_recipe(Recipe, RECIPE).eval.select_best  # off unless asked


def test_the_deployed_model_is_one_module_of_the_final_backbone_and_all_source_heads(run):
    run_dir, _ = run
    loaded = load_model(run_dir / "final" / "student.safetensors")
    net = loaded.net
    assert isinstance(net, UnionSegmentor) and len(net.backbones) == 1 and len(net.heads) == 2
    assert [h.aspp_modules[0].conv.out_channels for h in net.heads] == [16, 16]  # |L_s| + 1 in p
    joint = load_model(run_dir / "joint" / "student.safetensors").net
    assert len(joint.backbones) == 2 and joint.combine == "union"
    source = load_model(run_dir / "s0_gta5" / "student.safetensors").net
    assert source.combine == "lift" and net(torch.zeros(1, 3, 64, 128)).shape == (1, 19, 64, 128)
    # the stage-2 heads started from the stage-1 heads and trained on: not the stage-0 ones
    assert not torch.equal(
        net.heads[1].aspp_modules[0].conv.weight, source.heads[0].aspp_modules[0].conv.weight
    )


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_the_deployed_model_exports_with_parity_and_evaluates(run, tmp_path, fmt):
    run_dir, cache = run
    weights = run_dir / "final" / "student.safetensors"
    assert_exports_with_parity_and_evaluates(weights, fmt, cache / "s0-64x128-n4" / "cityscapes", tmp_path)


def joint_trainer(run_dir: Path, quirks: str) -> tuple[Trainer, dict]:
    recipe = load_recipe(Recipe, RECIPE, [*TINY, f"quirks={quirks}"])
    stage = recipe.stage("joint")
    ctx = StageContext(
        stage=stage,
        recipe=stage_recipe(recipe, stage),
        run_dir=run_dir,
        device=torch.device("cpu"),
        dist=DistInfo(),
        stage_names=tuple(s.name for s in recipe.stages),
    )
    trainer = Trainer(ctx, UmmaJoint(UmmaJoint.Options(**stage.options), ctx))
    trainer.setup_models()
    dataset = ctx.open_dataset(ctx.stream_spec("target"))
    mean = torch.tensor(ctx.preset.mean).view(3, 1, 1)
    std = torch.tensor(ctx.preset.std).view(3, 1, 1)
    image = (torch.from_numpy(dataset.read_image(0)).permute(2, 0, 1).float() - mean) / std
    return trainer, {"target": {"image": image[None], "id": [dataset.entries[0].id]}}


def grads(module):
    return [None if p.grad is None else p.grad.clone() for p in module.parameters()]


def weights(module):
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("quirks", ["intended", "official"])
def test_phase_c_trains_heads_only_and_phase_d_backbones_only(run, official_run, quirks, monkeypatch):
    cache = run[1]
    run_dir = official_run if quirks == "official" else run[0]
    monkeypatch.setenv("ADAPTSEG_MINICITY", str(cache))
    trainer, batch = joint_trainer(run_dir, quirks)
    model = trainer.handles["student"].module
    joint, heads_only, backbones_only = trainer.method.phases(batch, 0)
    trainer.run_phase(joint)
    backbone_grads, backbone_weights = grads(model.backbones), weights(model.backbones)
    trainer.run_phase(heads_only)
    # C: the backbones' grads are as C found them (zero-filled or None), the heads moved
    after = grads(model.backbones)
    if quirks == "official":  # torch 1.11 zero_grad: zero tensors, and momentum still moves the backbones
        assert all(g is not None and not g.any() for g in after)
        assert any(
            not torch.equal(a, b) for a, b in zip(weights(model.backbones), backbone_weights, strict=True)
        )
    else:
        assert all(g is None for g in after) and all(g is not None for g in backbone_grads)
        assert all(torch.equal(a, b) for a, b in zip(weights(model.backbones), backbone_weights, strict=True))
    head_weights = weights(model.heads)
    trainer.run_phase(backbones_only)
    head_grads = grads(model.heads)
    assert all(g is None or not g.any() for g in head_grads)  # D leaves the heads' grads zero
    assert any(p.grad is not None and p.grad.any() for p in model.backbones.parameters())
    moved = any(not torch.equal(a, b) for a, b in zip(weights(model.heads), head_weights, strict=True))
    assert moved == (quirks == "official")  # the released momentum drift of frozen heads


def test_the_official_optimiser_carries_the_duplicated_parameter_multipliers(run, official_run, monkeypatch):
    monkeypatch.setenv("ADAPTSEG_MINICITY", str(run[1]))
    for quirks, expected in (("official", {2.0, 3.0, 4.0, 10.0}), ("intended", {1.0, 10.0})):
        trainer, _ = joint_trainer(official_run if quirks == "official" else run[0], quirks)
        assert {g["lr_mult"] for g in trainer.optimizer.param_groups} == expected
        assert len(trainer.handles["student"].module.heads[0].aspp_modules) == (
            2 if quirks == "official" else 4
        )


def test_a_random_target_pipeline_is_refused_in_one_line(run):
    with pytest.raises(UserError, match="must be deterministic") as err:
        PipelineImages(object.__new__(type("D", (), {"entries": []})), [{"flip": 0.5}], recipe_path=RECIPE)
    assert "\n" not in str(err.value) and str(RECIPE) in str(err.value)


@pytest.mark.parametrize("statistics", ["model", "target"])
def test_pseudo_labels_from_target_batchnorm_statistics_only_when_asked(
    run, tmp_path, monkeypatch, statistics
):
    # bn_statistics: target (an addition) re-estimates each labelling backbone's BatchNorm statistics on the
    # target images first: the stem BN's running mean becomes the mean over images of the stem conv's
    # per-image channel means; `model` (the release) labels with the stage-0 models' own statistics
    import adaptseg.infer.run as infer_run

    run_dir, cache = run
    monkeypatch.setenv("ADAPTSEG_MINICITY", str(cache))
    out = tmp_path / "run"
    for stage in ("s0_synscapes", "s0_gta5"):
        shutil.copytree(run_dir / stage, out / stage)
    labelled = []
    real = infer_run.pseudo_label_split

    def spy(backend, images, store, config):
        labelled.append((copy.deepcopy(backend.module), images))
        return real(backend, images, store, config)

    monkeypatch.setattr(infer_run, "pseudo_label_split", spy)
    run_recipe(RECIPE, [*TINY, f"stages.2.options.bn_statistics={statistics}"], out=out, stage="pl1")
    ((deployed, images),) = labelled
    loaded = load_model(run_dir / "s0_synscapes" / "student.safetensors")
    source = loaded.net
    stem_conv, stem_bn = source.backbones[0].stem[0], deployed.model.backbones[0].stem[1]
    mean = torch.tensor(loaded.preset.mean).view(3, 1, 1)
    std = torch.tensor(loaded.preset.std).view(3, 1, 1)
    per_image = []
    with torch.no_grad():
        for i in range(len(images)):
            x = (torch.from_numpy(images.read_image(i)).permute(2, 0, 1).float() - mean) / std
            per_image.append(stem_conv(source.release_input(x[None])).mean(dim=(0, 2, 3)))
    by_hand = torch.stack(per_image).mean(0)
    own = source.backbones[0].stem[1].running_mean
    if statistics == "target":
        assert torch.allclose(stem_bn.running_mean, by_hand, atol=1e-4)
    else:
        assert torch.equal(stem_bn.running_mean, own) and not torch.allclose(own, by_hand, atol=1e-2)
