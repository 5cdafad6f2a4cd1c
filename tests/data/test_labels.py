"""Label maps against shared/datasets.md §0 and cityscapesScripts' own table."""

from __future__ import annotations

import numpy as np

from adaptseg.data import labels as L


def test_cityscapes_map_matches_cityscapesscripts():
    from cityscapesscripts.helpers.labels import labels as cs_labels

    for label in cs_labels:
        if label.id < 0:
            continue
        expected = label.trainId if label.trainId not in (-1, 255) else 255
        assert L.CITYSCAPES_LUT[label.id] == expected, label.name
        if expected != 255:
            assert L.CLASSES[expected] == label.name
            assert tuple(L.PALETTE[expected]) == label.color


def test_trainid_to_labelid_inverts_the_map():
    tids = np.arange(19, dtype=np.uint8)
    assert np.array_equal(L.CITYSCAPES_LUT[L.trainids_to_labelids(tids)], tids)
    assert L.trainids_to_labelids(np.array([255], np.uint8))[0] == 0


def test_synthia_ids():
    # datasets.md §0 SYNTHIA column, and the ignored ids 0/13/14/22
    expected = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11, 17: 12, 8: 13, 19: 15}
    for sid, tid in expected.items():
        assert L.SYNTHIA_LUT[sid] == tid
    for sid in (0, 13, 14, 22):
        assert L.SYNTHIA_LUT[sid] == 255


def test_mapillary_rule_reproduces_the_ddb_table():
    # datasets.md §0 last column: Mapillary v1.2 ids per trainId (DDB's rule)
    table = {
        0: [7, 8, 10, 13, 14, 23, 24], 1: [2, 9, 11, 15], 2: [17], 3: [6], 4: [3], 5: [44, 45, 47],
        6: [48], 7: [46, 49, 50], 8: [30], 9: [29], 10: [27], 11: [19], 12: [20, 21, 22], 13: [55],
        14: [61], 15: [54], 16: [58], 17: [57], 18: [52],
    }  # fmt: skip
    mapped = {i for ids in table.values() for i in ids}
    for tid, ids in table.items():
        for mid in ids:
            assert L.MAPILLARY_LUT[mid] == tid, L.MAPILLARY_V12_NAMES[mid]
    for mid in range(66):
        if mid not in mapped:
            assert L.MAPILLARY_LUT[mid] == 255, L.MAPILLARY_V12_NAMES[mid]


def test_protocol_subsets():
    assert len(L.PROTOCOLS[16]) == 16 and not {9, 14, 16} & set(L.PROTOCOLS[16])
    assert L.PROTOCOLS[13] == (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)


def test_colorize_uses_the_palette_and_black_for_ignore():
    out = L.colorize(np.array([[0, 255]], np.uint8))
    assert tuple(out[0, 0]) == (128, 64, 128) and tuple(out[0, 1]) == (0, 0, 0)
