"""Optimisers with parameter groups, following mmcv's ``DefaultOptimizerConstructor`` (1.x).

``custom_keys`` maps a name fragment to ``lr_mult``/``decay_mult``. As in mmcv, the keys are tried
longest first (ties alphabetically) and **only the first key contained in a parameter's name applies**:
with DAFormer/ATP's ``{head: {lr_mult: 10}, norm: {decay_mult: 0}, pos_block: {decay_mult: 0}}`` a
``decode_head…norm…`` parameter gets lr×10 *and* keeps its weight decay (shared/methods/atp.md §4,
ddb.md §4). Every other parameter — BN, biases included — gets the base lr and weight decay (mmcv has no
implicit no-decay rule). Frozen parameters (``requires_grad=False``) are left out.

Groups are merged by ``(lr_mult, decay_mult)``; each group remembers its ``initial_lr`` for the schedule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from adaptseg.train.config import OptimSection, ParamRule


def sorted_custom_keys(custom_keys: Mapping[str, ParamRule]) -> list[str]:
    """mmcv's order: alphabetical, then by length, longest first (a stable sort keeps ties alphabetical)."""
    return sorted(sorted(custom_keys), key=len, reverse=True)


def rule_for(name: str, custom_keys: Mapping[str, ParamRule]) -> ParamRule:
    """The first custom key (in mmcv order) contained in ``name``, or the neutral rule."""
    for key in sorted_custom_keys(custom_keys):
        if key in name:
            return custom_keys[key]
    return ParamRule()


def named_trainable_parameters(models: Mapping[str, nn.Module] | nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, param)`` of every trainable parameter, each once; names are the model's own names.

    Several models (e.g. a student and a trained discriminator) share one optimiser; names stay local to
    their model so that ``head`` rules match as they do on a single mmseg model.
    """
    items = models.items() if isinstance(models, Mapping) else [("", models)]
    seen: set[int] = set()
    out = []
    for _, model in items:
        for name, param in model.named_parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                out.append((name, param))
    return out


def param_groups(named_params: Iterable[tuple[str, nn.Parameter]], cfg: OptimSection) -> list[dict]:
    """Parameter groups with absolute ``lr``/``weight_decay`` (and ``lr_mult``/``decay_mult`` for logs)."""
    groups: dict[tuple[float, float], dict] = {}
    for name, param in named_params:
        rule = rule_for(name, cfg.custom_keys)
        key = (rule.lr_mult, rule.decay_mult)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "lr": cfg.lr * rule.lr_mult,
                "initial_lr": cfg.lr * rule.lr_mult,
                "weight_decay": cfg.weight_decay * rule.decay_mult,
                "lr_mult": rule.lr_mult,
                "decay_mult": rule.decay_mult,
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return list(groups.values())


def build_optimizer(models: Mapping[str, nn.Module] | nn.Module, cfg: OptimSection) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay, optional Nesterov), Adam or AdamW over the trainable parameters of ``models``."""
    groups = param_groups(named_trainable_parameters(models), cfg)
    if not groups:
        raise ValueError("no trainable parameters")
    if cfg.type == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    if cfg.type == "adam":
        return torch.optim.Adam(
            groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    if cfg.type == "adamw":
        return torch.optim.AdamW(
            groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"unknown optimiser {cfg.type!r}")
