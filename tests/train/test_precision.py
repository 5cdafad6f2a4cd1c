"""Precision and speed switches on CPU: bf16 autocast, channels-last, fp16 refusal, torch.compile (slow)."""

import copy

import pytest
import torch

from adaptseg.config import validate
from adaptseg.errors import UserError
from adaptseg.methods.source_only import SourceOnly, SourceOnlyOptions
from adaptseg.train.config import Recipe
from adaptseg.train.precision import resolve_switches, to_channels_last
from adaptseg.train.trainer import Trainer
from tests.train.tiny import make_context, make_split, recipe_dict


class Probe(SourceOnly):
    """source_only that records what the Trainer hands it."""

    def step(self, batch, it):
        x = batch["source"]["image"]
        logits = self.models["student"](x)
        self.seen = {
            "input_channels_last": x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous(),
            "logits_dtype": logits.dtype,
            "label_dtype": batch["source"]["label"].dtype,
        }
        return super().step(batch, it)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_split(tmp_path_factory.mktemp("data"), n=4)


def _train(tmp_path, data, iters=2, **switches):
    ctx = make_context(tmp_path, data, iters=iters, **switches)
    method = Probe(SourceOnlyOptions(), ctx)
    trainer = Trainer(ctx, method, hooks=[])
    trainer.train()
    return trainer, method


def _params(module):
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_auto_switches_are_off_on_cpu_and_fp16_needs_cuda(data):
    recipe = validate(Recipe, recipe_dict(data))
    switches = resolve_switches(recipe, torch.device("cpu"))
    assert (switches.amp, switches.channels_last, switches.compile) == ("off", False, None)
    recipe = validate(Recipe, recipe_dict(data, amp="fp16"))
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        resolve_switches(recipe, torch.device("cpu"))
    recipe = validate(Recipe, recipe_dict(data, compile={"mode": "max-autotune"}))
    assert resolve_switches(recipe, torch.device("cpu")).compile == {
        "backend": "inductor",
        "mode": "max-autotune",
        "fullgraph": False,
        "dynamic": False,
    }


def test_fp32_eager_baseline(tmp_path, data):
    trainer, method = _train(tmp_path, data)
    assert method.seen == {
        "input_channels_last": False,
        "logits_dtype": torch.float32,
        "label_dtype": torch.int64,
    }
    assert trainer.scaler is None


def test_bf16_autocast_keeps_fp32_master_weights(tmp_path, data):
    before = _params(make_context(tmp_path, data).build_model())
    trainer, method = _train(tmp_path, data, amp="bf16")
    assert method.seen["logits_dtype"] == torch.bfloat16
    student = trainer.handles["student"].module
    assert all(p.dtype == torch.float32 for p in student.parameters())
    after = _params(student)
    assert torch.isfinite(after).all() and not torch.equal(before, after)


def test_channels_last_models_and_batches(tmp_path, data):
    trainer, method = _train(tmp_path, data, channels_last=True)
    assert method.seen["input_channels_last"]
    convs = [m for m in trainer.handles["student"].module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    # same numbers as NCHW up to float rounding
    eager, _ = _train(tmp_path / "eager", data)
    assert torch.allclose(
        _params(eager.handles["student"].module), _params(trainer.handles["student"].module), atol=1e-5
    )


def test_narrow_strided_pointwise_convs_stay_nchw_on_cpu():
    # oneDNN's channels-last weight gradient of a stride-2 1×1 conv with 2-7 input channels corrupts the
    # heap on AVX2 CPUs (torch 2.13.0+cpu, one thread); those layers alone keep NCHW weights and inputs
    torch.manual_seed(0)
    reference = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2, padding=1),
        torch.nn.Conv2d(4, 8, 1, stride=2),  # narrow strided 1×1: the unsafe case
        torch.nn.Conv2d(8, 8, 1, stride=2),  # 8 input channels: safe, channels-last
    )
    model = to_channels_last(copy.deepcopy(reference), torch.device("cpu"))
    inputs = []
    model[1].register_forward_hook(lambda m, args, out: inputs.append(args[0]))
    assert model[0].weight.stride() == (27, 1, 9, 3)
    assert model[1].weight.stride() == (4, 1, 1, 1)
    assert model[2].weight.stride() == (8, 1, 8, 8)
    x = torch.randn(2, 3, 32, 32)
    out = model(x.contiguous(memory_format=torch.channels_last))
    assert inputs[0].stride() == (1024, 256, 16, 1)  # NCHW
    out.square().sum().backward()
    reference(x).square().sum().backward()
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(ours.grad, theirs.grad, atol=1e-5)
    # CUDA kernels are unaffected: every layer goes channels-last there
    on_gpu = to_channels_last(copy.deepcopy(reference), torch.device("cuda"))
    assert on_gpu[1].weight.stride() == (4, 1, 4, 4)


@pytest.mark.slow
def test_compile_trains_and_matches_eager(tmp_path, data):
    # dynamo + AOTAutograd without inductor's C++ codegen (minutes on a shared 2-core CPU); the
    # switch, the in-place compile and the training path are the same for every backend
    torch._dynamo.reset()
    trainer, _ = _train(tmp_path, data, iters=3, compile={"backend": "aot_eager"})
    wrapped = trainer.handles["student"]._wrapped
    assert wrapped._compiled_call_impl is not None  # nn.Module.compile() in place
    eager, _ = _train(tmp_path / "eager", data, iters=3)
    assert torch.allclose(
        _params(eager.handles["student"].module), _params(trainer.handles["student"].module), atol=1e-4
    )
