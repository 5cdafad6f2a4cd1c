"""UMMA's rules on toy inputs (shared/methods/umma.md §7): label table and remaps, lifting, union
ensemble, step-B permutation, the losses' zero cases, and the quirk switches that change the model."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from adaptseg.errors import UserError
from adaptseg.methods.umma import losses as L
from adaptseg.methods.umma.labels import LABEL_SETS, adaptation_target, label_sets, local_lut, stage0_target
from adaptseg.methods.umma.stages import released_lr_multipliers
from adaptseg.models.union import (
    CAFFE_MEAN_RGB,
    UnionSegmentor,
    build_union_model,
    head_index,
    input_affine,
    lift_probabilities,
    owner_mask,
    union_ensemble,
)

ROAD, PERSON, CAR = 0, 11, 13


# ------------------------------------------------------------------------------------------- mappings
@pytest.mark.parametrize(
    ("setting", "sources"), sorted(LABEL_SETS), ids=lambda v: v if isinstance(v, str) else "+".join(v)
)
def test_every_row_of_the_table_covers_19_classes_with_contiguous_ordered_local_ids(setting, sources):
    sets = label_sets(setting, sources)
    assert set().union(*map(set, sets)) == set(range(19))
    for owned in sets:
        lut = local_lut(owned, setting != "f", void_to_others=False)
        assert (
            [int(lut[k]) for k in owned] == list(range(1, len(owned) + 1))
            if setting != "f"
            else list(range(19))
        )


def test_n_with_three_sources_gives_synscapes_13_to_16_as_1_to_4_and_the_rest_others():
    sets = dict(
        zip(["gta5", "synscapes", "synthia"], label_sets("n", ["gta5", "synscapes", "synthia"]), strict=True)
    )
    assert sets["gta5"] == tuple(range(11)) and sets["synthia"] == (11, 12, 17, 18)
    label = np.arange(19, dtype=np.uint8)
    mapped = adaptation_target(label, sets["synscapes"], "n")
    assert {k: int(mapped[k]) for k in (13, 14, 15, 16)} == {13: 1, 14: 2, 15: 3, 16: 4}
    assert all(int(mapped[k]) == 0 for k in range(19) if k not in (13, 14, 15, 16))


def test_the_p_table_follows_the_spec():
    syn, gta = label_sets("p", ["synscapes", "gta5"])
    assert PERSON not in syn and CAR in syn and CAR not in gta and PERSON in gta and 17 in gta
    synthia, other = label_sets("p", ["synthia", "gta5"])
    assert 9 not in synthia and CAR not in synthia and 9 in other and 17 not in other


def test_void_is_others_in_stage_0_under_p_and_n_but_stays_ignored_in_stages_1_2_and_in_f():
    owned = label_sets("p", ["synscapes", "gta5"])[0]
    label = torch.tensor([[ROAD, 255, PERSON]])
    assert stage0_target(label, owned, "p").tolist() == [
        [1, 0, 0]
    ]  # void → others; person not owned → others
    assert adaptation_target(label, owned, "p").tolist() == [[1, 255, 0]]
    assert stage0_target(label, tuple(range(19)), "f").tolist() == [[ROAD, 255, PERSON]]


def test_a_union_that_misses_a_class_is_one_error_naming_the_classes():
    with pytest.raises(UserError, match=r"no source owns 11 person, 12 rider") as err:
        label_sets("n", ["gta5", "synscapes"], {"gta5": list(range(11)), "synscapes": list(range(13, 19))})
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="not 2 or 3 distinct sources"):
        label_sets("p", ["gta5", "mapillary"])
    with pytest.raises(ValueError, match="nobody owns"):
        build_union_model("tiny-deeplabv2", [list(range(11)), list(range(13, 19))], others=True)


# ------------------------------------------------------------------------------------ lifting and union
def lifted_pixel():
    """The spec's example, n setting: GTA5 [others 0.4, road 0.6], Synscapes [others 0.2, car 0.8]."""
    gta, syn = label_sets("n", ["gta5", "synscapes"])
    p_gta = torch.zeros(1, len(gta) + 1, 1, 1)
    p_gta[0, 0], p_gta[0, 1] = 0.4, 0.6
    p_syn = torch.zeros(1, len(syn) + 1, 1, 1)
    p_syn[0, 0], p_syn[0, 1 + syn.index(CAR)] = 0.2, 0.8
    return (gta, p_gta), (syn, p_syn)


