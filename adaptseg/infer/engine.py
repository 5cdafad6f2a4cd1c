"""The batched sliding-window engine: many windows of many images per forward, bounded memory.

What one image goes through (mmseg ``EncoderDecoder.slide_inference`` / ``aug_test`` semantics):

1. A reader pool decodes it and makes its test-time variants: keep-ratio resize to the preset scale
   times each TTA ratio (mmcv ``rescale_size``, bilinear), then a horizontal flip if asked.
2. Each variant is cut into windows (:func:`~adaptseg.infer.windows.window_grid`); a window smaller than
   the crop (image smaller than the crop) is padded up to the crop with the model's mean colour, so
   every crop of a batch has one shape. Crops of consecutive windows and images fill batches of
   ``batch_size``; one forward per batch. ``batch_size: auto`` times the first batches at a few sizes
   and keeps the fastest per crop (:mod:`~adaptseg.infer.batching`).
3. The crop-sized outputs are added into the variant's accumulator (weighted, ``uniform`` = counts)
   and, once all its windows are in, normalised, upsampled bilinearly to the original image size,
   turned into probabilities, flipped back and averaged over the variants.
4. The image's prediction is yielded and its buffers dropped. At any time only the images whose
   windows share the current batch hold buffers: memory depends on ``batch_size`` and image size,
   never on the number of images.

The engine's core is generic over ``predict``: any callable mapping a float N×3×h×w 0–255 RGB batch
to N×C×h'×w' (a :class:`~adaptseg.infer.backends.Backend`, or a method's feature extractor; outputs
that are not crop-sized are upsampled bilinearly to the crop, as the deploy module does).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from adaptseg.errors import UserError
from adaptseg.infer.batching import BatchSizeProbe, crop_bytes, probe_candidates
from adaptseg.infer.config import InferenceConfig, Pair
from adaptseg.infer.windows import Window, window_counts, window_grid, window_weights
from adaptseg.io import read_image

#: What ``run`` accepts per image: an array, a path, or a zero-argument loader (called in a reader thread).
ImageSource = np.ndarray | str | Path | Callable[[], np.ndarray]
OutputKind = Literal["probs", "logits"]


class Prediction:
    """The engine's result for one image, at the image's original size.

    ``output`` is C×H×W float32 on the engine's accumulation device: probabilities (the default), or
    the averaged raw outputs when the engine runs with ``output="logits"``. It keeps the model's
    memory layout (channels-last models give a permuted view; ``.contiguous()`` when that matters).

    The last steps are done on first use. Without TTA the engine hands over the summed window
    outputs with the count map to divide by and, for logit averaging, the softmax still to apply;
    ``output`` does both in place when first read. :meth:`label` and :meth:`confidence` need neither
    (dividing each pixel by a positive count and the softmax keep the order of the classes; the top
    probability is ``1 / Σ exp((l - max l) / count)``), so consumers that want only those skip two
    C×H×W passes.

    :meth:`release` hands the buffer back to the engine, which reuses it for a later image of the
    same size instead of faulting in fresh pages (the evaluation, ``infer`` and pseudo-labelling
    loops release every prediction once written). A prediction that is never released is simply
    freed when dropped.
    """

    __slots__ = ("_divisor", "_pool", "_scores", "_softmax_pending", "id", "index")

    def __init__(
        self,
        index: int,
        id: str,
        output: Tensor,
        *,
        divisor: Tensor | None = None,
        softmax_pending: bool = False,
        pool: _BufferPool | None = None,
    ):
        self.index = index  # position of the image in the input order
        self.id = id
        self._scores: Tensor | None = output
        self._divisor = divisor  # H×W positive counts the scores are still to be divided by
        self._softmax_pending = softmax_pending
        self._pool = pool

    def __repr__(self) -> str:
        state = "released" if self._scores is None else f"shape={tuple(self._scores.shape)}"
        return f"Prediction(index={self.index}, id={self.id!r}, {state})"

    def _live(self) -> Tensor:
        if self._scores is None:
            raise RuntimeError(f"prediction {self.id!r} was released: read what you need before release()")
        return self._scores

    @property
    def shape(self) -> torch.Size:
        """C×H×W of ``output``, without making the probabilities."""
        return self._live().shape

    @property
    def output(self) -> Tensor:
        scores = self._live()
        if self._divisor is not None:
            scores.div_(self._divisor)
            self._divisor = None
        if self._softmax_pending:
            softmax_(scores, 0)
            self._softmax_pending = False
        return scores

    def label(self) -> Tensor:
        """The class map (H×W int64); ties go to the lowest class id, as with ``argmax``.

        ``max(0).indices`` rather than ``argmax(0)``: the same result, 4× faster on C×H×W CPU tensors
        (25 vs 97 ms for 19×512×1024 on one thread).
        """
        return self._live().max(0).indices

    def confidence(self) -> Tensor:
        """The top probability per pixel (H×W float32); meaningful for ``output="probs"``."""
        if self._softmax_pending:
            return max_softmax(self._live(), self._divisor)
        return self.output.amax(0)

    def release(self) -> None:
        """Give the buffer back to the engine for a later image. Keep no view of ``output`` past this:
        its memory will be overwritten. The prediction cannot be read afterwards."""
        scores, self._scores, self._divisor = self._scores, None, None
        if scores is not None and self._pool is not None:
            self._pool.give(scores)


class _BufferPool:
    """Free accumulation buffers of an engine, reused for later images of the same size.

    A fresh C×H×W buffer costs a page fault per 4 KiB on first write (13 ms for 19×512×1024 on CPU,
    as long as the window adds themselves); a reused one costs a ``zero_``. At most ``keep`` buffers
    wait here (the engine's cache, like a caching allocator's; not counted in :class:`EngineStats`,
    which tracks the buffers of images in flight); they are freed with the engine.
    """

    def __init__(self, keep: int = 2):
        self.keep = keep
        self._free: list[Tensor] = []

    def zeros(self, shape: tuple[int, int, int], channels_last: bool, device: torch.device) -> Tensor:
        """A zeroed float32 C×H×W buffer (stored H×W×C when ``channels_last``)."""
        for i, buffer in enumerate(self._free):
            if buffer.shape == shape and buffer.device == device and _channels_last(buffer) == channels_last:
                return self._free.pop(i).zero_()
        if channels_last:
            return torch.zeros((shape[1], shape[2], shape[0]), dtype=torch.float32, device=device).permute(
                2, 0, 1
            )
        return torch.zeros(shape, dtype=torch.float32, device=device)

    def give(self, buffer: Tensor) -> None:
        self._free.append(buffer)
        if len(self._free) > self.keep:
            self._free.pop(0)


@dataclass
class EngineStats:
    """Counters of the last :meth:`SlidingWindow.run`: work done and the most memory held at once."""

    images: int = 0
    skipped: int = 0
    batches: int = 0
    crops: int = 0
    peak_live_images: int = 0  # images holding accumulation buffers at the same time
    peak_buffer_bytes: int = 0  # bytes of those buffers at their peak
    live_images: int = field(default=0, repr=False)
    live_bytes: int = field(default=0, repr=False)

    def hold(self, nbytes: int, *, new_image: bool = False) -> None:
        self.live_bytes += nbytes
        self.live_images += int(new_image)
        self.peak_buffer_bytes = max(self.peak_buffer_bytes, self.live_bytes)
        self.peak_live_images = max(self.peak_live_images, self.live_images)

    def release(self, nbytes: int, *, image_done: bool = False) -> None:
        self.live_bytes -= nbytes
        self.live_images -= int(image_done)


def keep_ratio_size(height: int, width: int, scale: Pair) -> Pair:
    """``(h, w)`` after a keep-ratio resize to ``scale`` = (long, short) bounds (mmcv ``rescale_size``)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return max(int(height * factor + 0.5), 1), max(int(width * factor + 0.5), 1)


