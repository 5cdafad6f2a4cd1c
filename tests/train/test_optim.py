"""Parameter groups with mmcv custom_keys semantics (atp.md §4, ddb.md §4)."""

import pytest
import torch
from torch import nn

from adaptseg.train.config import OptimSection
from adaptseg.train.optim import build_optimizer, param_groups, rule_for


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.ModuleDict(
            {"conv": nn.Conv2d(3, 4, 3), "norm1": nn.LayerNorm(4), "pos_block": nn.Linear(4, 4)}
        )
        self.decode_head = nn.ModuleDict({"conv": nn.Conv2d(4, 2, 1), "norm": nn.BatchNorm2d(2)})
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


ATP = OptimSection(
    type="adamw",
    lr=6e-5,
    weight_decay=0.01,
    custom_keys={"head": {"lr_mult": 10.0}, "norm": {"decay_mult": 0.0}, "pos_block": {"decay_mult": 0.0}},
)


def _by_name(optimizer):
    return {name: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for name in g["names"]}


def test_atp_groups_head_lr_x10_and_no_decay_on_norms_and_pos_block():
    got = _by_name(build_optimizer(Net(), ATP))
    assert got["backbone.conv.weight"] == pytest.approx((6e-5, 0.01))
    assert got["backbone.conv.bias"] == pytest.approx((6e-5, 0.01))
    assert got["backbone.norm1.weight"] == pytest.approx((6e-5, 0.0))
    assert got["backbone.pos_block.weight"] == pytest.approx((6e-5, 0.0))
    assert got["decode_head.conv.weight"] == pytest.approx((6e-4, 0.01))
    # mmcv: only the first matching key applies; 'head' and 'norm' tie on length, 'head' sorts first
    assert got["decode_head.norm.weight"] == pytest.approx((6e-4, 0.01))
    assert not any(name.startswith("frozen") for name in got)


def test_key_order_is_longest_first():
    keys = {"head": {"lr_mult": 10.0}, "decode_head": {"lr_mult": 2.0}}
    cfg = OptimSection(type="sgd", lr=1.0, custom_keys=keys)
    assert rule_for("decode_head.conv.weight", cfg.custom_keys).lr_mult == 2.0
    assert rule_for("auxiliary_head.conv.weight", cfg.custom_keys).lr_mult == 10.0
    assert rule_for("backbone.conv.weight", cfg.custom_keys).lr_mult == 1.0


def test_ddb_decays_everything_and_sgd_settings():
    cfg = OptimSection(
        type="sgd", lr=2.5e-4, momentum=0.9, weight_decay=5e-4, custom_keys={"head": {"lr_mult": 10}}
    )
    opt = build_optimizer(Net(), cfg)
    assert isinstance(opt, torch.optim.SGD)
    got = _by_name(opt)
    assert got["backbone.norm1.bias"] == pytest.approx((2.5e-4, 5e-4))
    assert got["decode_head.norm.bias"] == pytest.approx((2.5e-3, 5e-4))
    assert {g["momentum"] for g in opt.param_groups} == {0.9}
    assert [g["initial_lr"] for g in opt.param_groups] == pytest.approx([2.5e-4, 2.5e-3])


def test_groups_are_merged_and_every_trainable_param_is_in_exactly_one():
    net = Net()
    groups = param_groups(net.named_parameters(), ATP)
    assert [(g["lr_mult"], g["decay_mult"]) for g in groups] == [(1.0, 1.0), (1.0, 0.0), (10.0, 1.0)]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in net.parameters())


def test_adam_is_torch_adam_with_l2_decay_and_its_own_betas():
    """DecoupleNet's discriminators (decouplenet.md §4): Adam lr 1e-4, betas (0.9, 0.99), not AdamW."""
    optimizer = build_optimizer(
        Net(), OptimSection(type="adam", lr=1e-4, betas=(0.9, 0.99), weight_decay=1e-3)
    )
    assert type(optimizer) is torch.optim.Adam
    assert optimizer.defaults["betas"] == (0.9, 0.99) and optimizer.param_groups[0]["weight_decay"] == 1e-3
    param = next(p for g in optimizer.param_groups for p in g["params"])
    param.grad = torch.zeros_like(param)
    before = param.detach().clone()
    optimizer.step()  # L2 decay enters the gradient: a zero gradient still moves the weights by Adam's step
    assert not torch.equal(param, before)
