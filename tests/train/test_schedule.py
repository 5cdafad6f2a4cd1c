"""The lr schedule against hand-computed values (mmcv poly + linear warmup; ddb.md §4, §7.9)."""

import math

import pytest
import torch

from adaptseg.train.schedule import PolyWarmupSchedule, poly_lr, poly_warmup_lr, warmup_factor

DDB = dict(total=40000, power=1.0, min_lr=0.0, warmup_iters=1500, warmup_ratio=1e-6, warmup="linear")


def test_ddb_schedule_at_chosen_iterations():
    # t=0: regular 6e-5 × warmup factor 1 − 1·(1 − 1e-6) = 1e-6
    assert poly_warmup_lr(0, 6e-5, **DDB) == pytest.approx(6e-11, rel=1e-9)
    # t=750: 6e-5·(1 − 750/40000) = 5.8875e-5; factor 1 − 0.5·(1 − 1e-6) = 0.5000005
    assert poly_warmup_lr(750, 6e-5, **DDB) == pytest.approx(5.8875e-5 * 0.5000005, rel=1e-12)
    # t=1499: last warmup iteration; factor 1 − (1/1500)(1 − 1e-6)
    expected = 6e-5 * (1 - 1499 / 40000) * (1 - (1 / 1500) * (1 - 1e-6))
    assert poly_warmup_lr(1499, 6e-5, **DDB) == pytest.approx(expected, rel=1e-12)
    # t=1500: warmup over, the regular lr: 6e-5 · 0.9625
    assert poly_warmup_lr(1500, 6e-5, **DDB) == pytest.approx(5.775e-5, rel=1e-12)
    # t=39999 (the last iteration): 6e-5 · 2.5e-5
    assert poly_warmup_lr(39999, 6e-5, **DDB) == pytest.approx(1.5e-9, rel=1e-9)


def test_warmup_multiplies_the_regular_lr_not_the_base():
    factor = warmup_factor(300, 1500, 1e-6)
    assert factor == pytest.approx(1 - 0.8 * (1 - 1e-6))
    assert poly_warmup_lr(300, 1.0, **DDB) == pytest.approx((1 - 300 / 40000) * factor)
    assert warmup_factor(10, 100, 0.1, "constant") == 0.1
    assert warmup_factor(50, 100, 0.01, "exp") == pytest.approx(0.1)
    assert warmup_factor(5, 100, 0.1, None) == 1.0


def test_poly_power_and_min_lr():
    # UMMA: 2.5e-4·(1 − 40000/80000)^0.9
    assert poly_lr(40000, 2.5e-4, 80000, power=0.9) == pytest.approx(2.5e-4 * 0.5**0.9)
    # DecoupleNet phase 1 stops at 60000 of a 93750 horizon: ≈ 9.97e-5 (decouplenet.md §6.9)
    assert poly_lr(60000, 2.5e-4, 93750, power=0.9) == pytest.approx(9.97e-5, rel=1e-3)
    # min_lr: (1e-2 − 1e-4)·0.5 + 1e-4
    assert poly_lr(50, 1e-2, 100, min_lr=1e-4) == pytest.approx(0.00505)
    assert poly_lr(100, 1e-2, 100, min_lr=1e-4) == pytest.approx(1e-4)


def test_schedule_applies_per_group_initial_lr():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.AdamW([{"params": [params[0]], "lr": 6e-5}, {"params": [params[1]], "lr": 6e-4}])
    schedule = PolyWarmupSchedule(40000, warmup="linear", warmup_iters=1500, warmup_ratio=1e-6)
    assert schedule.apply(opt, 1500) == pytest.approx([5.775e-5, 5.775e-4])
    # applying again at another iteration starts from the initial lr, not the current one
    assert schedule.apply(opt, 20000) == pytest.approx([3e-5, 3e-4])
    assert math.isclose(opt.param_groups[1]["lr"], 3e-4)