def variant_size(height: int, width: int, config: InferenceConfig, ratio: float = 1.0) -> Pair:
    """The size an image is inferred at for one TTA ``ratio`` (mmseg ``MultiScaleFlipAug`` + ``Resize``)."""
    base = config.resize
    if base is None or (
        not config.upscale and max(height, width) <= max(base) and min(height, width) <= min(base)
    ):
        base = (max(height, width), min(height, width))
    return keep_ratio_size(height, width, (int(base[0] * ratio), int(base[1] * ratio)))


def softmax_(x: Tensor, dim: int) -> Tensor:
    """Softmax in place (no second C×H×W buffer)."""
    x.sub_(x.amax(dim, keepdim=True)).exp_()
    return x.div_(x.sum(dim, keepdim=True))


def max_softmax(logits: Tensor, divisor: Tensor | None = None) -> Tensor:
    """``(logits / divisor).softmax(0).amax(0)`` without a C×H×W temporary: ``1 / Σ_c exp((l_c - max l) / d)``.

    One class plane at a time (planes of a channels-first map are contiguous), 2.5× faster than the
    softmax for 19×512×1024 on one CPU thread; exact to float rounding. ``divisor``: H×W, positive.
    """
    top = logits.amax(0)
    total = torch.zeros_like(top)
    plane = torch.empty_like(top)
    for c in range(logits.shape[0]):
        torch.sub(logits[c], top, out=plane)
        if divisor is not None:
            plane.div_(divisor)
        total.add_(plane.exp_())
    return total.reciprocal_()


