"""DecoupleNet: every rule of decouplenet.md §7 with hand-computed expectations (and the parts it adds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaptseg.config import load_recipe, validate
from adaptseg.data.class_balanced import balanced_list_length, class_balanced_files, class_weights
from adaptseg.eval.confusion import ConfusionMatrix
from adaptseg.methods.decouplenet.network import DomainStem, head_outputs, low_level_features
from adaptseg.methods.decouplenet.soft_labels import (
    PROBABILITY_FLOOR,
    SoftLabels,
    fuse_pseudo_labels,
    logits_file,
    offline_thresholds,
    save_logits,
    save_thresholds,
    thresholds_path,
    topk_logits,
    upsampled_soft_label,
)
from adaptseg.methods.decouplenet.stages import DecoupleNetPhase1
from adaptseg.methods.parts.confidence_bank import ClassConfidenceBank, descending_percentile
from adaptseg.methods.parts.discriminator import FCDiscriminator, lsgan_loss
from adaptseg.methods.parts.geometry import CropGeometry, warp_to_crop
from adaptseg.methods.parts.losses import cross_entropy
from adaptseg.models import build_model, load_preset
from adaptseg.train.config import Recipe, stage_recipe
from adaptseg.train.context import StageContext
from adaptseg.train.distributed import DistInfo
from adaptseg.train.schedule import PolyWarmupSchedule
from adaptseg.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "train" / "decouplenet"


# --------------------------------------------------------------------------- §7.1 threshold rule and bank
def test_threshold_rule_on_ten_confidences_is_0_2_and_keeps_nine():
    conf = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    thr = descending_percentile(conf, 0.8)  # sorted desc [1.0 … 0.1], index int(0.8·10) = 8 → 0.2
    assert thr.item() == pytest.approx(0.2)
    assert int((conf >= thr).sum()) == 9


def test_bank_thresholds_before_truncating_then_keeps_the_last_entries():
    bank = ClassConfidenceBank(3, capacity=5)
    label = torch.full((10,), 1)
    conf = torch.arange(1, 11, dtype=torch.float32) / 10  # 0.1 … 1.0
    thr = bank.update(label, conf)
    assert thr.tolist() == pytest.approx(
        [0.0, 0.2, 0.0]
    )  # on all 10 (before truncation); absent classes stay 0
    assert bank.banks[1].tolist() == pytest.approx([0.6, 0.7, 0.8, 0.9, 1.0])  # then the last 5
    # next update: bank = [0.6 … 1.0, 0.05, 0.15] (7 values), desc index int(5.6) = 5 → 0.15
    thr = bank.update(torch.tensor([1, 1, 0]), torch.tensor([0.05, 0.15, 0.7]))
    assert thr[1].item() == pytest.approx(0.15) and thr[0].item() == pytest.approx(0.7) and thr[2] == 0
    assert bank.banks[1].tolist() == pytest.approx([0.8, 0.9, 1.0, 0.05, 0.15])
    # a class absent from an update keeps its previous threshold
    assert bank.update(torch.tensor([0]), torch.tensor([0.9]))[1].item() == pytest.approx(0.15)
    restored = ClassConfidenceBank(3, capacity=5)
    restored.load_state_dict(bank.state_dict())
    assert torch.equal(restored.thresholds, bank.thresholds) and torch.equal(restored.banks[1], bank.banks[1])


def _mean_worker(rank: int, world: int, port: int, out) -> None:
    import torch.distributed as dist

    from adaptseg.train.distributed import mean_across_ranks

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        out[rank] = mean_across_ranks(torch.tensor([0.2, 0.4]) * (rank + 1)).tolist()
    finally:
        dist.destroy_process_group()


def test_thresholds_are_averaged_over_ranks():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_mean_worker, args=(2, port, out), nprocs=2)
    # rank 0: [0.2, 0.4], rank 1: [0.4, 0.8] → every rank applies [0.3, 0.6]
    assert out[0] == pytest.approx([0.3, 0.6]) and out[1] == pytest.approx([0.3, 0.6])


# --------------------------------------------------------------------------- §7.2 get_thresholds
def test_offline_thresholds_from_npy_logits(tmp_path):
    folder = tmp_path / "soft"
    rng = np.random.default_rng(0)
    logits = [torch.from_numpy(rng.normal(0, 3, (19, 4, 8)).astype(np.float32)) for _ in range(3)]
    for i, z in enumerate(logits):
        save_logits(folder / f"img{i}_leftImg8bit.npy", z)
    maps = []
    for path in sorted(folder.glob("*.npy")):
        confidence, label = torch.from_numpy(np.load(path)).softmax(0).max(0)
        maps.append((label, confidence))
    thresholds = offline_thresholds(maps, 19)
    path = thresholds_path(folder)
    save_thresholds(path, thresholds)
    assert path == tmp_path / "soft_thresholds_p0.8.npy"
    loaded = np.load(path)
    assert loaded.shape == (19,)
    # reference: pool max-probs per argmax class, sort descending, element int(0.8·n)
    probs = np.stack([torch.softmax(z, 0).numpy() for z in logits])
    conf, arg = probs.max(1).ravel(), probs.argmax(1).ravel()
    for c in range(19):
        pooled = np.sort(conf[arg == c])[::-1]
        expected = pooled[int(0.8 * len(pooled))] if len(pooled) else 0.0  # a class never predicted gets 0
        assert loaded[c] == pytest.approx(expected, abs=1e-6)


# --------------------------------------------------------------------------- §7.3 fusion
def test_fusion_averages_then_thresholds_strictly():
    offline = torch.tensor([0.6, 0.3, 0.1]).view(1, 3, 1, 1)
    online = torch.tensor([0.2, 0.6, 0.2]).view(1, 3, 1, 1)
    # mean [0.4, 0.45, 0.15]: ŷ = 1 with conf 0.45
    kept = fuse_pseudo_labels(offline, online, torch.tensor([0.0, 0.45, 0.0]))
    dropped = fuse_pseudo_labels(offline, online, torch.tensor([0.0, 0.46, 0.0]))
    assert kept.item() == 1 and dropped.item() == 255


# --------------------------------------------------------------------------- §7.4 geometry
def test_crop_and_flip_indices_follow_y1_y2_x1_x2_and_h_w():
    h, w = 10, 12
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    grid = torch.stack([ys, xs])
    g = CropGeometry(size=(h, w), top=2, left=3, crop=(4, 5), flip=True)
    assert g.box == (2, 6, 3, 8)
    out = warp_to_crop(grid, g, align_corners=True)
    assert out.shape == (2, 4, 5)
    assert out[0, :, 0].tolist() == [2, 3, 4, 5]  # rows y1 … y2−1
    assert out[1, 0].tolist() == [7, 6, 5, 4, 3]  # columns x1 … x2−1, flipped


def test_warped_whole_image_prediction_matches_the_crop_prediction_of_a_pixelwise_model():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 1)  # a pixel-wise linear "model", output stride 1
    H, W = 48, 96
    ys, xs = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    image = torch.stack([xs, ys, torch.sin(3 * xs) * torch.cos(2 * ys)])  # smooth
    g = CropGeometry(size=(60, 120), top=9, left=17, crop=(32, 56), flip=True)
    with torch.no_grad():
        crop_prediction = model(warp_to_crop(image, g, align_corners=False)[None])[0]
        whole = F.interpolate(model(image[None]), size=g.crop, mode="bilinear", align_corners=True)[
            0
        ]  # to crop size
        warped = warp_to_crop(whole, g, align_corners=True)
    scale = crop_prediction.abs().max()
    assert warped.shape == crop_prediction.shape
    assert (warped - crop_prediction).abs().max() < 0.03 * scale  # align_corners double interpolation


# --------------------------------------------------------------------------- §7.5 soft-label loading
def test_soft_label_file_is_the_image_basename():
    image = Path("leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png")
    assert logits_file(Path("soft"), image) == Path("soft/aachen_000000_000019_leftImg8bit.npy")


def test_constant_logits_stay_constant_and_softmax_comes_after_the_warp():
    g = CropGeometry(size=(20, 40), top=3, left=5, crop=(8, 16), flip=True)
    const = torch.full((19, 4, 8), 2.5)
    warped = warp_to_crop(upsampled_soft_label(const, (16, 32)), g, align_corners=True)
    assert torch.allclose(warped, torch.full_like(warped, 2.5))
    # softmax of the interpolated logits is not the interpolated softmax: the order matters
    z = torch.zeros(2, 1, 2)
    z[0, 0, 0], z[1, 0, 1] = 4.0, 4.0
    up = upsampled_soft_label(z, (1, 3))
    assert torch.softmax(up, 0)[:, 0, 1].tolist() == pytest.approx([0.5, 0.5])  # logits (2, 2) in the middle
    mean_of_softmax = upsampled_soft_label(torch.softmax(z, 0), (1, 3))[:, 0, 1]
    assert mean_of_softmax.tolist() == pytest.approx([0.5, 0.5])  # symmetric case agrees …
    z[0, 0, 0] = 8.0  # … an asymmetric one does not: logits (4, 2) in the middle → σ(2)
    logit_first = torch.softmax(upsampled_soft_label(z, (1, 3)), 0)[0, 0, 1].item()
    prob_first = upsampled_soft_label(torch.softmax(z, 0), (1, 3))[0, 0, 1].item()
    assert logit_first == pytest.approx(
        torch.sigmoid(torch.tensor(2.0)).item()
    ) and logit_first != pytest.approx(prob_first)


def test_topk_log_probabilities_interpolate_exactly_as_the_logits():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, 6)
    probs = torch.softmax(logits, 0)
    assert probs.min() > PROBABILITY_FLOOR  # below it the store's 1/255 steps cannot tell values apart
    values, classes = probs.topk(5, dim=0)  # all classes kept: no mass lost
    recovered = topk_logits(classes.numpy().astype(np.uint8), values.numpy(), 5)
    target = torch.softmax(upsampled_soft_label(logits, (9, 13)), 0)
    assert torch.allclose(torch.softmax(upsampled_soft_label(recovered, (9, 13)), 0), target, atol=1e-5)
    # with k < C the unstored mass is spread evenly and the top classes keep their probabilities
    values, classes = probs.topk(2, dim=0)
    partial = torch.softmax(topk_logits(classes.numpy().astype(np.uint8), values.numpy(), 5), 0)
    assert torch.allclose(partial.gather(0, classes), values, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_soft_labels_read_the_release_logit_form_at_either_precision(tmp_path, dtype):
    stage = tmp_path / "soft"
    z = torch.randn(19, 2, 3) * 8
    path = stage / "logits" / "a_leftImg8bit.npy"
    save_logits(path, z, dtype)
    save_thresholds(stage / "logits_thresholds_p0.8.npy", np.full(19, 0.5, np.float32))
    soft = SoftLabels(stage, {"city/a": Path("x/city/a_leftImg8bit.png")}, 19)
    assert soft.form == "logits" and soft.thresholds.tolist() == [0.5] * 19
    read = soft.logits("city/a")
    assert read.dtype == torch.float32 and np.load(path).dtype == np.dtype(dtype)
    if dtype == "float32":
        assert torch.equal(read, z)  # the release's files, bit for bit
    else:  # half the bytes; float16 keeps 11 significant bits: |error| ≤ 2⁻¹¹·|z|
        assert path.stat().st_size < 19 * 2 * 3 * 4
        assert torch.all((read - z).abs() <= z.abs() * 2**-11) and not torch.equal(read, z)


# --------------------------------------------------------------------------- §7.6 shapes
def test_shapes_of_the_full_network_and_discriminators():
    with torch.device("meta"):
        model = build_model(load_preset("deeplabv2-128-r101"))
        stem = DomainStem(model.backbone)
        d_low, d_out = FCDiscriminator(256, 32), FCDiscriminator(19, 64)
        x = torch.empty(1, 3, 512, 896)
        phi = stem(x)
        feats = model.backbone(x)
        logits, feature = head_outputs(model, low_level_features(model.backbone, x))
        big = model(torch.empty(1, 3, 1024, 2048))
        d1 = d_low(F.interpolate(phi, size=(512, 896), mode="bilinear", align_corners=True))
        d2 = d_out(F.interpolate(logits, size=(512, 896), mode="bilinear", align_corners=True))
    assert phi.shape[1:] == (256, 128, 224) and feats[0].shape[1:] == (256, 128, 224)
    assert feats[3].shape[1:] == (2048, 64, 112)
    assert feature.shape[1:] == (128, 64, 112) and logits.shape[1:] == (19, 64, 112)
    assert d1.shape[1:] == (1, 16, 28) and d2.shape[1:] == (1, 16, 28)
    assert big.shape[1:] == (19, 128, 256)


# --------------------------------------------------------------------------- §7.7-7.8 gradient flow, loss values
@pytest.fixture
def phase1(tmp_path):
    """A phase-1 Trainer on the tiny network with a synthetic batch (no data on disk is read)."""
    raw = load_recipe(Recipe, RECIPES / "minicity.yaml").model_dump(mode="python")
    recipe = validate(Recipe, raw)
    stage = recipe.stage("phase1").model_copy(update={"init_from": {}})
    ctx = StageContext(
        stage=stage,
        recipe=stage_recipe(recipe, stage),
        run_dir=tmp_path,
        device=torch.device("cpu"),
        dist=DistInfo(),
        stage_names=tuple(s.name for s in recipe.stages),
    )
    trainer = Trainer(ctx, DecoupleNetPhase1(DecoupleNetPhase1.Options(), ctx))
    trainer.setup_models()
    g = torch.Generator().manual_seed(0)
    batch = {
        "source": {
            "image": torch.randn(2, 3, 64, 112, generator=g),
            "label": torch.randint(0, 19, (2, 64, 112), generator=g),
        },
        "target": {"image": torch.randn(2, 3, 64, 112, generator=g)},
    }
    return trainer, batch


def reached(modules: dict[str, torch.nn.Module]) -> set[str]:
    return {
        name
        for name, m in modules.items()
        if any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    }


def test_gradient_flow_of_each_phase_1_loss(phase1):
    trainer, batch = phase1
    h = {n: trainer.handles[n].module for n in trainer.handles}
    student = h["student"]
    parts = {
        "g_src": h["source_stem"],
        "g_tgt": torch.nn.ModuleList([student.backbone.conv1, student.backbone.layer1]),
        "g_share": torch.nn.ModuleList([student.backbone.layer2, student.backbone.layer4]),
        "head": student.decode_head.aspp_modules,
        "C": student.decode_head.conv_seg,
        "C_aux": h["aux"],
        "D_low": h["d_low"],
        "D": h["d_out"],
    }
    generator, _ = trainer.method.phases(batch, 0)
    assert generator.frozen == ("d_low", "d_out") and generator.optimizers == ("main",)
    with trainer.frozen(generator.frozen):
        losses = generator.losses()
        flows = {}
        for name, loss in losses.items():
            for m in h.values():
                m.zero_grad(set_to_none=True)
            loss.backward(retain_graph=True)
            flows[name] = reached(parts)
    assert flows["adv_low"] == {"g_src"}
    assert flows["sd"] == {"C_aux", "head", "g_share", "g_tgt"}
    assert "g_tgt" not in flows["source_ce"] and {"g_src", "g_share", "head", "C"} <= flows["source_ce"]
    assert flows["adv_out"] == {"g_tgt", "g_share", "head", "C"}
    assert all(
        "D" not in f and "D_low" not in f for f in flows.values()
    )  # generator losses leave D untouched


def constant_discriminator(d: FCDiscriminator, value: float) -> None:
    with torch.no_grad():
        d.classifier.weight.zero_()
        d.classifier.bias.fill_(value)


def test_loss_values_temperature_lsgan_targets_and_weights(phase1):
    trainer, batch = phase1
    h = trainer.handles
    constant_discriminator(h["d_low"].module, 0.3)
    constant_discriminator(h["d_out"].module, 0.8)
    generator, discriminators = trainer.method.phases(batch, 0)
    g = generator.losses()
    assert g["adv_low"].item() == pytest.approx(0.1 * (0.3 - 1) ** 2)  # source features labelled target (1)
    assert g["adv_out"].item() == pytest.approx(0.01 * 0.8**2)  # target outputs labelled source (0)
    d = discriminators.losses()
    assert d["d_low"].item() == pytest.approx(0.5 * 0.3**2 + 0.5 * 0.7**2)
    assert d["d_out"].item() == pytest.approx(0.5 * 0.8**2 + 0.5 * 0.2**2)
    # source CE = CE(upsampled logits / 1.8) over valid pixels
    logits = torch.randn(1, 19, 4, 7)
    label = torch.randint(0, 19, (1, 16, 28))
    label[0, 0] = 255
    up = F.interpolate(logits, size=(16, 28), mode="bilinear", align_corners=True)
    expected = F.cross_entropy(up / 1.8, label, ignore_index=255)
    got = cross_entropy(logits, label, normalize="valid_pixels", align_corners=True, temperature=1.8)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert lsgan_loss(torch.tensor([0.0, 2.0]), 1.0).item() == pytest.approx(1.0)
    assert lsgan_loss(torch.tensor([0.0, 2.0]), 0.0).item() == pytest.approx(2.0)


# --------------------------------------------------------------------------- §7.9 learning rates
def test_learning_rates_of_the_release_schedules():
    recipe = load_recipe(Recipe, RECIPES / "gta5-cityscapes.yaml")
    for stage, base, stop, expected in (("phase1", 2.5e-4, 60000, 9.97e-5), ("phase2", 5e-4, 40000, 1.99e-4)):
        r = stage_recipe(recipe, recipe.stage(stage))
        s = r.schedule
        assert r.optim.lr == base and s.iters == stop and r.optim.custom_keys["head"].lr_mult == 10
        schedule = PolyWarmupSchedule(s.horizon, power=s.power, warmup=s.warmup)
        assert schedule.lr(0, base) == base and schedule.lr(0, 10 * base) == 10 * base
        assert schedule.lr(stop, base) == pytest.approx(expected, rel=2e-3)
    disc = DecoupleNetPhase1.Options().discriminator_optim
    assert (disc.type, disc.lr, disc.betas) == ("adam", 1e-4, (0.9, 0.99)) and recipe.amp == "fp16"


# --------------------------------------------------------------------------- §7.10 sampler
def test_class_balanced_weights_and_list_length():
    w = class_weights(np.array([0.0, 0.5, 0.5]))
    raw = np.array([1 / np.log(1.01), 1 / np.log(1.51), 1 / np.log(1.51)])
    assert w == pytest.approx(raw / raw.sum())
    assert balanced_list_length(93750) == 753000  # (⌊93750·8/3000⌋ + 1)·3000
    files = class_balanced_files(
        {0: ["a", "b", "c"], 1: ["d"]},
        {"a": [0], "b": [0], "c": [0], "d": [1]},
        50,
        np.random.default_rng(0),
        sub_epoch=10,
    )
    assert len(files) == 50 and set(files) <= set("abcd") and "d" in files


# --------------------------------------------------------------------------- §7.11 evaluation
def test_miou_ignores_the_ignore_label_and_matches_a_numpy_confusion_matrix():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 19, (2, 16, 16)).astype(np.uint8)
    target[:, :4] = 255  # the release's 250 is this project's 255
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 19, target.shape)).astype(
        np.uint8
    )
    pred[target == 255] = 0
    cm = ConfusionMatrix(19).update(pred, target)
    valid = target != 255
    ref = np.bincount(19 * target[valid].astype(int) + pred[valid], minlength=361).reshape(19, 19)
    iou = np.diag(ref) / (ref.sum(0) + ref.sum(1) - np.diag(ref))
    assert cm.miou() == pytest.approx(float(np.nanmean(iou)), abs=1e-9)
