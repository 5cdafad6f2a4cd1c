"""Class prototypes: DDB's capped-mean estimator and rectified ensemble, ATP's running mean and ProtoCL.

Spec rules implemented here:

* ddb.md §3 "Prototypes" (``class_features.py``):
  - :func:`class_mean_features`: per image and per class with ``≥ 10`` argmax-predicted pixels (no
    confidence threshold), the mean feature over those pixels (features and logits at the same size).
  - :class:`CappedMeanPrototypes`: in order, ``η_c ← (η_c·n_c + v)/(n_c + 1)``, then
    ``n_c ← min(n_c + 1, 3000)`` (``η₀ = 0``; a vector whose entries sum to 0 is skipped, the released
    test, which for the ReLU adapter features means an all-zero vector). Past the cap a new vector weighs
    1/3001. Shape ``[C, D]``.
* ddb.md §3 "CKD step":
  - :func:`prototype_weights`: ``w = softmax_c(−(d_c − min_c d_c)) = softmax_c(−d_c)`` with
    ``d_c = ‖f − η_c‖₂`` (temperature 1).
  - :func:`rectified_ensemble`: ``p̃_k = w_k ⊙ softmax(z_k)``, **not renormalised**;
    ``P = mean_k p̃_k``; ``ŷ = argmax_c P``.
* atp.md §3 P.2 (SePiCo ``ProtoEstimator``), :class:`CumulativeMeanPrototypes`: per batch, the class means
  ``m̄_c`` and counts ``n_c`` of the valid cells; ``w_c = n_c/(n_c + N_c)`` (0 when both are 0),
  ``μ_c ← (1 − w_c)·μ_c + w_c·m̄_c``, ``N_c += n_c`` — the exact cumulative mean; ``μ`` starts at 0 and
  unseen classes stay 0. SePiCo's covariance is tracked there but never used, so it is not kept here.
* atp.md §3 P.3 (SePiCo ``proto_contrastive``), :func:`proto_contrastive_loss`: over the valid cells,
  ``CE(f·μᵀ / 100, y)`` averaged over cells — it *divides* by ``contrast_temp = 100``; ``f`` is the
  (already L2-normalised) projection feature, ``μ`` is not normalised. With ``use_reg``:
  ``+ reg_weight · Σ_c log softmax(f̄·μᵀ/100)_c / (C·ln C)``, ``f̄`` = mean valid feature of the batch
  (the term is ≤ −1 and is *added*, exactly as released). No valid cell → 0.

Quirk switches: none. Saving and loading prototypes is the method's job; both estimators expose
``prototypes`` and ``counts`` tensors through ``state_dict``/``load_state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptseg.data.labels import IGNORE_INDEX

DDB_MIN_PIXELS = 10
DDB_COUNT_CAP = 3000
PROTO_CONTRAST_TEMPERATURE = 100.0


# ---------------------------------------------------------------- DDB (ddb.md §3)


def class_mean_features(
    features: Tensor, logits: Tensor, *, min_pixels: int = DDB_MIN_PIXELS
) -> tuple[Tensor, Tensor]:
    """Per image and per predicted class with ``≥ min_pixels`` pixels, the mean feature (ddb.md §3).

    Args:
        features: N×D×H×W features (already resized to the logits' size).
        logits: N×C×H×W logits; the class of a pixel is ``argmax_c``.

    Returns:
        ``(vectors, class_ids)``: K×D means and their K class ids, image-major then class-ascending — the
        order in which the released script updates its prototypes.
    """
    n, d = features.shape[:2]
    c = logits.shape[1]
    if features.shape[-2:] != logits.shape[-2:]:
        raise ValueError(f"features {tuple(features.shape)} and logits {tuple(logits.shape)} differ in size")
    onehot = F.one_hot(logits.argmax(dim=1).reshape(n, -1), num_classes=c).to(features.dtype)  # N×HW×C
    sums = torch.bmm(onehot.transpose(1, 2), features.reshape(n, d, -1).transpose(1, 2))  # N×C×D
    counts = onehot.sum(dim=1)  # N×C
    keep = counts >= min_pixels
    image_index, class_index = keep.nonzero(as_tuple=True)
    vectors = sums[image_index, class_index] / counts[image_index, class_index].unsqueeze(1)
    return vectors, class_index


class CappedMeanPrototypes:
    """DDB prototypes (ddb.md §3 "Prototypes"): a running mean per class whose count is capped at 3000."""

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        cap: int = DDB_COUNT_CAP,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        self.cap = cap
        self.prototypes = torch.zeros(num_classes, dim, dtype=dtype, device=device)
        self.counts = torch.zeros(num_classes, dtype=dtype, device=device)

    @torch.no_grad()
    def update(self, vectors: Tensor, class_ids: Tensor) -> None:
        """Fold K×D ``vectors`` into the prototypes one by one, in order (``η ← (η·n + v)/(n + 1)``)."""
        vectors = vectors.to(self.prototypes.device, self.prototypes.dtype)
        for v, c in zip(vectors, class_ids.tolist(), strict=True):
            n = self.counts[c]
            skip = v.sum() == 0
            self.prototypes[c] = torch.where(skip, self.prototypes[c], (self.prototypes[c] * n + v) / (n + 1))
            self.counts[c] = torch.where(skip, n, torch.clamp(n + 1, max=self.cap))

    def update_from_predictions(
        self, features: Tensor, logits: Tensor, *, min_pixels: int = DDB_MIN_PIXELS
    ) -> None:
        """:func:`class_mean_features` then :meth:`update` (one batch of the released script)."""
        self.update(*class_mean_features(features, logits, min_pixels=min_pixels))

    def state_dict(self) -> dict[str, Tensor]:
        """Copies of ``prototypes`` (C×D) and ``counts`` (C,), ready for safetensors."""
        return {"prototypes": self.prototypes.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore ``prototypes`` and ``counts``; shapes must match (ValueError otherwise)."""
        _load_into(self, state)


def prototype_distances(features: Tensor, prototypes: Tensor) -> Tensor:
    """``d_c = ‖f − η_c‖₂`` for N×D×H×W features and C×D prototypes → N×C×H×W.

    ``torch.cdist`` on direct differences (not the ``‖a‖² − 2ab + ‖b‖²`` expansion, which loses precision
    near a prototype): ~10× faster on a CPU than a difference tensor per class, and without the per-class
    N×D×H×W temporaries (1 GiB each at 4×256×512²).
    """
    n, d, h, w = features.shape
    flat = features.float().permute(0, 2, 3, 1).reshape(n, h * w, d)
    protos = prototypes.to(flat.device, flat.dtype).unsqueeze(0).expand(n, -1, -1)
    distances = torch.cdist(flat, protos, compute_mode="donot_use_mm_for_euclid_dist")
    return distances.reshape(n, h, w, -1).permute(0, 3, 1, 2)


def prototype_weights(features: Tensor, prototypes: Tensor) -> Tensor:
    """ProDA/DDB prototype weights ``softmax_c(−(d_c − min_c d_c))`` (N×C×H×W; ddb.md §3 CKD step)."""
    distances = prototype_distances(features, prototypes)
    distances = distances - distances.min(dim=1, keepdim=True).values
    return torch.softmax(-distances, dim=1)


def rectified_ensemble(logits: Sequence[Tensor], weights: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """DDB's prototype-rectified ensemble of K teachers (ddb.md §3 CKD step).

    ``p̃_k = w_k ⊙ softmax(z_k)`` (not renormalised), ``P = mean_k p̃_k``; returns ``(P, argmax_c P)``.
    """
    if len(logits) == 0 or len(logits) != len(weights):
        raise ValueError(f"need as many weight maps as teachers, got {len(logits)} and {len(weights)}")
    rectified = [w * torch.softmax(z, dim=1) for z, w in zip(logits, weights, strict=True)]
    ensemble = torch.stack(rectified).mean(dim=0)
    return ensemble, ensemble.argmax(dim=1)


# ---------------------------------------------------------------- ATP / SePiCo (atp.md §3 P.2–P.3)


def valid_cell_features(
    features: Tensor, labels: Tensor, *, ignore_index: int = IGNORE_INDEX
) -> tuple[Tensor, Tensor]:
    """Flatten N×D×h×w features and N×h×w labels to the M×D features and M labels of non-ignored cells."""
    if features.shape[-2:] != labels.shape[-2:]:
        raise ValueError(
            f"features {tuple(features.shape)} and labels {tuple(labels.shape)} differ in size; "
            "down-scale the labels first (pseudo.downscale_label_ratio)"
        )
    flat = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    flat_labels = labels.reshape(-1)
    keep = flat_labels != ignore_index
    return flat[keep], flat_labels[keep].long()


class CumulativeMeanPrototypes:
    """ATP/SePiCo ``ProtoEstimator`` means (atp.md §3 P.2): the exact count-weighted mean of every feature seen."""

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        self.prototypes = torch.zeros(num_classes, dim, dtype=dtype, device=device)
        self.counts = torch.zeros(num_classes, dtype=dtype, device=device)

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor, *, ignore_index: int = IGNORE_INDEX) -> None:
        """Fold in M×D features with their M class labels; cells labelled ``ignore_index`` are dropped."""
        num_classes = self.prototypes.shape[0]
        keep = labels != ignore_index
        features, labels = features[keep], labels[keep]
        features = features.detach().to(self.prototypes.device, self.prototypes.dtype)
        onehot = F.one_hot(labels.to(self.prototypes.device).long(), num_classes=num_classes).to(
            features.dtype
        )
        batch_counts = onehot.sum(dim=0)
        batch_means = (onehot.t() @ features) / torch.clamp(batch_counts, min=1).unsqueeze(1)
        total = batch_counts + self.counts
        weight = torch.where(total > 0, batch_counts / torch.clamp(total, min=1), torch.zeros_like(total))
        self.prototypes = self.prototypes * (1 - weight).unsqueeze(1) + batch_means * weight.unsqueeze(1)
        self.counts = self.counts + batch_counts

    def state_dict(self) -> dict[str, Tensor]:
        """Copies of ``prototypes`` (C×D) and ``counts`` (C,), ready for safetensors."""
        return {"prototypes": self.prototypes.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore ``prototypes`` and ``counts``; shapes must match (ValueError otherwise)."""
        _load_into(self, state)


def _load_into(estimator: CappedMeanPrototypes | CumulativeMeanPrototypes, state: dict[str, Tensor]) -> None:
    for key in ("prototypes", "counts"):
        mine = getattr(estimator, key)
        if key not in state or tuple(state[key].shape) != tuple(mine.shape):
            got = tuple(state[key].shape) if key in state else "missing"
            raise ValueError(f"prototype state {key!r}: expected shape {tuple(mine.shape)}, got {got}")
        setattr(estimator, key, state[key].to(mine.device, mine.dtype).clone())


def proto_contrastive_loss(
    features: Tensor,
    labels: Tensor,
    prototypes: Tensor,
    *,
    temperature: float = PROTO_CONTRAST_TEMPERATURE,
    use_reg: bool = False,
    reg_weight: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """SePiCo ProtoCL (atp.md §3 P.3): CE of ``f·μᵀ / temperature`` over valid cells, plus the optional regulariser.

    Args:
        features: N×D×h×w projection features (L2-normalised by the projection head), with gradient.
        labels: N×h×w labels at the feature size (``downscale_label_ratio``), 255 = ignore.
        prototypes: C×D class means (treated as constants).
        use_reg: add ``reg_weight · Σ_c log softmax(f̄·μᵀ/temperature)_c / (C·ln C)``.
    """
    feats, target = valid_cell_features(features, labels, ignore_index=ignore_index)
    if feats.shape[0] == 0:
        return features.sum() * 0.0
    feats = feats.to(torch.promote_types(feats.dtype, torch.float32))
    protos = prototypes.detach().to(feats.device, feats.dtype)
    loss = F.cross_entropy(feats @ protos.t() / temperature, target)
    if use_reg:
        num_classes = protos.shape[0]
        similarity = feats.mean(dim=0, keepdim=True) @ protos.t() / temperature
        loss = loss + reg_weight * torch.log_softmax(similarity, dim=1).sum() / (
            num_classes * math.log(num_classes)
        )
    return loss