@dataclass
class _Loaded:
    index: int
    id: str
    size: Pair
    variants: list[tuple[Tensor, bool]]  # (uint8 3×h×w image, flipped)


@dataclass
class _Failed:
    index: int
    id: str
    error: UserError


class _Variant:
    """One resized/flipped copy of an image: its windows and its accumulation buffers."""

    def __init__(self, job: _Job, image: Tensor, flip: bool, crop: Pair, stride: Pair):
        self.job = job
        self.image: Tensor | None = image
        self.flip = flip
        self.crop, self.stride = crop, stride
        self.size: Pair = (image.shape[1], image.shape[2])
        self.windows = window_grid(*self.size, crop, stride)
        self.pending = len(self.windows)
        self.acc: Tensor | None = None
        self.norm: Tensor | None = None


class _Job:
    """One image in flight: its variants and the merged result."""

    def __init__(self, loaded: _Loaded):
        self.index, self.id, self.size = loaded.index, loaded.id, loaded.size
        self.variants: list[_Variant] = []
        self.remaining = 0
        self.merged: Tensor | None = None
        self.divisor: Tensor | None = None  # left to the Prediction (see there)
        self.started = False


class _Batch:
    """Crops waiting for one forward, and where each crop goes.

    On CPU the crops are written (converted) straight into a float32 buffer that the next batches of
    the same crop size reuse: the forward has returned before the next crop is copied in, and every
    crop is rewritten whole (window, then padding). For an accelerator they are staged as uint8 (a
    quarter of the bytes to copy) in pinned memory from torch's caching host allocator, a fresh block
    per batch since the non-blocking copy of the last one may still be running.
    """

    def __init__(self, capacity: int, device: torch.device):
        self.capacity = capacity  # may change while the batch is empty (batch_size: auto)
        self.reuse = device.type == "cpu"
        self.pin = device.type == "cuda"
        self.shape: Pair | None = None  # crop size of the crops waiting, None when empty
        self.buffer: Tensor | None = None
        self.entries: list[tuple[_Variant, Window]] = []

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, variant: _Variant, window: Window) -> None:
        if (
            self.buffer is None
            or tuple(self.buffer.shape[-2:]) != variant.crop
            or len(self.buffer) < self.capacity
        ):
            # uninitialised: pixels outside a window are set to the pad colour before the forward
            dtype = torch.float32 if self.reuse else torch.uint8
            self.buffer = torch.empty((self.capacity, 3, *variant.crop), dtype=dtype, pin_memory=self.pin)
        self.shape = variant.crop
        assert variant.image is not None
        y0, y1, x0, x1 = window
        self.buffer[len(self.entries), :, : y1 - y0, : x1 - x0].copy_(variant.image[:, y0:y1, x0:x1])
        self.entries.append((variant, window))

    def take(self) -> tuple[Tensor, list[tuple[_Variant, Window]]]:
        """The filled part of the buffer and its entries; the batch starts empty again."""
        assert self.buffer is not None
        out = (self.buffer[: len(self.entries)], self.entries)
        self.shape, self.entries = None, []
        if not self.reuse:
            self.buffer = None
        return out


