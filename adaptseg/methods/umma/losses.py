"""UMMA's per-phase losses (umma.md §3.2, §3.3) on a :class:`~adaptseg.models.union.UnionSegmentor`.

Each function computes one phase's loss from a batch in the release's input convention (``x`` already
through :meth:`UnionSegmentor.release_input`) and a 19-class pseudo-label ``y`` (255 ignored); every head
output is upsampled to the label size (align_corners=True) inside the model, CE averages over valid
pixels (``torch.nn.CrossEntropyLoss(ignore_index=255)``), MS/L1/KL are
:mod:`adaptseg.methods.parts.softmax_losses`. Which parameters a phase trains is the Trainer's
``Phase.frozen``, not these functions' business.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from adaptseg.methods.parts.losses import cross_entropy
from adaptseg.methods.parts.softmax_losses import kl_to_target, max_squares, softmax_l1
from adaptseg.methods.umma.labels import local_lut
from adaptseg.models.union import UnionSegmentor


def ce(logits: Tensor, target: Tensor) -> Tensor:
    """CE over the non-255 pixels (the release's ``CrossEntropyLoss(ignore_index=255)``)."""
    return cross_entropy(logits, target, normalize="valid_pixels", align_corners=True)


def local_targets(model: UnionSegmentor, y: Tensor) -> list[Tensor]:
    """y^s = map_s(y) for every head (255 kept, non-owned → "others"; umma.md §3 notation)."""
    out = []
    for owned in model.class_sets:
        lut = torch.as_tensor(local_lut(owned, model.others, void_to_others=False), device=y.device).long()
        out.append(lut[y.long()])
    return out


def shared_class_l1(logits: Sequence[Tensor], model: UnionSegmentor) -> Tensor:
    """L_cmc2 / L_cons (umma.md §3.2 B, D): over classes owned by ≥ 2 heads, Σ_owners mean_{n,h,w} |z_s[v_s(c)] − m_c|,
    divided by the number of shared classes; m_c is the owners' mean logit. 0 when no class is shared (setting n)."""
    owners = model.owners
    shared = owners.sum(0) >= 2
    if not bool(shared.any()):
        return logits[0].sum() * 0.0
    lifted = torch.stack([z.index_select(1, model.indices[s]) for s, z in enumerate(logits)])  # S×N×19×H×W
    mask = owners.view(len(logits), 1, -1, 1, 1)
    mean = (lifted * mask).sum(0) / owners.sum(0).clamp_min(1).view(1, -1, 1, 1)
    per_class = ((lifted - mean).abs() * mask).mean(dim=(1, 3, 4)).sum(0)  # 19: Σ_s mean_{n,h,w}
    return per_class[shared].sum() / shared.sum()


def nonidentity_permutation(count: int, generator: torch.Generator) -> list[int]:
    """A random permutation of ``range(count)`` that is not the identity (reshuffled until it differs; umma.md §3.2 B).

    For two sources this is the swap; for three it may keep a fixed point (§6.7).
    """
    if count < 2:
        raise ValueError("a non-identity permutation needs at least 2 elements")
    while True:
        perm = torch.randperm(count, generator=generator).tolist()
        if perm != list(range(count)):
            return perm


# --------------------------------------------------------------------------------------------- stage 1
def pseudo_label_loss(model: UnionSegmentor, x: Tensor, y: Tensor) -> Tensor:
    """Σ_s L_A^s = CE(h_s(f_s), y^s) + CE(E(f_s), y) + MS(h_s(f_s)) + MS(E(f_s)) (umma.md §3.2 A)."""
    size = list(y.shape[-2:])
    targets = local_targets(model, y)
    total = x.new_zeros(())
    for s, backbone in enumerate(model.backbones):
        logits = model.all_head_logits(backbone(x), size)  # every head on backbone s's features
        union = model.ensemble(logits)
        total = total + ce(logits[s], targets[s]) + ce(union, y) + max_squares(logits[s]) + max_squares(union)
    return total


def cross_model_consistency(
    model: UnionSegmentor, x: Tensor, permutation: Sequence[int], size: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """``(L_cmc1, L_cmc2)`` (umma.md §3.2 B): heads on their own vs the permuted backbones' fresh features."""
    size = list(size)
    features = [backbone(x) for backbone in model.backbones]
    own = [model.head_logits(s, features[s], size) for s in range(len(model.heads))]
    swapped = [model.head_logits(s, features[permutation[s]], size) for s in range(len(model.heads))]
    return softmax_l1(model.ensemble(own), model.ensemble(swapped)), shared_class_l1(swapped, model)


def classifier_loss(model: UnionSegmentor, x: Tensor, y: Tensor) -> Tensor:
    """Σ_s L_C^s = CE(h_s(f_s), y^s) − 1/(S−1) Σ_{s'≠s} mean|σ(h_s(f_s')) − σ(h_s(f_s))| (umma.md §3.2 C).

    The features are detached: only the heads learn here, and the second term *maximises* each head's
    disagreement across backbones.
    """
    size = list(y.shape[-2:])
    targets = local_targets(model, y)
    features = [[f.detach() for f in backbone(x)] for backbone in model.backbones]
    sources = len(model.heads)
    total = x.new_zeros(())
    for s in range(sources):
        own = model.head_logits(s, features[s], size)
        others = [model.head_logits(s, features[o], size) for o in range(sources) if o != s]
        total = total + ce(own, targets[s]) - sum(softmax_l1(z, own) for z in others) / (sources - 1)
    return total


def backbone_loss(model: UnionSegmentor, x: Tensor, y: Tensor) -> Tensor:
    """Σ_s L_D^s = 1/(S−1) Σ_{s'≠s} [CE(h_s'(f), y^s') + MS(h_s'(f))] + L_cons(f), f = g_s(x) (umma.md §3.2 D)."""
    size = list(y.shape[-2:])
    targets = local_targets(model, y)
    sources = len(model.heads)
    total = x.new_zeros(())
    for s, backbone in enumerate(model.backbones):
        logits = model.all_head_logits(backbone(x), size)
        cross = sum(ce(logits[o], targets[o]) + max_squares(logits[o]) for o in range(sources) if o != s)
        total = total + cross / (sources - 1) + shared_class_l1(logits, model)
    return total


# --------------------------------------------------------------------------------------------- stage 2
def final_model_loss(student: UnionSegmentor, x: Tensor, y: Tensor) -> Tensor:
    """CE(E(f), ŷ2) + MS(E(f)) with f = g_fin(x) (umma.md §3.3 A)."""
    union = student.ensemble(student.all_head_logits(student.backbones[0](x), list(y.shape[-2:])))
    return ce(union, y) + max_squares(union)


def source_heads_loss(
    student: UnionSegmentor, source_backbones: nn.ModuleList, x: Tensor, y: Tensor
) -> Tensor:
    """Σ_s CE(h_s(g_s(x)), map_s(ŷ2)) (umma.md §3.3 B): each head on its own (frozen) source backbone."""
    size = list(y.shape[-2:])
    targets = local_targets(student, y)
    total = x.new_zeros(())
    for s, backbone in enumerate(source_backbones):
        total = total + ce(student.head_logits(s, backbone(x), size), targets[s])
    return total


def distillation_loss(student: UnionSegmentor, source_backbones: nn.ModuleList, x: Tensor) -> Tensor:
    """1/S Σ_s KL(σ(h_s(g_s(x))) ‖ σ(h_s(g_fin(x)))) per H·W (umma.md §3.3 C)."""
    size = list(x.shape[-2:])
    final = student.backbones[0](x)
    total = x.new_zeros(())
    for s, backbone in enumerate(source_backbones):
        with torch.no_grad():
            target = student.head_logits(s, backbone(x), size)
        total = total + kl_to_target(target, student.head_logits(s, final, size))
    return total / len(source_backbones)


__all__ = [
    "backbone_loss",
    "ce",
    "classifier_loss",
    "cross_model_consistency",
    "distillation_loss",
    "final_model_loss",
    "local_targets",
    "nonidentity_permutation",
    "pseudo_label_loss",
    "shared_class_l1",
    "source_heads_loss",
]
