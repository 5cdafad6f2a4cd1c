"""The union-set segmentor: backbones shared by several heads that each own a subset of the classes.

UMMA (shared/methods/umma.md) trains one model per source, each with a head over its own class set L_s
(local ids 1..|L_s| in increasing trainId order, local 0 = "others": every class the source does not own;
setting ``f`` has no "others" channel and owns all 19). :class:`UnionSegmentor` holds B backbones and S
heads and turns their logits into one 19-class output, so every UMMA model — a stage-0 source model, the
stage-1 source models, the deployed stage-2 model — is one module that ``infer``, ``eval`` and ``export``
run like any other segmentor (umma.md §6.1: "export it as one module with S heads").

``combine`` says how the heads' outputs become 19 classes:

* ``"union"`` — the union ensemble E on **logits** (umma.md §3 notation): E_k = mean over the heads that
  own k of h_s[v_s(k)]; "others" never enters. With one backbone the output is E itself (the deployed
  model: g_fin + all source heads, §2.4); with several, ``log mean_b softmax(E(g_b(x)))`` (the stage-2
  pseudo-label fusion, §3.1).
* ``"lift"`` — the stage-1 pseudo-label fusion (§3.1): head s runs on backbone s only, its softmax is
  lifted to 19 classes (owned classes keep their probability, the "others" mass is spread uniformly over
  the non-owned ones) and the lifted maps are averaged; the output is ``log`` of the mean. A stage-0
  source model is this with one source, so it scores as a 19-class model too.

Every head's logits are upsampled to the input size (bilinear, ``align_corners=True``) before they are
combined, as the release's ``forward`` does, so the output is at the input resolution (``output_stride``
1) and the deploy module's own upsampling is the identity.

``input_scale``/``input_shift`` map the deploy contract's normalised input ``(x − mean)/std`` (the preset's)
to the release's convention, 0–255 minus the Caffe mean without std (umma.md §4): identity for the
``deeplabv2-r101-caffe`` preset (its importer already flips ``conv1`` to RGB), an affine map for other
presets. The map lives in the module, so training, evaluation and every export see the same input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: the Cityscapes classes every head's class set is a subset of
NUM_CLASSES = 19
#: the release's input mean (umma.md §4), per RGB channel: BGR (104.007, 116.669, 122.679) reversed
CAFFE_MEAN_RGB = (122.67891434, 116.66876762, 104.00698793)
#: the ``architecture`` value in a weights file's header that :func:`union_from_metadata` rebuilds
ARCHITECTURE = "union"
#: clamp before the log of averaged probabilities (a class with probability 0 everywhere)
_LOG_FLOOR = 1e-30
Combine = Literal["union", "lift"]


def head_index(owned: Sequence[int], others: bool) -> tuple[Tensor, Tensor]:
    """``(index, weight)`` over the 19 classes for one head: where class k sits in the head's output.

    With ``others`` (settings p, n) owned classes get local ids 1..|L| in increasing trainId order and
    every other class points at the "others" channel 0 with ``weight`` 1/#non-owned (the uniform spread
    of §3.1); owned classes have weight 1. Without it (setting f) the head's outputs are the classes
    themselves (``owned`` must then be all of them).
    """
    owned = sorted(set(int(k) for k in owned))
    if not others and owned != list(range(NUM_CLASSES)):
        raise ValueError(
            f"a head without an 'others' channel must own all {NUM_CLASSES} classes, got {owned}"
        )
    index = torch.zeros(NUM_CLASSES, dtype=torch.long)
    weight = torch.ones(NUM_CLASSES)
    missing = NUM_CLASSES - len(owned)
    for local, k in enumerate(owned, start=1 if others else 0):
        index[k] = local
    if others and missing:
        not_owned = torch.ones(NUM_CLASSES, dtype=torch.bool)
        not_owned[owned] = False
        weight[not_owned] = 1.0 / missing
    return index, weight


def owner_mask(class_sets: Sequence[Sequence[int]]) -> Tensor:
    """S×19 float mask: 1 where head s owns class k."""
    mask = torch.zeros(len(class_sets), NUM_CLASSES)
    for s, owned in enumerate(class_sets):
        mask[s, list(owned)] = 1.0
    return mask


def unowned_classes(class_sets: Sequence[Sequence[int]]) -> list[int]:
    """The classes no head owns (the union must be all 19 for the union ensemble, umma.md §1)."""
    covered = set().union(*(set(int(k) for k in owned) for owned in class_sets)) if class_sets else set()
    return [k for k in range(NUM_CLASSES) if k not in covered]


def union_ensemble(logits: Sequence[Tensor], indices: Tensor, owners: Tensor) -> Tensor:
    """E(f): per class, the mean of the owning heads' logits for it (umma.md §3 notation).

    ``logits[s]`` is head s's N×K_s×H×W output, ``indices`` the S×19 local ids (:func:`head_index`) and
    ``owners`` the S×19 mask (:func:`owner_mask`). "Others" never enters. Raises when a class has no owner.
    """
    counts = owners.sum(0)
    if bool((counts == 0).any()):
        missing = [int(k) for k in torch.nonzero(counts == 0).flatten()]
        raise ValueError(f"the union ensemble needs an owner for every class; nobody owns {missing}")
    return owner_average(logits, indices, owners)


def owner_average(logits: list[Tensor], indices: Tensor, owners: Tensor) -> Tensor:
    """:func:`union_ensemble` without the ownership check (every class is known to have an owner)."""
    total = logits[0].index_select(1, indices[0]) * owners[0].view(1, -1, 1, 1)
    for s in range(1, len(logits)):
        total = total + logits[s].index_select(1, indices[s]) * owners[s].view(1, -1, 1, 1)
    return total / owners.sum(0).view(1, -1, 1, 1)


def lift_probabilities(probs: Tensor, index: Tensor, weight: Tensor) -> Tensor:
    """One head's N×K×H×W softmax lifted to 19 classes (umma.md §3.1 stage 1): owned classes keep their
    probability, every non-owned class gets p[others] / #non-owned."""
    return probs.index_select(1, index) * weight.view(1, -1, 1, 1)