class SlidingWindow:
    """Run ``predict`` over images window by window, many windows per batch (see the module docstring).

    Args:
        predict: maps float N×3×h×w 0–255 RGB crops to N×C×h×w outputs. Optional attributes read from
            it: ``device`` (where crops go; default CPU), ``crop`` (a fixed input size the artifact
            accepts, or None for any), ``mean`` (RGB 0–255 colour that pads windows smaller than the
            crop; default 0).
        config: the inference preset (crop, stride, batch size, weights, averaging, resize, TTA).
        output: ``probs`` (default) or ``logits`` — the averaged raw outputs without any softmax (for
            feature extractors; TTA variants are then averaged raw).
        device: where crop batches go (default: ``predict.device``, else CPU). On CUDA, crops are
            staged in pinned host memory and copied without blocking.
        accumulate_device: where per-image buffers live (default: ``device``).
        pad_value: RGB 0–255 colour of the padding (default: ``predict.mean``, else black).
    """

    def __init__(
        self,
        predict: Callable[[Tensor], Tensor],
        config: InferenceConfig | None = None,
        *,
        output: OutputKind = "probs",
        device: str | torch.device | None = None,
        accumulate_device: str | torch.device | None = None,
        pad_value: tuple[float, float, float] | None = None,
    ):
        if output not in ("probs", "logits"):
            raise ValueError(f"output must be 'probs' or 'logits', got {output!r}")
        self.predict = predict
        self.config = config if config is not None else InferenceConfig()
        self.output = output
        self.device = torch.device(device if device is not None else getattr(predict, "device", "cpu"))
        self.accumulate_device = (
            torch.device(accumulate_device) if accumulate_device is not None else self.device
        )
        fixed = getattr(predict, "crop", None)
        self.fixed_crop: Pair | None = (int(fixed[0]), int(fixed[1])) if fixed is not None else None
        mean = pad_value if pad_value is not None else getattr(predict, "mean", None)
        self.pad_value = torch.tensor(
            [float(v) for v in (mean if mean is not None else (0.0, 0.0, 0.0))], dtype=torch.float32
        ).view(3, 1, 1)
        self.stats = EngineStats()
        self._pool = _BufferPool()
        #: ``batch_size: auto``'s probe, made at the first batch (it needs the crop size); kept for later runs
        self.batch_probe: BatchSizeProbe | None = None
        self.clock: Callable[[], float] = time.perf_counter  # times the probe's forwards
        # averaged logits become probabilities after stitching (per-window softmax otherwise)
        self._softmax_at_finish = output == "probs" and self.config.average == "logits"
        if (
            self.config.mode == "slide"
            and self.fixed_crop is not None
            and self.fixed_crop != tuple(self.config.crop)
        ):
            raise UserError(
                f"the model runs crops of {self.fixed_crop[0]}x{self.fixed_crop[1]} (h x w) "
                f"but the preset slides {self.config.crop[0]}x{self.config.crop[1]} windows",
                fix=f"use a preset with crop: [{self.fixed_crop[0]}, {self.fixed_crop[1]}], or re-export the model",
            )

    # -- public -----------------------------------------------------------------------------------
    def run(
        self,
        items: Iterable[Any],
        *,
        on_error: Callable[[str, UserError], None] | None = None,
    ) -> Iterator[Prediction]:
        """Predict every image of ``items``; yields one :class:`Prediction` per image, in input order.

        An item is ``(id, source)`` with ``source`` an RGB uint8 H×W×3 array, an image path, or a
        zero-argument callable returning the array (decoded in a reader thread: the way to read
        ahead); an object with ``.id`` and ``.image`` (a dataset ``Sample``); or a bare path (its id
        is the path). An image that cannot be read raises its :class:`UserError`, or — when
        ``on_error`` is given — is passed to ``on_error(id, error)`` and skipped.
        """
        self.stats = EngineStats()
        jobs: deque[_Job] = deque()
        batch = _Batch(1, self.device)
        for loaded in self._read_ahead(items, on_error):
            job = self._start(loaded)
            jobs.append(job)
            for variant in job.variants:
                for window in variant.windows:
                    if len(batch) and batch.shape != variant.crop:
                        yield from self._flush(batch, jobs)
                    if not len(batch):
                        batch.capacity = self._batch_size(variant.crop)
                    batch.add(variant, window)
                    if len(batch) == batch.capacity:
                        yield from self._flush(batch, jobs)
                variant.image = None  # every crop is copied out: the resized image can go
        if len(batch):
            yield from self._flush(batch, jobs)
        if self.batch_probe is not None:
            self.batch_probe.finish()
        assert not jobs, "every image finishes with the last batch"

    def predict_image(self, image: np.ndarray) -> Tensor:
        """The C×H×W output for one RGB uint8 image (a convenience around :meth:`run`)."""
        return next(iter(self.run([("image", image)]))).output

    def _batch_size(self, crop: Pair) -> int:
        """Crops in the next batch: the preset's number, or what ``batch_size: auto`` is timing or chose."""
        if self.config.batch_size != "auto":
            return self.config.batch_size
        if self.batch_probe is None:
            auto = self.config.auto_batch
            classes = int(getattr(self.predict, "num_classes", 19))
            candidates = probe_candidates(crop, classes, max_size=auto.max_size, memory_mib=auto.memory_mib)
            note = (
                f"{auto.memory_mib:g} MiB for float32 crops + outputs at "
                f"{crop_bytes(crop, classes) / (1 << 20):.3g} MiB per {crop[0]}x{crop[1]} crop"
            )
            self.batch_probe = BatchSizeProbe(candidates, repeats=auto.repeats, memory_note=note)
        return self.batch_probe.size

    # -- reading ahead ----------------------------------------------------------------------------
    def _read_ahead(
        self, items: Iterable[Any], on_error: Callable[[str, UserError], None] | None
    ) -> Iterator[_Loaded]:
        """Loaded images in input order, decoded and resized ``prefetch`` images ahead in a thread pool."""
        pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="adaptseg-reader")
        pending: deque[Future[_Loaded | _Failed]] = deque()
        try:
            for index, item in enumerate(items):
                pending.append(pool.submit(self._load, index, item))
                if len(pending) >= self.config.prefetch:
                    loaded = self._collect(pending.popleft(), on_error)
                    if loaded is not None:
                        yield loaded
            while pending:
                loaded = self._collect(pending.popleft(), on_error)
                if loaded is not None:
                    yield loaded
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _collect(
        self, future: Future[_Loaded | _Failed], on_error: Callable[[str, UserError], None] | None
    ) -> _Loaded | None:
        result = future.result()
        if isinstance(result, _Failed):
            if on_error is None:
                raise result.error
            self.stats.skipped += 1
            on_error(result.id, result.error)
            return None
        return result

    def _load(self, index: int, item: Any) -> _Loaded | _Failed:
        """Decode one item and build its variants (runs in a reader thread)."""
        image_id, source = _unpack(index, item)
        try:
            image = _materialise(source)
        except UserError as exc:
            return _Failed(index, image_id, exc)
        height, width = image.shape[:2]
        variants = []
        for ratio in self.config.tta.scales:
            size = variant_size(height, width, self.config, ratio)
            resized = (
                image
                if size == (height, width)
                else cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            )
            # planar (3×h×w contiguous) here in the reader thread, so crops copy out as plain rows.
            # numpy, not torch: a torch op in this thread starts an OpenMP team of its own whose
            # spinning workers slowed the model's 2-thread forwards by 12 % (bench/infer.py)
            planar = np.ascontiguousarray(resized.transpose(2, 0, 1))
            variants.append((torch.from_numpy(planar), False))
            if self.config.tta.flip:
                variants.append((torch.from_numpy(np.ascontiguousarray(planar[:, :, ::-1])), True))
        return _Loaded(index, image_id, (height, width), variants)

    # -- batching and accumulation ------------------------------------------------------------------
    def _start(self, loaded: _Loaded) -> _Job:
        job = _Job(loaded)
        for image, flip in loaded.variants:
            crop, stride = self._geometry(image.shape[1], image.shape[2])
            job.variants.append(_Variant(job, image, flip, crop, stride))
        job.remaining = len(job.variants)
        return job

    def _geometry(self, height: int, width: int) -> tuple[Pair, Pair]:
        """Crop and stride for a variant of ``height``×``width``."""
        if self.config.mode == "slide":
            assert self.config.crop is not None and self.config.slide_stride is not None
            return tuple(self.config.crop), self.config.slide_stride  # type: ignore[return-value]
        if self.fixed_crop is not None:
            # whole-image mode on a fixed-size artifact: pad smaller images, tile larger ones
            return self.fixed_crop, self.fixed_crop
        return (height, width), (height, width)

    def _flush(self, batch: _Batch, jobs: deque[_Job]) -> Iterator[Prediction]:
        """Run one batch, add its outputs to their images, and yield every image now complete."""
        host, entries = batch.take()
        crop = (host.shape[2], host.shape[3])
        x = host.to(self.device, non_blocking=True).float()
        pad = self.pad_value.to(self.device)
        for i, (_, window) in enumerate(entries):
            if window.height < crop[0]:
                x[i, :, window.height :, :] = pad
            if window.width < crop[1]:
                x[i, :, :, window.width :] = pad
        probe = self.batch_probe if self.batch_probe is not None and not self.batch_probe.done else None
        start = self.clock() if probe is not None else 0.0
        with torch.inference_mode():
            out = self.predict(x)
        if probe is not None and len(entries) == batch.capacity:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            probe.record(len(entries), self.clock() - start)
        out = self._check_output(out, len(entries), crop)
        if self.output == "probs" and self.config.average == "probs":
            out = out.softmax(1)
        out = out.to(self.accumulate_device)
        weights = window_weights(crop, self.config.weights, sigma_scale=self.config.sigma)
        if weights is not None:
            weights = weights.to(self.accumulate_device)
        self.stats.batches += 1
        self.stats.crops += len(entries)
        for i, (variant, window) in enumerate(entries):
            self._accumulate(variant, window, out[i], weights)
        del out, x
        while jobs and jobs[0].remaining == 0:
            job = jobs.popleft()
            yield self._finish(job)

    def _check_output(self, out: Any, n: int, crop: Pair) -> Tensor:
        if not isinstance(out, Tensor) or out.ndim != 4 or out.shape[0] != n:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise UserError(
                f"the model returned {shape} for a batch of {n} crops; expected N×C×H×W outputs",
                fix="wrap the model so it maps N×3×H×W crops to N×C×H×W logits (adaptseg.models.DeployModule)",
            )
        if tuple(out.shape[-2:]) != crop:
            out = F.interpolate(out.float(), size=crop, mode="bilinear", align_corners=False)
        return out.float()

    def _accumulate(self, variant: _Variant, window: Window, out: Tensor, weights: Tensor | None) -> None:
        job = variant.job
        y0, y1, x0, x1 = window
        region = out[:, : y1 - y0, : x1 - x0]
        single = len(variant.windows) == 1
        if variant.acc is None:
            # channels-last models answer in N×H×W×C memory: accumulate in that layout too, so each
            # window adds whole contiguous rows instead of striding across every pixel
            shape = (out.shape[0], *variant.size)
            variant.acc = self._pool.zeros(shape, _channels_last(out), self.accumulate_device)
            nbytes = variant.acc.nbytes
            if not single and weights is not None:  # uniform weights divide by the analytic count map
                variant.norm = torch.zeros(
                    (1, *variant.size), dtype=torch.float32, device=self.accumulate_device
                )
                nbytes += variant.norm.nbytes
            self.stats.hold(nbytes, new_image=not job.started)
            job.started = True
        if single:  # one window covers the variant: nothing to average
            variant.acc[:, y0:y1, x0:x1] = region
        elif weights is None:
            variant.acc[:, y0:y1, x0:x1].add_(region)
        else:
            w = weights[: y1 - y0, : x1 - x0]
            variant.acc[:, y0:y1, x0:x1].addcmul_(region, w)
            variant.norm[0, y0:y1, x0:x1] += w
        variant.pending -= 1
        if variant.pending == 0:
            self._finish_variant(variant)

    def _finish_variant(self, variant: _Variant) -> None:
        """Normalise, upsample to the original size, softmax, unflip; merge into the image's result.

        A variant that is the whole result (no TTA, no resize) leaves its division by the count map
        and the softmax of logit averaging to the :class:`Prediction`.
        """
        job = variant.job
        acc, norm = variant.acc, variant.norm
        assert acc is not None
        variant.acc = variant.norm = None
        alone = len(job.variants) == 1 and tuple(acc.shape[-2:]) == job.size
        if norm is not None:
            acc.div_(norm)
            self.stats.release(norm.nbytes)
            del norm
        elif len(variant.windows) > 1:  # uniform weights: divide by how many windows cover each pixel
            counts = window_counts(*variant.size, variant.crop, variant.stride).to(
                acc.device, non_blocking=True
            )
            if alone:
                job.divisor = counts
            else:
                acc.div_(counts)
        if tuple(acc.shape[-2:]) != job.size:
            acc = self._replace(
                acc, F.interpolate(acc[None], size=job.size, mode="bilinear", align_corners=False)[0]
            )
        if self._softmax_at_finish and len(job.variants) > 1:  # TTA averages probabilities
            softmax_(acc, 0)
        if variant.flip:
            acc = self._replace(acc, acc.flip(-1))
        if job.merged is None:
            job.merged = acc
        else:
            job.merged.add_(acc)
            self.stats.release(acc.nbytes)
            self._pool.give(acc)
        job.remaining -= 1

    def _replace(self, old: Tensor, new: Tensor) -> Tensor:
        """Account for a buffer replaced by a new one (both exist for a moment); the old one is reused."""
        self.stats.hold(new.nbytes)
        self.stats.release(old.nbytes)
        self._pool.give(old)
        return new

    def _finish(self, job: _Job) -> Prediction:
        merged, variants = job.merged, len(job.variants)
        assert merged is not None
        if variants > 1:
            merged.div_(variants)
        job.merged = None
        job.variants.clear()
        self.stats.release(merged.nbytes, image_done=True)
        self.stats.images += 1
        return Prediction(
            job.index, job.id, merged,
            divisor=job.divisor, softmax_pending=self._softmax_at_finish and variants == 1, pool=self._pool,
        )  # fmt: skip


def _channels_last(crop_output: Tensor) -> bool:
    """Whether a C×h×w slice of a batch output is stored channels-last (stride 1 along C)."""
    return crop_output.shape[0] > 1 and crop_output.stride(0) == 1


def _unpack(index: int, item: Any) -> tuple[str, Any]:
    """``(id, source)`` of one input item (see :meth:`SlidingWindow.run`)."""
    if hasattr(item, "image") and hasattr(item, "id"):
        return str(item.id), item.image
    if isinstance(item, (str, Path)):
        return str(item), item
    if isinstance(item, np.ndarray):
        return str(index), item
    if isinstance(item, tuple) and len(item) == 2:
        return str(item[0]), item[1]
    raise TypeError(f"cannot read an image from {type(item).__name__}; pass (id, array|path|callable)")


def _materialise(source: Any) -> np.ndarray:
    """The uint8 RGB H×W×3 array behind an item's source."""
    if isinstance(source, (str, Path)):
        image = read_image(source)
    elif callable(source):
        image = source()
    else:
        image = source
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise UserError(
            f"expected an RGB uint8 H×W×3 image, got {desc}", fix="read images with adaptseg.io.read_image"
        )
    return image