def test_lifting_spreads_others_uniformly_and_the_mean_picks_car():
    (gta, p_gta), (syn, p_syn) = lifted_pixel()
    lifted_gta = lift_probabilities(p_gta, *head_index(gta, True))[0, :, 0, 0]
    lifted_syn = lift_probabilities(p_syn, *head_index(syn, True))[0, :, 0, 0]
    assert torch.allclose(lifted_gta[11:], torch.full((8,), 0.05)) and lifted_gta[ROAD] == pytest.approx(0.6)
    assert torch.allclose(lifted_syn[:11], torch.full((11,), 0.2 / 11))
    mean = (lifted_gta + lifted_syn) / 2
    assert mean[CAR].item() == pytest.approx(0.425) and mean[ROAD].item() == pytest.approx(0.30909, abs=1e-5)
    assert int(mean.argmax()) == CAR and mean.sum().item() == pytest.approx(1.0)


class Fixed(nn.Module):
    """A 'head' that returns fixed logits whatever the features (to drive the union model by hand)."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, features):
        return self.logits.expand(features[-1].shape[0], -1, -1, -1), features[-1]


class Passthrough(nn.Module):
    def forward(self, x):
        return [x]


def test_the_union_model_with_lift_fuses_exactly_as_the_spec_example():
    (gta, p_gta), (syn, p_syn) = lifted_pixel()
    model = UnionSegmentor(
        [Passthrough(), Passthrough()],
        [Fixed(p_gta.clamp_min(1e-12).log()), Fixed(p_syn.clamp_min(1e-12).log())],
        [gta, syn],
        others=True,
        combine="lift",
    )
    probs = model(torch.zeros(1, 3, 1, 1)).exp()[0, :, 0, 0]
    assert probs[CAR].item() == pytest.approx(0.425) and probs[ROAD].item() == pytest.approx(
        0.30909, abs=1e-5
    )


def test_the_union_ensemble_averages_logits_over_owners_only():
    syn, gta = label_sets("p", ["synscapes", "gta5"])
    z_syn, z_gta = torch.randn(1, len(syn) + 1, 2, 2), torch.randn(1, len(gta) + 1, 2, 2)
    indices = torch.stack([head_index(syn, True)[0], head_index(gta, True)[0]])
    union = union_ensemble([z_syn, z_gta], indices, owner_mask([syn, gta]))
    assert torch.allclose(union[:, ROAD], (z_syn[:, 1] + z_gta[:, 1]) / 2)
    assert torch.allclose(union[:, PERSON], z_gta[:, 12]) and torch.allclose(union[:, CAR], z_syn[:, 12])
    with pytest.raises(ValueError, match=r"nobody owns \[11, 12, 17, 18\]"):
        union_ensemble([z_syn], indices[:1], owner_mask([syn]))
    # the deployed module (one backbone, all heads) outputs E itself
    model = UnionSegmentor([Passthrough()], [Fixed(z_syn), Fixed(z_gta)], [syn, gta], others=True)
    assert torch.allclose(model(torch.zeros(1, 3, 2, 2)), union)


# ------------------------------------------------------------------------------- permutation and zeros
@pytest.mark.parametrize("sources", [2, 3])
def test_the_step_b_permutation_is_never_the_identity(sources):
    generator = torch.Generator().manual_seed(0)
    draws = [L.nonidentity_permutation(sources, generator) for _ in range(1000)]
    assert all(sorted(p) == list(range(sources)) and p != list(range(sources)) for p in draws)
    if sources == 2:
        assert all(p == [1, 0] for p in draws)
    else:  # not a derangement: some draws keep a fixed point (umma.md §6.7)
        assert any(any(p[i] == i for i in range(3)) for p in draws)


def tiny_union(setting="p", sources=("synscapes", "gta5"), backbones=2, **kwargs):
    torch.manual_seed(0)
    return build_union_model(
        "tiny-deeplabv2",
        label_sets(setting, list(sources)),
        others=setting != "f",
        backbones=backbones,
        **kwargs,
    )


def test_cmc1_is_zero_for_identical_backbones_and_cmc2_is_zero_without_shared_classes():
    model = tiny_union()
    model.backbones[1] = copy.deepcopy(model.backbones[0])
    x = torch.randn(1, 3, 32, 64)
    cmc1, cmc2 = L.cross_model_consistency(model.eval(), x, [1, 0], (32, 64))
    assert cmc1.item() == pytest.approx(0.0, abs=1e-7) and cmc2.item() > 0  # shared classes in p
    disjoint = tiny_union("n").eval()
    assert L.cross_model_consistency(disjoint, x, [1, 0], (32, 64))[1].item() == 0.0


def test_kl_to_the_source_models_is_zero_when_the_final_backbone_is_theirs():
    model = tiny_union(backbones=1).eval()
    sources = nn.ModuleList([copy.deepcopy(model.backbones[0]), copy.deepcopy(model.backbones[0])]).eval()
    assert L.distillation_loss(model, sources, torch.randn(1, 3, 32, 64)).item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_shared_class_l1_is_the_mean_deviation_from_the_owners_mean_logit():
    syn, gta = label_sets("p", ["synscapes", "gta5"])
    model = UnionSegmentor(
        [Passthrough()],
        [Fixed(torch.zeros(1, 16, 1, 1)), Fixed(torch.zeros(1, 16, 1, 1))],
        [syn, gta],
        others=True,
    )
    z_syn, z_gta = torch.zeros(1, 16, 1, 1), torch.zeros(1, 16, 1, 1)
    z_syn[0, 1], z_gta[0, 1] = 2.0, 0.0  # road (shared): |2−1| + |0−1| = 2; every other shared class 0
    shared = int((owner_mask([syn, gta]).sum(0) >= 2).sum())
    assert L.shared_class_l1([z_syn, z_gta], model).item() == pytest.approx(2.0 / shared)


# ------------------------------------------------------------------------------------------- quirks
def test_official_heads_sum_two_aspp_branches_and_intended_heads_all_four():
    assert len(tiny_union(summed_branches=2).heads[0].aspp_modules) == 2
    assert len(tiny_union().heads[0].aspp_modules) == 4


def test_released_lr_multipliers_count_the_generators_duplicates():
    counts = released_lr_multipliers(tiny_union(backbones=1))
    assert counts["backbones.0.layer1.0.conv1.weight"] == 3  # layer1, the block, the conv
    assert counts["backbones.0.layer2.0.downsample.0.weight"] == 4  # layer2, the block, downsample, the conv
    assert not any(name.startswith("heads.") for name in counts)  # the head's generator yields once


def test_the_release_input_map_turns_preset_normalisation_into_caffe_mean_subtraction():
    model = tiny_union(backbones=1)
    rgb = torch.rand(1, 3, 4, 4) * 255
    mean, std = (
        torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1),
        torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1),
    )
    caffe = torch.tensor([122.67891434, 116.66876762, 104.00698793]).view(1, 3, 1, 1)
    assert torch.allclose(model.release_input((rgb - mean) / std), rgb - caffe, atol=1e-3)
    # the Caffe-style preset (RGB minus the Caffe mean, std 1) already is the release's convention
    assert input_affine(CAFFE_MEAN_RGB, (1.0, 1.0, 1.0), True) == ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
