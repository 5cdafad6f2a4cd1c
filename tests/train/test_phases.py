"""Multi-phase steps and several optimisers (methods/base.py ``Phase``/``OptimizerSpec``), owned by the Trainer.

A phase is one backward and one step of the optimisers it names, with model parts held fixed; the
Trainer keeps AMP, clipping, logging and the checkpoint of every optimiser (bit-exact resume).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adaptseg.config import validate
from adaptseg.errors import UserError
from adaptseg.methods.base import Method, OptimizerSpec, Phase
from adaptseg.train.checkpoint import load_checkpoint
from adaptseg.train.config import Recipe, stage_recipe
from adaptseg.train.context import StageContext
from adaptseg.train.distributed import DistInfo
from adaptseg.train.logger import read_scalars
from adaptseg.train.pipeline import run_recipe
from adaptseg.train.trainer import Trainer
from tests.train.test_resume import _env, _wait_for_checkpoint
from tests.train.tiny import make_split, recipe_dict, tiny_recipe
from tests.train.toy_phases import Adversarial, FrozenHead

REPO = Path(__file__).resolve().parents[2]
CLI = [
    sys.executable,
    "-c",
    "import tests.train.toy_phases; from adaptseg.cli.app import main; main()",
    "train",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_split(tmp_path_factory.mktemp("phases") / "data", n=6)


def trainer_for(method_cls: type[Method], data, run_dir: Path, dist=None, **top) -> Trainer:
    recipe = validate(Recipe, recipe_dict(data, **top))
    stage = recipe.stages[0]
    ctx = StageContext(
        stage=stage,
        recipe=stage_recipe(recipe, stage),
        run_dir=run_dir,
        device=torch.device("cpu"),
        dist=dist or DistInfo(),
        stage_names=(stage.name,),
    )
    trainer = Trainer(ctx, method_cls(method_cls.Options(), ctx))
    trainer.setup_models()
    return trainer


def batch(data):
    from adaptseg.data.datasets import build_dataset

    ds = build_dataset("cityscapes", data, "train")
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    images = torch.stack(
        [(torch.from_numpy(ds[i].image).permute(2, 0, 1).float() - mean) / 58.0 for i in range(2)]
    )
    labels = torch.stack([torch.from_numpy(ds[i].label.astype("int64")) for i in range(2)])
    return {"source": {"image": images, "label": labels, "id": ["0", "1"]}}


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(module: torch.nn.Module, weights: list[torch.Tensor]) -> bool:
    return all(torch.equal(p, w) for p, w in zip(module.parameters(), weights, strict=True))


def test_two_optimisers_each_step_their_own_models_in_their_phase(tmp_path, data):
    trainer = trainer_for(Adversarial, data, tmp_path)
    assert set(trainer.optimizers) == {"student", "disc"}
    assert isinstance(trainer.optimizers["disc"], torch.optim.AdamW)  # its own optim section
    assert isinstance(trainer.optimizers["student"], torch.optim.SGD)  # the recipe's
    student, disc = trainer.handles["student"].module, trainer.handles["disc"].module
    segmentor, discriminator = trainer.method.phases(batch(data), 0)
    s0, d0 = snapshot(student), snapshot(disc)
    trainer.run_phase(segmentor)  # the discriminator is frozen: no grad, and its optimiser is not stepped
    assert not same(student, s0) and same(disc, d0) and all(p.grad is None for p in disc.parameters())
    s1 = snapshot(student)
    trainer.run_phase(discriminator)  # only the discriminator's optimiser steps
    assert same(student, s1) and not same(disc, d0)
    # a whole iteration logs every phase's losses under its name; the student's lr follows the schedule,
    # the discriminator's (scheduled=False) keeps its own
    losses = trainer.run_step(5, batch(data))
    assert set(losses) == {"seg/ce", "seg/adv", "disc/d", "total"}
    assert trainer.optimizers["disc"].param_groups[0]["lr"] == pytest.approx(1e-3)
    assert trainer.optimizers["student"].param_groups[0]["lr"] < 0.01


def test_a_frozen_part_keeps_its_grad_and_its_weights(tmp_path, data):
    trainer = trainer_for(FrozenHead, data, tmp_path)
    head = trainer.handles["student"].module.decode_head
    backbone = trainer.handles["student"].module.backbone
    x = batch(data)
    phases = trainer.method.phases(x, 0)
    trainer.run_phase(phases[0])  # everything trained: momentum buffers exist for the head too
    head_weights, backbone_weights = snapshot(head), snapshot(backbone)
    trainer.run_phase(phases[1])
    assert all(p.grad is None for p in head.parameters()), "the frozen head got a gradient"
    assert same(head, head_weights) and not same(backbone, backbone_weights)
    assert all(p.requires_grad for p in head.parameters())  # unfrozen after the phase


def test_zero_grad_to_none_false_lets_momentum_move_frozen_parts(tmp_path, data):
    """umma.md §6.5: the release zeroes grads to 0 (not None), so SGD momentum/weight decay still move the
    parameters a phase froze. Off by default; a method switches it on with ``zero_grad_to_none = False``."""

    class Drifting(FrozenHead):
        zero_grad_to_none = False

    moved = {}
    for cls in (FrozenHead, Drifting):
        trainer = trainer_for(cls, data, tmp_path / cls.__name__)
        head = trainer.handles["student"].module.decode_head
        phases = trainer.method.phases(batch(data), 0)
        trainer.run_phase(phases[0])
        weights = snapshot(head)
        trainer.run_phase(phases[1])
        grads = [p.grad for p in head.parameters()]
        moved[cls] = not same(head, weights)
        if cls is Drifting:
            assert all(g is not None and not g.any() for g in grads)  # zeros, untouched by the backward
    assert moved == {FrozenHead: False, Drifting: True}


def test_optimizer_specs_must_cover_every_trained_model_once(tmp_path, data):
    class Twice(Adversarial):
        def optimizers(self, models):
            return {"a": OptimizerSpec(("student", "disc")), "b": OptimizerSpec(("disc",))}

    class Missing(Adversarial):
        def optimizers(self, models):
            return {"a": OptimizerSpec(("student",))}

    with pytest.raises(TypeError, match="'disc' is in both"):
        trainer_for(Twice, data, tmp_path / "a")
    with pytest.raises(TypeError, match=r"no optimiser steps \['disc'\]"):
        trainer_for(Missing, data, tmp_path / "b")


def test_a_single_process_method_is_refused_under_torchrun_before_building_anything(tmp_path, data):
    class Alone(Adversarial):
        single_process_only = "its phases call model parts directly"

    with pytest.raises(
        UserError, match=r"stage 'source' \(Alone\): its phases call .* fix: run it without torchrun"
    ):
        trainer_for(Alone, data, tmp_path / "a", dist=DistInfo(rank=0, world_size=2))
    assert not (tmp_path / "a").exists()
    trainer_for(Alone, data, tmp_path / "b")  # one process: fine
    from adaptseg.methods import get_method

    for name in ("umma_source", "umma_joint", "umma_final", "decouplenet_phase1", "decouplenet_phase2"):
        assert get_method(name).single_process_only  # their phases call model parts directly
    for name in ("source_only", "ddb_st", "ddb_ckd", "atp_teach", "atp_propagate", "end_student"):
        assert not get_method(name).single_process_only


def test_a_loss_name_repeated_by_unnamed_phases_is_refused(tmp_path, data):
    class Repeats(FrozenHead):
        def phases(self, batch, it):
            return [Phase(p.losses) for p in super().phases(batch, it)]

    trainer = trainer_for(Repeats, data, tmp_path)
    with pytest.raises(TypeError, match="'ce' returned by two phases"):
        trainer.run_step(0, batch(data))


def test_two_optimiser_method_resumes_bit_exactly_after_sigkill(tmp_path, data):
    iters = 12
    extra = {"stages": [{"name": "adv", "method": "test_adversarial"}]}
    recipe = tiny_recipe(
        tmp_path / "r.yaml",
        data,
        iters=iters,
        checkpoint_every=3,
        log_every=1,
        deterministic=True,
        extra=extra,
    )
    run_recipe(recipe, out=tmp_path / "full")

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*CLI, str(recipe), "--out", str(killed)],
        env=_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_checkpoint(proc, killed / "adv" / "checkpoint-last.pt")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    checkpoint = load_checkpoint(killed / "adv" / "checkpoint-last.pt")
    assert 0 < checkpoint["iteration"] < iters and set(checkpoint["optimizers"]) == {"student", "disc"}
    assert [r.status for r in run_recipe(recipe, out=killed, resume=True)] == ["resumed"]
    for name in ("student", "disc"):
        full, again = (
            load_file(tmp_path / "full" / "adv" / f"{name}.safetensors"),
            load_file(killed / "adv" / f"{name}.safetensors"),
        )
        assert full.keys() == again.keys() and all(torch.equal(full[k], again[k]) for k in full), name
    a, b = (
        read_scalars(tmp_path / "full" / "adv" / "scalars.csv"),
        read_scalars(killed / "adv" / "scalars.csv"),
    )
    assert a["loss/disc/d"] == b["loss/disc/d"] and [i for i, _ in b["loss/seg/ce"]] == list(
        range(1, iters + 1)
    )
    assert "lr/student/0" in a and "lr/disc/0" in a  # one lr column per optimiser group
