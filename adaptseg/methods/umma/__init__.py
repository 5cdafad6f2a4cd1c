"""UMMA — union-set multi-source model adaptation (Li et al., ECCV 2022), on the shared trainer and engine.

Spec: ``shared/methods/umma.md`` (written from the released code ``lzy7976/union-set-model-adaptation``).
A recipe (``train/umma/*.yaml``) chains the stages of umma.md §2; no stage has a loop of its own::

    s0_<source>   umma_source        stage 0: one source model per source, its data, its class set
    pl1           umma_pseudo_label  round 1: stage-0 models → engine → store + class thresholds
    joint         umma_joint         stage 1: A+B, C (heads only), D (backbones only), one optimiser step each
    pl2           umma_pseudo_label  round 2: the stage-1 model → engine → store + class thresholds
    final         umma_final         stage 2: new backbone g_fin + the stage-1 heads; A, B (heads), C (g_fin)

Modules: :mod:`~adaptseg.methods.umma.labels` (the label-setting table of §1 and the stage-0 / stage-1/2
remaps), :mod:`~adaptseg.methods.umma.losses` (the losses of §3.2–3.3), :mod:`~adaptseg.methods.umma.stages`
(the methods and the task). Shared parts: :mod:`adaptseg.methods.parts.thresholds` (bounded-memory
class-wise median thresholds), :mod:`adaptseg.methods.parts.softmax_losses` (maximum squares, softmax L1,
KL), :mod:`adaptseg.models.union` (the union-set model every stage trains and exports).

**The deployed model is one module** (§2.4, §6.1): ``final/student.safetensors`` is a
:class:`~adaptseg.models.union.UnionSegmentor` of g_fin and all S source heads whose 19-class output is
E, the per-class mean of the owning heads' logits; its weights file says so in its header, so
``adaptseg eval/infer/export`` rebuild it like any other student (TorchScript and ONNX, parity-checked).
Each earlier stage's ``student.safetensors`` is a 19-class model too: stage 0 lifts "others" uniformly
(the round-1 fusion with one source), stage 1 averages σ(E(g_s(x))) over the backbones (the round-2 fusion;
the release scores stage 1 as the mean of S per-class IoUs instead — logged only).

**Inputs** (§4): the release feeds BGR minus the Caffe mean, no std, no augmentation. The
``deeplabv2-r101-caffe`` preset already normalises that way (its importer flips ``conv1`` to RGB); for
any other preset the union model maps the preset's normalised input to 0–255 minus the Caffe mean inside
its forward (:func:`~adaptseg.models.union.input_affine`), so no other method sees this convention.
Target pipelines must be deterministic (resize/pad), as the pseudo-labels are made on the same pixels.

**Pseudo-labels** (§3.1) go through the sliding-window engine (whole image, eval mode) into the
pseudo-label store (raw argmax + uint8 confidence); the class thresholds come from a 19×256 histogram of
the stored confidences (exact order statistics of the quantised values; the release sorts ~25 GB of
float64) and are applied when a training stage reads a batch's labels. An addition, off by default:
``bn_statistics: target`` re-estimates the labelling models' BatchNorm statistics on the target images
before labelling (the release labels with the stage-0 models' source-domain statistics); the MiniCity
recipes switch it on (bench/RESULTS.md, "UMMA on MiniCity").

Quirks (shared/methods/README.md, fidelity policy 2). ``quirks: intended`` (default) is the behaviour
the authors meant; ``quirks: official`` reproduces the release where it changes numbers:

==========================================  =========================================================
released behaviour                          ``official`` / ``intended``
==========================================  =========================================================
ASPP ``forward`` returns inside its loop:   heads built with the first two rates only (d18/d24 never
only the d6 + d12 branches are summed       get a gradient, so leaving them out gives the same
(§4)                                        numbers) / all four rates summed
duplicated backbone parameters in the       per-parameter lr multiplier = how often the release's
optimiser (§6.4): bottleneck 3×,            generator yields it (:func:`released_lr_multipliers`;
downsample 4×, stem 1×                      torch 1.11 steps a duplicate that often, ≈ k× lr) / 1×
``zero_grad()`` writes zeros (§6.5):        stage 1 keeps zero-filled grads (``zero_grad_to_none =
frozen parts move by momentum + decay       False``), so the heads drift in D and the backbones in C /
                                            grads set to None, frozen parts stay put
best-on-val checkpoints in every stage      not a method switch: the Trainer's opt-in
(§6.6)                                      ``eval.select_best`` (off by default; the run records it)
==========================================  =========================================================

Kept in both modes because they are the method: BN in train mode with batch 1 (stage-2 source backbones
included: frozen, but their running statistics drift); MS divided by H·W only; step B's permutation is
any non-identity permutation (for S = 3 it may keep a fixed point); stage-0 void pixels trained as
"others" in p/n (§6.3 — the release's data, not a slip in the code). Departures: one SGD optimiser per
stage instead of one per source (identical updates, see :func:`released_optimizer`); thresholds on
confidences quantised to 1/255 (the store's precision); KL uses ``xlogy`` so a probability that
underflows to 0 adds 0 instead of NaN; UMMA refuses DDP (batch 1, one GPU in the release).
"""

from adaptseg.methods.umma import stages  # noqa: F401  (registers umma_source, umma_pseudo_label, umma_joint, umma_final)
