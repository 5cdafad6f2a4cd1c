"""The batched engine against a naive reference with mmseg semantics, batching, TTA and bounded memory."""

from __future__ import annotations

import weakref

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from adaptseg.errors import UserError
from adaptseg.infer.config import InferenceConfig
from adaptseg.infer.engine import SlidingWindow, keep_ratio_size, variant_size
from adaptseg.infer.windows import window_weights

from .conftest import MEAN, Deploy, TinyNet, random_image, tiny_backend

# several odd sizes in one run: smaller than the crop, not multiples of the stride, wide and tall
SIZES = [(10, 13), (37, 53), (24, 100), (61, 29), (33, 33)]


def images(sizes=SIZES, seed=0):
    return [(f"img{i}", random_image(h, w, seed + i)) for i, (h, w) in enumerate(sizes)]


def reference(predict, image: np.ndarray, cfg: InferenceConfig, pad=MEAN) -> Tensor:
    """One window at a time, as mmseg's slide_inference + aug_test do it: resize (keep ratio), flip, pad
    each window up to the crop, forward it alone, cut back, F.pad it into a full-size map, divide by
    the (weighted) count, upsample to the original size, softmax, flip back, average the variants."""
    h0, w0 = image.shape[:2]
    total = 0
    variants = [(r, f) for r in cfg.tta.scales for f in ((False, True) if cfg.tta.flip else (False,))]
    for ratio, flip in variants:
        base = cfg.resize or (max(h0, w0), min(h0, w0))
        if (
            not cfg.upscale
            and cfg.resize
            and max(h0, w0) <= max(cfg.resize)
            and min(h0, w0) <= min(cfg.resize)
        ):
            base = (max(h0, w0), min(h0, w0))
        scale = (int(base[0] * ratio), int(base[1] * ratio))
        factor = min(max(scale) / max(h0, w0), min(scale) / min(h0, w0))  # mmcv rescale_size
        h, w = int(h0 * factor + 0.5), int(w0 * factor + 0.5)
        img = image if (h, w) == (h0, w0) else cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        if flip:
            img = img[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
        (ch, cw), (sh, sw) = (cfg.crop, cfg.slide_stride) if cfg.mode == "slide" else ((h, w), (h, w))
        preds = torch.zeros(1, 1, h, w)
        count = torch.zeros(1, 1, h, w)
        h_grids = max(h - ch + sh - 1, 0) // sh + 1
        w_grids = max(w - cw + sw - 1, 0) // sw + 1
        for hi in range(h_grids):
            for wi in range(w_grids):
                y1, x1 = hi * sh, wi * sw
                y2, x2 = min(y1 + ch, h), min(x1 + cw, w)
                y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
                padded = torch.tensor(pad).view(1, 3, 1, 1).expand(1, 3, ch, cw).clone()
                padded[:, :, : y2 - y1, : x2 - x1] = x[:, :, y1:y2, x1:x2]
                with torch.no_grad():
                    out = predict(padded)[:, :, : y2 - y1, : x2 - x1]
                if cfg.average == "probs":
                    out = out.softmax(1)
                weight = window_weights((ch, cw), cfg.weights, sigma_scale=cfg.sigma)
                weight = torch.ones(y2 - y1, x2 - x1) if weight is None else weight[: y2 - y1, : x2 - x1]
                if preds.shape[1] != out.shape[1]:
                    preds = torch.zeros(1, out.shape[1], h, w)
                preds += F.pad(out * weight, (x1, w - x2, y1, h - y2))
                count += F.pad(weight[None, None], (x1, w - x2, y1, h - y2))
        preds = preds / count
        preds = F.interpolate(preds, size=(h0, w0), mode="bilinear", align_corners=False)
        if cfg.average == "logits":
            preds = preds.softmax(1)
        if flip:
            preds = preds.flip(3)
        total = total + preds
    return (total / len(variants))[0]


def assert_matches_reference(backend, cfg, items):
    engine = SlidingWindow(backend, cfg)
    preds = list(engine.run(items))
    assert [p.id for p in preds] == [i for i, _ in items]
    for pred, (_, image) in zip(preds, items, strict=True):
        ref = reference(backend, image, cfg)
        # label and confidence first: they are read before any deferred division/softmax is applied
        assert torch.equal(pred.label(), ref.argmax(0))
        torch.testing.assert_close(pred.confidence(), ref.amax(0), atol=1e-5, rtol=0)
        assert pred.output.shape == ref.shape == (backend.num_classes, *image.shape[:2])
        torch.testing.assert_close(pred.output, ref, atol=1e-5, rtol=0)
        assert torch.equal(pred.label(), ref.argmax(0))
    return engine


CONFIGS = {
    "slide-logits": dict(mode="slide", crop=(24, 32), stride=(16, 20), batch_size=5),
    "slide-probs": dict(mode="slide", crop=(24, 32), stride=(16, 20), batch_size=3, average="probs"),
    "slide-gaussian": dict(mode="slide", crop=(24, 32), stride=(12, 16), batch_size=7, weights="gaussian"),
    "slide-resize": dict(mode="slide", crop=(20, 20), stride=(15, 10), batch_size=4, resize=(48, 32)),
    "whole-native": dict(mode="whole", batch_size=2),
    "whole-resize": dict(mode="whole", batch_size=3, resize=(40, 30), upscale=False),
    "tta": dict(
        mode="slide",
        crop=(24, 32),
        stride=(16, 20),
        batch_size=6,
        tta={"flip": True, "scales": [0.75, 1.0, 1.5]},
    ),
    "tta-whole-probs": dict(mode="whole", average="probs", tta={"flip": True, "scales": [0.5, 1.25]}),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_engine_equals_one_window_at_a_time(name, backend):
    sizes = SIZES[:3] if name.startswith("tta") else SIZES  # TTA multiplies the reference's forwards
    assert_matches_reference(backend, InferenceConfig(**CONFIGS[name]), images(sizes))


@pytest.mark.parametrize("name", ["slide-gaussian", "tta"])
def test_channels_last_models_accumulate_in_their_layout(name):
    from adaptseg.infer.backends import TorchBackend
    from adaptseg.infer.config import BackendOptions

    torch.manual_seed(0)
    backend = TorchBackend(
        Deploy(TinyNet(5)), num_classes=5, device="cpu", options=BackendOptions(channels_last=True)
    )
    engine = assert_matches_reference(backend, InferenceConfig(**CONFIGS[name]), images(SIZES[:3]))
    assert engine.stats.images == 3
    if name == "slide-gaussian":
        out = engine.predict_image(random_image(30, 40, 0))
        assert out.stride(0) == 1  # the accumulator followed the model's N×H×W×C output


def test_crops_from_several_images_fill_every_batch():
    backend = tiny_backend()
    seen: list[int] = []

    def predict(x):
        seen.append(x.shape[0])
        return backend(x)

    cfg = InferenceConfig(mode="slide", crop=(24, 32), stride=(16, 20), batch_size=7)
    engine = SlidingWindow(predict, cfg, pad_value=MEAN)
    preds = list(engine.run(images()))
    assert len(preds) == len(SIZES)
    assert sum(seen) == engine.stats.crops and engine.stats.crops % 7 != 0  # batch does not divide the crops
    assert all(n == 7 for n in seen[:-1])  # every batch but the last is full, across image boundaries
    for pred, (_, image) in zip(preds, images(), strict=True):
        torch.testing.assert_close(pred.output, reference(backend, image, cfg), atol=1e-5, rtol=0)


def test_fixed_crop_artifact_pads_smaller_images_in_whole_mode():
    backend = tiny_backend()
    backend.crop = (40, 56)  # as an exported artifact with a fixed input size
    engine = SlidingWindow(backend, InferenceConfig(mode="whole", batch_size=4))
    items = images([(40, 56), (17, 23), (30, 56)])
    ref_cfg = InferenceConfig(mode="slide", crop=(40, 56), stride=(40, 56))
    for pred, (_, image) in zip(engine.run(items), items, strict=True):
        torch.testing.assert_close(pred.output, reference(backend, image, ref_cfg), atol=1e-5, rtol=0)
    with pytest.raises(UserError, match="crop"):
        SlidingWindow(backend, InferenceConfig(mode="slide", crop=(24, 24)))


def test_outputs_below_crop_size_are_upsampled_like_the_deploy_module():
    torch.manual_seed(1)
    net = TinyNet(4)
    deploy = Deploy(net).eval()

    def raw(x):  # normalised input, logits at stride 2: what a method's feature extractor returns
        return net((x - deploy.mean) / deploy.std)

    cfg = InferenceConfig(mode="slide", crop=(16, 16), stride=(8, 8), batch_size=4)
    a = SlidingWindow(raw, cfg, pad_value=MEAN).predict_image(random_image(30, 21, 3))
    b = SlidingWindow(deploy, cfg, pad_value=MEAN).predict_image(random_image(30, 21, 3))
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_logits_output_is_the_raw_average():
    backend = tiny_backend()
    image = random_image(20, 28, 5)
    out = SlidingWindow(backend, InferenceConfig(mode="whole"), output="logits").predict_image(image)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    torch.testing.assert_close(out, backend(x)[0], atol=1e-6, rtol=0)


def test_keep_ratio_resize_follows_mmcv():
    assert keep_ratio_size(1024, 2048, (1024, 512)) == (512, 1024)
    assert keep_ratio_size(1080, 1920, (960, 540)) == (540, 960)
    assert keep_ratio_size(600, 800, (1024, 512)) == (512, 683)  # short side bound wins
    up = InferenceConfig(resize=(1024, 512))
    assert variant_size(128, 256, up) == (512, 1024)  # mmseg enlarges small images
    keep = InferenceConfig(resize=(1024, 512), upscale=False)
    assert variant_size(128, 256, keep) == (128, 256)
    assert variant_size(1024, 2048, keep) == (512, 1024)
    assert variant_size(128, 256, keep, ratio=1.5) == (192, 384)


def test_memory_does_not_grow_with_the_number_of_images():
    backend = tiny_backend()
    cfg = InferenceConfig(mode="slide", crop=(16, 16), stride=(8, 8), batch_size=4, prefetch=3)
    peaks = []
    for n in (6, 30):
        engine = SlidingWindow(backend, cfg)
        refs = []
        for pred in engine.run((f"i{k}", random_image(20, 30, k)) for k in range(n)):
            refs.append(weakref.ref(pred.output))
            del pred
            # the engine keeps no reference to finished outputs (freed as soon as the caller drops them)
            assert sum(r() is not None for r in refs) == 0
        assert engine.stats.images == n
        peaks.append((engine.stats.peak_live_images, engine.stats.peak_buffer_bytes))
    assert peaks[0] == peaks[1]
    # a 20×30 image has 2×3 = 6 windows, so a batch of 4 spans at most 2 images
    assert peaks[1][0] <= 2
    assert peaks[1][1] <= 2 * (5 * 20 * 30 * 4 + 20 * 30 * 4) + 5 * 20 * 30 * 4


def test_unreadable_images_are_reported_or_raised(tmp_path, backend):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    items = [("good", random_image(12, 12, 0)), ("bad", bad), ("also-good", random_image(9, 15, 1))]
    errors = []
    engine = SlidingWindow(backend, InferenceConfig())
    ids = [p.id for p in engine.run(items, on_error=lambda i, e: errors.append((i, str(e))))]
    assert ids == ["good", "also-good"]
    assert errors[0][0] == "bad" and "bad.png" in errors[0][1]
    assert engine.stats.skipped == 1
    with pytest.raises(UserError, match="bad.png"):
        list(SlidingWindow(backend, InferenceConfig()).run(items))


def test_wrong_inputs_and_outputs_are_one_line_errors(backend):
    with pytest.raises(UserError, match="RGB uint8"):
        list(SlidingWindow(backend).run([("grey", np.zeros((8, 8), np.uint8))]))
    with pytest.raises(UserError, match="N×C×H×W"):
        SlidingWindow(lambda x: x.mean(1)).predict_image(random_image(8, 8, 0))


def test_dataset_samples_are_accepted(backend):
    from adaptseg.data import Sample

    image = random_image(14, 18, 2)
    engine = SlidingWindow(backend)
    (pred,) = engine.run([Sample(image, None, "city/x")])
    assert pred.id == "city/x" and pred.index == 0
    torch.testing.assert_close(pred.output, engine.predict_image(image))


def test_prediction_label_breaks_ties_like_argmax():
    from adaptseg.infer.engine import Prediction

    output = torch.tensor([[[0.5, 0.2], [0.1, 0.3]], [[0.5, 0.7], [0.1, 0.3]], [[0.0, 0.1], [0.8, 0.4]]])
    pred = Prediction(0, "x", output)
    assert pred.label().tolist() == [[0, 1], [2, 2]]  # the tie at (0, 0) goes to class 0
    assert torch.equal(pred.label(), output.argmax(0)) and pred.label().dtype == torch.int64
    # a channels-last (permuted) buffer, as the engine returns for channels-last models
    permuted = output.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    assert torch.equal(Prediction(0, "x", permuted).label(), output.argmax(0))


def test_released_buffers_serve_later_images_and_cannot_be_read():
    backend = tiny_backend()
    cfg = InferenceConfig(
        mode="slide", crop=(16, 16), stride=(8, 8), batch_size=6
    )  # 2×3 windows: one image a batch
    engine = SlidingWindow(backend, cfg)
    items = [(f"i{k}", random_image(20, 30, k)) for k in range(3)] + [("other", random_image(25, 30, 9))]
    pointers, labels = [], []
    for pred in engine.run(items):
        pointers.append(pred.output.data_ptr())
        labels.append(pred.label())
        pred.release()
        with pytest.raises(RuntimeError, match="released"):
            pred.label()
    # same-size images take the buffer the previous one gave back; another size needs its own
    assert pointers[1] == pointers[0] and pointers[2] == pointers[0]
    assert pointers[3] != pointers[0]
    # and a reused buffer starts from zero: results equal a fresh engine's
    for (image_id, image), label in zip(items, labels, strict=True):
        assert torch.equal(label, SlidingWindow(backend, cfg).run([(image_id, image)]).__next__().label())


def test_unreleased_predictions_are_never_overwritten():
    backend = tiny_backend()
    cfg = InferenceConfig(mode="slide", crop=(16, 16), stride=(8, 8), batch_size=4)
    items = [(f"i{k}", random_image(20, 30, k)) for k in range(4)]
    kept = list(SlidingWindow(backend, cfg).run(items))
    assert len({p.output.data_ptr() for p in kept}) == 4
    for pred, item in zip(kept, items, strict=True):
        torch.testing.assert_close(
            pred.output, SlidingWindow(backend, cfg).predict_image(item[1]), atol=0, rtol=0
        )


def test_max_softmax_is_the_top_probability_of_the_divided_logits():
    from adaptseg.infer.engine import max_softmax

    logits = torch.randn(7, 5, 6) * 4
    counts = torch.randint(1, 5, (5, 6)).float()
    torch.testing.assert_close(max_softmax(logits), logits.softmax(0).amax(0))
    torch.testing.assert_close(max_softmax(logits, counts), (logits / counts).softmax(0).amax(0))
    # hand-computed: logits (0, ln 3) give probabilities 1/4, 3/4
    two = torch.tensor([0.0, float(np.log(3.0))]).view(2, 1, 1)
    assert max_softmax(two).item() == pytest.approx(0.75)
    assert max_softmax(two * 2, torch.full((1, 1), 2.0)).item() == pytest.approx(0.75)