class UnionSegmentor(nn.Module):
    """B backbones and S heads over class sets, combined into 19-class outputs (module docstring).

    Args:
        backbones: modules returning a list of stage features (a :class:`Segmentor`'s ``backbone``).
        heads: modules ``forward(features) -> (logits, feature)`` with |L_s|+1 (or 19) outputs.
        class_sets: the trainIds each head owns, in head order.
        others: whether heads have the "others" channel 0 (settings p and n; not f).
        combine: ``"union"`` or ``"lift"`` (module docstring).
        input_scale, input_shift: per-channel affine map from the preset's normalised input to the release's.
        preset_name, summed_branches, release_input: how it was built (recorded in its weights file's header).
    """

    def __init__(
        self,
        backbones: Sequence[nn.Module],
        heads: Sequence[nn.Module],
        class_sets: Sequence[Sequence[int]],
        *,
        others: bool,
        combine: Combine = "union",
        input_scale: Sequence[float] = (1.0, 1.0, 1.0),
        input_shift: Sequence[float] = (0.0, 0.0, 0.0),
        preset_name: str = "",
        summed_branches: int | None = None,
        release_input: bool = False,
    ):
        super().__init__()
        if len(heads) != len(class_sets):
            raise ValueError(f"{len(heads)} heads but {len(class_sets)} class sets")
        if combine == "lift" and len(backbones) != len(heads):
            raise ValueError("combine='lift' pairs backbone s with head s: give as many backbones as heads")
        if combine == "union" and unowned_classes(class_sets):
            raise ValueError(
                f"the union ensemble needs an owner for every class; nobody owns {unowned_classes(class_sets)}"
            )
        if combine not in ("union", "lift"):
            raise ValueError(f"combine must be 'union' or 'lift', got {combine!r}")
        self.backbones = nn.ModuleList(backbones)
        self.heads = nn.ModuleList(heads)
        self.class_sets = [sorted(int(k) for k in owned) for owned in class_sets]
        self.others = bool(others)
        self.combine = combine
        self.lift = combine == "lift"
        self.num_classes = NUM_CLASSES
        # how the model was built, for its weights file's header (:func:`union_metadata`)
        self.preset_name = preset_name
        self.summed_branches = summed_branches
        self.release = release_input
        self.output_stride = 1
        self.log_floor = _LOG_FLOOR
        pairs = [head_index(owned, self.others) for owned in self.class_sets]
        self.register_buffer("indices", torch.stack([p[0] for p in pairs]), persistent=False)
        self.register_buffer("weights", torch.stack([p[1] for p in pairs]), persistent=False)
        self.register_buffer("owners", owner_mask(self.class_sets), persistent=False)
        self.register_buffer(
            "input_scale",
            torch.tensor(list(input_scale), dtype=torch.float32).view(1, 3, 1, 1),
            persistent=False,
        )
        self.register_buffer(
            "input_shift",
            torch.tensor(list(input_shift), dtype=torch.float32).view(1, 3, 1, 1),
            persistent=False,
        )

    # -- pieces the UMMA steps combine --------------------------------------------------------------
    def release_input(self, x: Tensor) -> Tensor:
        """The preset-normalised input in the release's convention (module docstring)."""
        return x * self.input_scale + self.input_shift

    def head_logits(self, s: int, features: list[Tensor], size: list[int]) -> Tensor:
        """Head ``s``'s logits on ``features``, upsampled to ``size`` (bilinear, align_corners=True)."""
        logits, _ = self.heads[s](features)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)

    def all_head_logits(self, features: list[Tensor], size: list[int]) -> list[Tensor]:
        """Every head's upsampled logits on the same features (scriptable loop)."""
        out: list[Tensor] = []
        for head in self.heads:
            logits, _ = head(features)
            out.append(F.interpolate(logits, size=size, mode="bilinear", align_corners=True))
        return out

    def ensemble(self, logits: list[Tensor]) -> Tensor:
        """E over the heads' logits (:func:`union_ensemble`)."""
        return owner_average(logits, self.indices, self.owners)

    # -- the 19-class output ----------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        x = self.release_input(x)
        size = [int(x.shape[2]), int(x.shape[3])]
        if self.lift:
            total = torch.zeros(1, device=x.device)
            for s, (backbone, head) in enumerate(zip(self.backbones, self.heads)):  # noqa: B905 (TorchScript)
                logits, _ = head(backbone(x))
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
                total = total + lift_probabilities(logits.softmax(1), self.indices[s], self.weights[s])
            return torch.log((total / len(self.heads)).clamp_min(self.log_floor))
        if len(self.backbones) == 1:
            return self.ensemble(self.all_head_logits(self.backbones[0](x), size))
        total = torch.zeros(1, device=x.device)
        for backbone in self.backbones:
            total = total + self.ensemble(self.all_head_logits(backbone(x), size)).softmax(1)
        return torch.log((total / len(self.backbones)).clamp_min(self.log_floor))

    @torch.jit.unused
    def weights_metadata(self) -> dict[str, str]:
        """Header entries that let :func:`union_from_metadata` rebuild this model from its weights file."""
        return union_metadata(self)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """The 19-class output as ``logits`` (the head feature space is per source, so none is offered)."""
        return {"logits": self(x)}


