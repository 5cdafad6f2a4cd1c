"""DecoupleNet (Lai et al., ECCV 2022) on the shared trainer, engine and pseudo-label store.

Spec: ``shared/methods/decouplenet.md`` (written from ``dvlab-research/DecoupleNet``, HEAD 18f185a). A recipe
(``train/decouplenet/*.yaml``) chains the stages of §2; no stage has a loop of its own::

    source   source_only               phase 0: the source-only model (the release downloads one)
    phase1   decouplenet_phase1        g_src / g_tgt stems, D_low + D (LSGAN), SD with C_aux (two phases)
    soft     decouplenet_soft_labels   phase-1 target path → compact soft labels + <folder>_thresholds_p0.8.npy
    phase2   decouplenet_phase2        OEST: source CE + CE on (offline + online)/2, thresholded per class

Modules: :mod:`~adaptseg.methods.decouplenet.network` (the decoupled stems and C_aux around the recipe's
segmentor), :mod:`~adaptseg.methods.decouplenet.soft_labels` (forms, thresholds, fusion),
:mod:`~adaptseg.methods.decouplenet.stages`. Shared parts: :mod:`~adaptseg.methods.parts.discriminator`
(FCDiscriminator, LSGAN), :mod:`~adaptseg.methods.parts.confidence_bank` (FIFO class banks, descending
percentile, mean over ranks), :mod:`~adaptseg.methods.parts.geometry` (one resize/crop/flip for image, soft
label and prediction), :mod:`~adaptseg.methods.parts.torchvision_jitter`, and the existing losses, pseudo-label
and threshold parts.

**The deployed model** is every stage's ``student.safetensors``: the target path ``g_tgt → g_share → head →
C`` *is* the recipe's segmentor (its stem + layer1 is ``g_tgt``), so eval/infer/export open it as any model
of its preset. Phase 1 also writes ``source_stem.safetensors`` (``g_src``); C_aux and the discriminators are
not saved, as in the release.

**The release's conventions stay inside the method and its presets** (§4, §6): inputs are RGB/255 without
mean/std because ``deeplabv2-128-r101`` declares mean 0 / std 255 (the trainer, the engine and every export
normalise by the preset, so no other method sees it); the release's ignore index 250 is this project's 255
(labels leave the readers with 255; nothing is remapped); BN layers train with per-domain batches (each
forward is single-domain) and the shared layers' running statistics see every pass (phase 1: source, then
target; phase 2: source crop, whole target image, target crop), as in the release.

**DDP.** The SD banks are per rank; each rank computes its per-class thresholds on its own bank and the
vector is all-reduced and divided by the world size (``ctx.mean_across_ranks``, the Trainer's DDP layer),
so every rank applies one threshold, as the release does. The phases themselves call
the stems and shared layers directly (two single-domain passes through shared layers per backward), which
DDP does not synchronise, so the training stages refuse ``torchrun`` in one line for now (as UMMA's do);
the soft-label task is single-process.

Quirks (shared/methods/README.md, fidelity policy 2). ``quirks: intended`` is the default; in the released
code we found no evident slip that changes numbers on a run that completes, so ``quirks: official`` changes
nothing in DecoupleNet's stages. What the release does and how it is treated:

==========================================  =========================================================
released behaviour                          here
==========================================  =========================================================
best-val checkpoint on Cityscapes val       not a method switch: the Trainer's opt-in
(val every 1000 it; §2.1, §5)               ``eval.select_best`` (off by default; the run records it)
``get_thresholds.py`` breaks on a class     that class gets threshold 0 (keep every pixel of it, the
never predicted (§6)                        online bank's initial value); a crash is not reproduced
a stale ``*_cls2prob.pickle`` is reused     not reproduced (thresholds always come from the labels)
``generate_soft_label.py`` needs ≥ 2        not reproduced (one file per image at any batch size)
images per GPU (``squeeze()``)
online prediction in BN train mode; the     kept in both modes (it is the method's behaviour, §3b)
offline thresholds applied to fused conf
RandAugment "strong" image computed,        not computed
never used
class-balanced GTA5 list (§4)               ``data.source.class_balanced: {}`` in the GTA5/SYNTHIA
                                            recipes (:mod:`adaptseg.data.class_balanced`); off on
                                            MiniCity (its evidence was measured without it)
==========================================  =========================================================

Departures: soft labels are the release's logits at the output stride stored as float16 by default (half
the bytes; ``form: float32`` keeps the release's files, ``form: topk`` stores top-k probabilities in the
pseudo-label store, 17× smaller but measurably lossy, bench/RESULTS.md); the phase-2 jitter follows torchvision's rules on float tensors; image resizes are
bilinear on the normalised image (the release resizes PIL images).
"""

from adaptseg.methods.decouplenet import stages  # noqa: F401  (registers decouplenet_phase1, _soft_labels, _phase2)
