"""The EMA teacher (adaptseg.methods.parts.ema): α schedule, copy at t=0, parameters-only updates."""

import pytest
import torch
from torch import nn

from adaptseg.methods.parts.ema import EMATeacher, ema_alpha


def test_alpha_schedule():
    assert ema_alpha(0, 0.99) == 0.0
    assert ema_alpha(1, 0.99) == 0.5
    assert ema_alpha(2, 0.99) == pytest.approx(2 / 3)
    assert ema_alpha(98, 0.99) == pytest.approx(1 - 1 / 99)  # still below the cap
    assert ema_alpha(99, 0.99) == 0.99  # DDB: capped from t=99
    assert ema_alpha(998, 0.999) == pytest.approx(1 - 1 / 999)
    assert ema_alpha(999, 0.999) == 0.999  # ATP: capped from t=999
    assert ema_alpha(10**6, 0.999) == 0.999


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))


def _fill(model, value):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_copy_at_t0_then_average():
    student = _net()
    teacher = EMATeacher(student, alpha_max=0.99)
    assert all(not p.requires_grad for p in teacher.parameters())
    _fill(student, 1.0)
    teacher.update(student, 0)
    assert all(torch.equal(p, torch.ones_like(p)) for p in teacher.model.parameters())
    _fill(teacher.model, 0.0)
    teacher.update(student, 1)  # α = 0.5
    assert all(torch.allclose(p, torch.full_like(p, 0.5)) for p in teacher.model.parameters())
    teacher.update(student, 2)  # α = 2/3: 0.5·2/3 + 1/3
    assert all(torch.allclose(p, torch.full_like(p, 2 / 3)) for p in teacher.model.parameters())
    _fill(teacher.model, 0.0)
    teacher.update(student, 500)  # capped: 0.99·0 + 0.01·1
    assert all(torch.allclose(p, torch.full_like(p, 0.01)) for p in teacher.model.parameters())


def test_parameters_only_leaves_buffers_untouched():
    student = _net()
    teacher = EMATeacher(student)
    student.train()(torch.randn(2, 3, 5, 5) * 3 + 1)  # student BN running stats move
    before = {
        k: v.clone() for k, v in teacher.model.state_dict().items() if "running" in k or "num_batches" in k
    }
    teacher.update(student, 5)
    after = teacher.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(after["1.running_mean"], student.state_dict()["1.running_mean"])


def test_buffers_mode_averages_float_buffers_and_copies_counters():
    student = _net()
    teacher = EMATeacher(student, buffers=True)
    student.train()(torch.randn(2, 3, 5, 5) * 3 + 1)
    old = teacher.model[1].running_mean.clone()
    teacher.update(student, 1)
    assert torch.allclose(teacher.model[1].running_mean, 0.5 * old + 0.5 * student[1].running_mean)
    assert teacher.model[1].num_batches_tracked.item() == student[1].num_batches_tracked.item() == 1


def test_forward_runs_the_copy():
    student = _net().eval()
    teacher = EMATeacher(student).eval()
    x = torch.randn(1, 3, 4, 4)
    assert torch.equal(teacher(x), student(x))