# ------------------------------------------------------------------------------------ building and files
def input_affine(
    mean: Sequence[float], std: Sequence[float], release: bool
) -> tuple[list[float], list[float]]:
    """``(scale, shift)`` taking ``(x − mean)/std`` to ``x − CAFFE_MEAN`` (``release``), else the identity."""
    if not release:
        return [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]
    return [float(s) for s in std], [float(m) - c for m, c in zip(mean, CAFFE_MEAN_RGB, strict=True)]


def build_union_model(
    preset,
    class_sets: Sequence[Sequence[int]],
    *,
    others: bool,
    backbones: int = 1,
    combine: Combine = "union",
    release_input: bool = True,
    summed_branches: int | None = None,
) -> UnionSegmentor:
    """A randomly initialised :class:`UnionSegmentor` from a model preset (its backbone and decode head).

    Head s has |L_s|+1 outputs (19 without ``others``). ``summed_branches`` keeps only the first rates of
    a DeepLab-v2 ASPP head (UMMA's released head sums 2 of its 4 branches; ``quirks: official``).
    """
    from adaptseg.models.presets import build_model, load_preset

    if not hasattr(preset, "decode_head"):
        preset = load_preset(preset)
    if summed_branches is not None:
        head = preset.decode_head
        dilations = list(head.options.get("dilations", (6, 12, 18, 24)))[:summed_branches]
        head = type(head)(**{**head.options, "type": head.type, "dilations": dilations})
        preset = preset.model_copy(update={"decode_head": head})
    if backbones not in (1, len(class_sets)):
        raise ValueError(f"give one backbone or one per head ({len(class_sets)}), not {backbones}")
    nets = [
        build_model(preset, num_classes=len(owned) + 1 if others else NUM_CLASSES) for owned in class_sets
    ]
    scale, shift = input_affine(preset.mean, preset.std, release_input)
    return UnionSegmentor(
        [n.backbone for n in nets[:backbones]],
        [n.decode_head for n in nets],
        class_sets,
        others=others,
        combine=combine,
        input_scale=scale,
        input_shift=shift,
        preset_name=preset.name,
        summed_branches=summed_branches,
        release_input=release_input,
    )


def union_metadata(model: UnionSegmentor) -> dict[str, str]:
    """What a weights file's header needs to rebuild ``model`` (:func:`union_from_metadata`)."""
    return {
        "architecture": ARCHITECTURE,
        "num_classes": str(NUM_CLASSES),
        "union": json.dumps(
            {
                "class_sets": model.class_sets,
                "others": model.others,
                "backbones": len(model.backbones),
                "combine": model.combine,
                "release_input": model.release,
                "summed_branches": model.summed_branches,
            }
        ),
    }


def union_from_metadata(preset, metadata: Mapping[str, str]) -> UnionSegmentor:
    """The :class:`UnionSegmentor` a weights file's header describes (random weights; load them next)."""
    spec = json.loads(metadata["union"])
    return build_union_model(
        preset,
        spec["class_sets"],
        others=spec["others"],
        backbones=spec["backbones"],
        combine=spec["combine"],
        release_input=spec["release_input"],
        summed_branches=spec.get("summed_branches"),
    )


__all__ = [
    "ARCHITECTURE",
    "CAFFE_MEAN_RGB",
    "NUM_CLASSES",
    "UnionSegmentor",
    "build_union_model",
    "head_index",
    "input_affine",
    "lift_probabilities",
    "owner_mask",
    "union_ensemble",
    "union_from_metadata",
    "union_metadata",
    "unowned_classes",
]
