"""Masked image consistency (adaptseg.methods.parts.mic): the released mask, the loss and its weight, and
the switch on DDB's self-training and ATP's T and P steps."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from adaptseg.config import validate
from adaptseg.methods.parts.augment import sample_strong_aug_switches, strong_augment
from adaptseg.methods.parts.losses import cross_entropy
from adaptseg.methods.parts.mic import (
    MaskedConsistency,
    MICOptions,
    PseudoLabelledTarget,
    block_mask,
    masked_view,
)
from adaptseg.train.config import Recipe
from tests.methods import test_atp, test_ddb


def test_defaults_are_the_released_ones():
    options = MICOptions()
    assert (options.mask_ratio, options.block_size, options.loss_weight, options.augment) == (
        0.7,
        64,
        1.0,
        True,
    )
    assert options.running_stats == "update"  # the masked pass is an ordinary train-mode forward


def test_mask_is_square_blocks_covering_the_mask_ratio_in_expectation():
    gen = torch.Generator().manual_seed(0)
    mask = block_mask(400, 64, 128, gen, mask_ratio=0.7, block_size=16)
    assert mask.shape == (400, 1, 64, 128) and set(mask.unique().tolist()) <= {0.0, 1.0}
    # every 16×16 block is constant: the mask is its 4×8 grid of cells upsampled
    cells = mask[:, :, ::16, ::16]
    assert torch.equal(mask, cells.repeat_interleave(16, -2).repeat_interleave(16, -1))
    # P(masked) = P(U ≤ 0.7) = 0.7; over 400·32 cells the standard error is 0.004
    assert 1 - cells.mean().item() == pytest.approx(0.7, abs=0.015)
    # the grid rounds like the release (round(40/16) = 2 rows, round(24/16) = 2 columns)
    odd = block_mask(1, 40, 24, torch.Generator().manual_seed(1), block_size=16)
    assert odd.shape == (1, 1, 40, 24)


def test_masked_view_zeroes_masked_pixels_after_the_strong_augmentation():
    images = torch.randn(3, 3, 32, 32)
    options = MICOptions(block_size=8)
    out = masked_view(images, torch.Generator().manual_seed(5), options)
    # the same draws by hand, in the release's order: aug switches, jitter/σ, then the mask cells
    gen = torch.Generator().manual_seed(5)
    augmented = strong_augment(images, gen, sample_strong_aug_switches(gen))
    mask = block_mask(3, 32, 32, gen, block_size=8)
    assert torch.allclose(out, augmented * mask)
    plain = masked_view(images, torch.Generator().manual_seed(5), MICOptions(block_size=8, augment=False))
    kept = block_mask(3, 32, 32, torch.Generator().manual_seed(5), block_size=8).bool().expand_as(images)
    assert torch.equal(plain[kept], images[kept]) and (plain[~kept] == 0).all()


def test_loss_is_weighted_ce_on_the_masked_image_and_zero_where_the_quality_weight_is():
    torch.manual_seed(0)
    student = torch.nn.Conv2d(3, 4, 1)
    images, labels = torch.randn(2, 3, 16, 16), torch.randint(0, 4, (2, 16, 16))
    mic = MaskedConsistency(MICOptions(block_size=4, loss_weight=0.5), mean=(0, 0, 0), std=(1, 1, 1))

    weight = torch.zeros(2, 16, 16)
    weight[0, :4] = 1.0  # only the top rows of image 0 count
    loss = mic.loss(student, PseudoLabelledTarget(images, labels, weight), torch.Generator().manual_seed(3))
    masked = masked_view(
        images, torch.Generator().manual_seed(3), MICOptions(block_size=4), mean=(0, 0, 0), std=(1, 1, 1)
    )
    per_pixel = torch.nn.functional.cross_entropy(student(masked), labels, reduction="none")
    assert loss.item() == pytest.approx(0.5 * (per_pixel[0, :4].sum() / per_pixel.numel()).item(), rel=1e-5)

    zero = mic.loss(student, PseudoLabelledTarget(images, labels, 0.0), torch.Generator().manual_seed(3))
    assert zero.item() == 0.0
    zero.backward()
    assert all(p.grad is None or not p.grad.any() for p in student.parameters())
    q = mic.loss(student, PseudoLabelledTarget(images, labels, 0.25), torch.Generator().manual_seed(3))
    expected = cross_entropy(student(masked), labels, normalize="all_pixels", pixel_weight=0.25)
    assert q.item() == pytest.approx(0.5 * expected.item(), rel=1e-6)


# ------------------------------------------------------------------------------ the switch on methods
def test_ddb_st_adds_the_mic_term_on_the_clean_target_with_q(tmp_path, monkeypatch):
    data = (
        test_ddb.make_split(tmp_path / "s", n=3, size=(32, 48)),
        test_ddb.make_split(tmp_path / "t", n=3, size=(32, 48), seed=1),
    )
    recipe = test_ddb.tiny_recipe_dict(data)
    st = next(s for s in recipe["stages"] if s["name"] == "r1_st_cu")
    st["options"]["mic"] = {"block_size": 8}
    method, _ = test_ddb.make_method(validate(Recipe, recipe), "r1_st_cu", tmp_path / "run")
    batch = test_ddb.batch_of(data)
    seen = {}

    def spy(student, target, generator):
        seen["target"] = target
        return torch.tensor(7.0)

    monkeypatch.setattr(method.mic, "loss", spy)
    losses = method.step(batch, 0)
    assert set(losses) == {"src", "mix", "mic"} and losses["mic"].item() == 7.0
    target = seen["target"]
    assert torch.equal(target.images, batch["target"]["image"])  # the un-mixed, un-augmented target crop
    confidence, labels = method.teacher_labels(batch["target"]["image"])
    assert torch.equal(target.labels, labels)
    assert float(target.weight) == pytest.approx((confidence >= 0.968).float().mean().item())

    off, _ = test_ddb.make_method(test_ddb.tiny_recipe(data), "r1_st_cu", tmp_path / "run2")
    assert off.mic is None and set(off.step(batch, 0)) == {"src", "mix"}


def test_methods_without_the_switch_reject_it(tmp_path):
    from adaptseg.methods.ddb import DDBDistillOptions
    from adaptseg.methods.source_only import SourceOnly

    with pytest.raises(ValidationError, match="mic"):
        DDBDistillOptions(prototypes={"cu": "x"}, mic={})
    with pytest.raises(ValidationError):
        SourceOnly.Options(mic={})


def test_atp_teach_and_propagate_add_mic_on_their_teacher_labelled_target(tmp_path, monkeypatch):
    roots = {
        "source": test_atp.make_split(tmp_path / "s", n=2, size=(64, 64), seed=1),
        "target": test_atp.make_split(tmp_path / "t", n=4, size=(64, 64), seed=2),
    }
    stages = [
        {"name": "teach", "method": "atp_teach", "options": {"mic": {"block_size": 16}}},
        {
            "name": "propagate",
            "method": "atp_propagate",
            "options": {"proto_start": 0, "mic": {}},
            "overrides": {"data": {"easy": {"like": "target"}, "hard": {"like": "target"}}},
        },
    ]
    recipe = test_atp.recipe_dict(roots, stages)
    images = torch.randn(2, 3, 64, 64)
    for name, batch in (
        ("teach", {"target": {"image": images}}),
        ("propagate", {"easy": {"image": images.flip(-1)}, "hard": {"image": images}}),
    ):
        ctx = test_atp.stage_context(tmp_path / "run", recipe, name)
        from adaptseg.methods.base import get_method

        method = test_atp.placed(
            get_method(ctx.stage.method)(get_method(ctx.stage.method).Options(**ctx.stage.options), ctx)
        )
        seen = {}
        monkeypatch.setattr(
            method.mic,
            "loss",
            lambda student, target, gen, seen=seen: seen.setdefault("t", target) and torch.tensor(1.0),
        )
        losses = method.step(batch, 0)
        assert "mic" in losses
        target = seen["t"]
        assert torch.equal(target.images, images)  # the weak (clean) target crop the teacher labelled
        confidence, labels = method.teacher_labels(images)
        assert torch.equal(target.labels, labels)
        if name == "teach":  # T's CE is unweighted; MIC takes the DACS quality weight as its host would
            assert float(target.weight) == pytest.approx((confidence >= 0.968).float().mean().item())
        else:  # P: the hard crop's weight map, plcrop rows at 0
            top, bottom = method.plcrop(64)
            assert (target.weight[:, :top] == 0).all() and (target.weight[:, 64 - bottom :] == 0).all()


def test_kept_running_statistics_normalises_with_the_batch_and_leaves_the_running_ones():
    from adaptseg.methods.parts.modes import kept_running_statistics

    torch.manual_seed(0)
    bn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4, momentum=0.1)).train()
    x = torch.randn(2, 3, 5, 5) * 3 + 1
    mean, var = bn[1].running_mean.clone(), bn[1].running_var.clone()
    reference = torch.nn.functional.batch_norm(bn[0](x), None, None, bn[1].weight, bn[1].bias, training=True)
    with kept_running_statistics(bn):
        out = bn(x)
    assert torch.allclose(out, reference, atol=1e-6)  # batch statistics, as in train mode
    assert torch.equal(bn[1].running_mean, mean) and torch.equal(bn[1].running_var, var)
    assert bn[1].momentum == 0.1  # restored
    bn(x)  # outside the block the running statistics move again
    batch_mean = bn[0](x).mean(dim=(0, 2, 3))
    assert torch.allclose(bn[1].running_mean, 0.9 * mean + 0.1 * batch_mean, atol=1e-6)


@pytest.mark.parametrize("running_stats", ["update", "keep"])
def test_mic_pass_moves_the_running_statistics_only_as_released(tmp_path, running_stats):
    """Two T steps from the same state on the same batch, with MIC and without: with ``keep`` the student's
    BatchNorm running statistics end identical (only the clean passes move them); ``update`` (the release)
    also averages the masked images in."""
    from adaptseg.methods.base import get_method

    roots = {
        "source": test_atp.make_split(tmp_path / "s", n=2, size=(64, 64), seed=1),
        "target": test_atp.make_split(tmp_path / "t", n=4, size=(64, 64), seed=2),
    }
    images = torch.randn(2, 3, 64, 64)
    stats = {}
    for mic in (None, {"block_size": 16, "running_stats": running_stats}):
        options = {} if mic is None else {"mic": mic}
        recipe = test_atp.recipe_dict(roots, [{"name": "teach", "method": "atp_teach", "options": options}])
        ctx = test_atp.stage_context(tmp_path / f"run-{mic is None}", recipe, "teach")
        method = test_atp.placed(get_method("atp_teach")(get_method("atp_teach").Options(**options), ctx))
        assert (method.mic is None) == (mic is None)
        method.step({"target": {"image": images}}, 0)
        student = method.student.module
        stats[mic is None] = [
            b.clone() for n, b in student.named_buffers() if n.endswith(("running_mean", "running_var"))
        ]
    assert stats[True]  # the tiny DAFormer's decode head has BatchNorm
    same = all(torch.equal(a, b) for a, b in zip(stats[True], stats[False], strict=True))
    assert same == (running_stats == "keep")
