"""Dataset readers on miniature trees in the official layouts (tests/data/layouts.py).

Each test asserts the exact trainIds at hand-set pixels (hand-mapped through shared/datasets.md §0),
pairing, ids and their order, split membership and counts, and the one-line errors for broken trees.
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from adaptseg.data import DATASETS, Sample, SegDataset, build_dataset
from adaptseg.data.datasets.matfile import read_mat_arrays
from adaptseg.errors import UserError
from tests.data import layouts as L
from tests.data.layouts import H, W, grid, rgb

# The hand-set raw values of layouts.py and the trainIds they must become (datasets.md §0).
CITYSCAPES_TIDS = [0, 1, 13, 18, 255, 255, 16, 10]
GTA5_TIDS = [0, 2, 11, 15, 255, 17, 7, 8]
SYNTHIA_TIDS = [0, 1, 3, 13, 255, 255, 17, 10]
MAPILLARY_TIDS = [0, 1, 13, 7, 255, 12, 16, 5]


def first(label: np.ndarray, n: int = 8) -> list[int]:
    return label.ravel()[:n].tolist()


def ids(ds: SegDataset) -> list[str]:
    return [e.id for e in ds.entries]


# --- the contract, for every dataset ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_reader_yields_the_sample_contract(tmp_path, name):
    root = L.BUILDERS[name](tmp_path / name)
    ds = build_dataset(name, root)
    assert len(ds) > 0 and len(set(ids(ds))) == len(ds)
    for sample in ds:
        assert isinstance(sample, Sample)
        assert sample.image.dtype == np.uint8 and sample.image.ndim == 3 and sample.image.shape[2] == 3
        if ds.has_labels:
            assert sample.label is not None
            assert sample.label.dtype == np.uint8 and sample.label.shape == sample.image.shape[:2]
        else:
            assert sample.label is None
    assert ds[-1].id == ds.entries[-1].id


# --- Cityscapes ---------------------------------------------------------------------------------------


def test_cityscapes_pairs_labelids_and_maps_them_to_trainids(tmp_path):
    ds = build_dataset("cityscapes", L.make_cityscapes(tmp_path), "train")
    assert ids(ds) == L.CITYSCAPES_TRAIN and ds.has_labels
    sample = ds[0]
    assert sample.id == "aachen/aachen_000000_000019"
    np.testing.assert_array_equal(sample.image, rgb(0))  # PNG is lossless and RGB, not BGR
    assert first(sample.label) == CITYSCAPES_TIDS
    assert (sample.label.ravel()[8:] == 0).all()  # labelId 7 (road) everywhere else
    assert first(ds.raw_label_values(0)) == L.CITYSCAPES_IDS
    assert ds.entries[0].label_path.name == "aachen_000000_000019_gtFine_labelIds.png"
    # the third frame ships only a pre-converted labelTrainIds file: read as trainIds, not as labelIds
    assert ds.entries[2].meta["label_encoding"] == "trainIds"
    assert first(ds.read_label(2)) == L.TRAINIDS
    assert set(ds.known_raw_values.tolist()) == set(range(34)) | set(range(19)) | {255}


def test_cityscapes_val_and_unlabelled_test(tmp_path):
    root = L.make_cityscapes(tmp_path)
    val = build_dataset("cityscapes", root, "val")
    assert ids(val) == L.CITYSCAPES_VAL and first(val[0].label) == CITYSCAPES_TIDS
    test = build_dataset("cityscapes", root, "test")
    assert ids(test) == L.CITYSCAPES_TEST and not test.has_labels  # the dummy test gtFine is not read
    assert (
        all(e.label_path is None for e in test.entries)
        and test[0].label is None
        and test.read_label(0) is None
    )
    images_only = build_dataset("cityscapes", root, "train", labels=False)
    assert len(images_only) == 3 and images_only[0].label is None


def test_cityscapes_errors_name_the_missing_layout(tmp_path):
    with pytest.raises(UserError, match=r"leftImg8bit/train/<city>/\*_leftImg8bit\.png"):
        build_dataset("cityscapes", tmp_path / "nowhere", "train")
    root = L.make_cityscapes(tmp_path / "cs")
    with pytest.raises(UserError, match="did you mean 'train'"):
        build_dataset("cityscapes", root, "trian")
    (root / "extra").mkdir()
    with pytest.raises(UserError, match=r"missing folder leftImg8bit/train/"):
        build_dataset("cityscapes", root / "extra", "train")
    for f in (root / "leftImg8bit" / "val" / "frankfurt").iterdir():
        f.unlink()
    with pytest.raises(UserError, match=r"no images in the cityscapes 'val' split"):
        build_dataset("cityscapes", root, "val")
    label = root / "gtFine" / "train" / "aachen" / "aachen_000001_000019_gtFine_labelIds.png"
    label.unlink()
    with pytest.raises(
        UserError, match=r"1 image\(s\) .* have no label, e\.g\. .*aachen_000001_000019_leftImg8bit"
    ):
        build_dataset("cityscapes", root, "train")
    lenient = build_dataset("cityscapes", root, "train", strict=False)
    assert [p.name for p in lenient.unpaired_images] == ["aachen_000001_000019_leftImg8bit.png"]
    assert lenient.entries[1].label_path is None
    shutil.rmtree(root / "gtFine" / "train")
    with pytest.raises(UserError, match=r"missing folder gtFine/train/.*labels=False"):
        build_dataset("cityscapes", root, "train")


# --- GTA5 ---------------------------------------------------------------------------------------------


def test_gta5_reads_palette_indices_and_skips_converter_outputs(tmp_path):
    ds = build_dataset("gta5", L.make_gta5(tmp_path, size_pitfall=False))
    assert ds.split == "all" and ids(ds) == ["00001", "00002", "00003", "00004", "00005"]
    assert all(e.label_path.name == f"{e.id}.png" for e in ds.entries)  # not 00001_labelTrainIds.png
    assert first(ds[0].label) == GTA5_TIDS
    assert first(ds[1].label) == [8, 0, 2, 11, 15, 255, 17, 7]  # frame 2's values are rolled by one
    assert first(ds.raw_label_values(0)) == L.GTA5_IDS
    np.testing.assert_array_equal(ds[4].image, rgb(5))


def test_gta5_resizes_a_mismatched_label_to_its_image(tmp_path, caplog):
    ds = build_dataset("gta5", L.make_gta5(tmp_path))
    assert ds.raw_label_values(2).shape == (2 * H, 2 * W)
    with caplog.at_level(logging.WARNING):
        sample = ds[2]
    assert sample.label.shape == (H, W) == sample.image.shape[:2]
    expected = grid(np.roll(GTA5_TIDS, 2).tolist())  # nearest 2x down of a nearest 2x up is the original
    np.testing.assert_array_equal(sample.label, expected)
    np.testing.assert_array_equal(ds.read_label(2), expected)
    assert "00003.png" in caplog.text and "resized" in caplog.text


def test_gta5_splits_from_split_mat(tmp_path):
    root = L.make_gta5(tmp_path)
    assert ids(build_dataset("gta5", root, "train")) == ["00001", "00003"]
    assert ids(build_dataset("gta5", root, "val")) == ["00002"]
    assert ids(build_dataset("gta5", root, "test")) == ["00004", "00005"]
    (root / "images" / "00005.png").unlink()
    with pytest.raises(UserError, match=r"1 image\(s\) listed in the 'test' split are missing, e\.g\. 00005"):
        build_dataset("gta5", root, "test")
    assert build_dataset("gta5", root, "test", strict=False).missing_images == ["00005"]


def test_gta5_splits_from_text_files(tmp_path):
    root = L.make_gta5(tmp_path, split_mat=False)
    (root / "train.txt").write_text("1\n00003.png\n\n")
    assert ids(build_dataset("gta5", root, "train")) == ["00001", "00003"]
    with pytest.raises(UserError, match=r"needs split\.mat .* or val\.txt"):
        build_dataset("gta5", root, "val")
    (root / "val.txt").write_text("two\n")
    with pytest.raises(UserError, match="'two' is not a GTA5 id"):
        build_dataset("gta5", root, "val")


def test_split_mat_parser_matches_scipy_output(tmp_path):
    path = tmp_path / "split.mat"
    path.write_bytes(L.GTA5_SPLIT_MAT)
    arrays = read_mat_arrays(path)
    assert sorted(arrays) == ["testIds", "trainIds", "valIds"]
    assert arrays["trainIds"].shape == (2, 1) and arrays["trainIds"].ravel().tolist() == [1.0, 3.0]
    assert arrays["testIds"].ravel().tolist() == [4.0, 5.0]
    path.write_bytes(L.GTA5_SPLIT_MAT[:200])
    with pytest.raises(UserError, match=r"corrupt \.mat file"):
        read_mat_arrays(path)
    path.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(512, b" "))
    with pytest.raises(UserError, match=r"v7\.3 \(HDF5\)"):
        read_mat_arrays(path)


# --- SYNTHIA ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("inside", [False, True], ids=["parent", "RAND_CITYSCAPES"])
def test_synthia_reads_the_class_from_the_r_channel_of_16bit_labels(tmp_path, inside):
    root = L.make_synthia(tmp_path)
    ds = build_dataset("synthia", root / "RAND_CITYSCAPES" if inside else root)
    assert ids(ds) == ["0000000", "0000001"] and ds.split == "all"
    raw = ds.raw_label_values(0)
    assert raw.dtype == np.uint16 and first(raw) == L.SYNTHIA_IDS
    label = ds[0].label
    assert first(label) == SYNTHIA_TIDS
    assert (label.ravel()[8:] == 0).all()  # class 3 (road) in R; G holds instance 8 (= car if misread)
    assert first(ds[1].label) == [10, 0, 1, 3, 13, 255, 255, 17]


def test_synthia_16bit_values_are_mapped_before_the_cast_to_uint8(tmp_path):
    root = L.make_synthia(tmp_path)
    path = root / "RAND_CITYSCAPES" / "GT" / "LABELS" / "0000000.png"
    L.write_synthia_label(path, grid([259, 3, 23], dtype=np.uint16))  # 259 % 256 = 3 = road
    ds = build_dataset("synthia", root)
    assert first(ds[0].label, 3) == [255, 0, 255]


def test_synthia_rejects_single_channel_labels(tmp_path):
    root = L.make_synthia(tmp_path)
    L.write_png(root / "RAND_CITYSCAPES" / "GT" / "LABELS" / "0000001.png", grid([3]))
    ds = build_dataset("synthia", root)
    with pytest.raises(UserError, match=r"0000001\.png: expected a 3-channel SYNTHIA label"):
        ds[1]


# --- Synscapes ----------------------------------------------------------------------------------------


def test_synscapes_pairs_unpadded_names_by_stem_in_numeric_order(tmp_path):
    root = L.make_synscapes(tmp_path)
    ds = build_dataset("synscapes", root)
    assert ids(ds) == ["1", "2", "10"]  # not the text order 1, 10, 2
    assert [first(ds[i].label, 1)[0] for i in range(3)] == [1, 255, 5]  # labelIds 8, 9, 17
    np.testing.assert_array_equal(ds[2].image, rgb(10))  # native img/rgb, not rgb-2k
    assert first(ds[0].label)[1:] == CITYSCAPES_TIDS[1:]
    (root / "img" / "class" / "2.png").unlink()  # DDB's converted trainIds are the fallback
    ds = build_dataset("synscapes", root)
    assert ds.entries[1].meta["label_encoding"] == "trainIds" and (ds[1].label == 18).all()


# --- Mapillary Vistas -----------------------------------------------------------------------------------


def test_mapillary_v12_labels_in_both_layouts(tmp_path):
    root = L.make_mapillary(tmp_path)
    train = build_dataset("mapillary", root, "train")
    assert ids(train) == L.MAPILLARY_TRAIN  # '-' keys sort first and are kept verbatim
    assert first(train[0].label) == MAPILLARY_TIDS  # v1.2 labels, not the v2.0 ones (all 0 = Bird)
    assert train[1].image.shape == (H + 1, W, 3) and train[1].label.shape == (H + 1, W)
    assert train.entries[0].label_path.parent.as_posix().endswith("training/v1.2/labels")
    val = build_dataset("mapillary", root, "val")  # old v1.x layout: validation/labels/
    assert ids(val) == L.MAPILLARY_VAL and first(val[0].label) == MAPILLARY_TIDS[::-1]
    test = build_dataset("mapillary", root, "test")
    assert len(test) == 1 and not test.has_labels
    assert train.known_raw_values.tolist() == list(range(66))


def test_mapillary_refuses_v20_labels(tmp_path):
    root = L.make_mapillary(tmp_path)
    shutil.rmtree(root / "training" / "v1.2")
    with pytest.raises(UserError, match=r"only v2\.0 labels under training/.*v1\.2"):
        build_dataset("mapillary", root, "train")


# --- ACDC ---------------------------------------------------------------------------------------------


def test_acdc_all_conditions_and_per_condition(tmp_path):
    root = L.make_acdc(tmp_path)
    all_train = build_dataset("acdc", root, "train")
    assert len(all_train) == 9
    conditions = [e.meta["condition"] for e in all_train.entries]
    assert {c: conditions.count(c) for c in L.ACDC_SEQS} == {"fog": 2, "night": 3, "rain": 2, "snow": 2}
    assert ids(all_train)[0] == L.acdc_id("fog", 41)
    assert not any("_ref" in str(e.image_path) for e in all_train.entries)
    for c, cond in enumerate(L.ACDC_SEQS):
        per = build_dataset("acdc", root, "train", condition=cond)
        assert {e.meta["condition"] for e in per.entries} == {cond}
        assert set(ids(per)) <= set(ids(all_train)) and len(per) == conditions.count(cond)
        # the shipped labelTrainIds win over the labelIds (all 0, which would read as all 255)
        assert first(per[0].label) == [c, *L.TRAINIDS[1:]]
    val = build_dataset("acdc", root, "val", condition="all")
    assert len(val) == 4 and val.has_labels
    test = build_dataset("acdc", root, "test")
    assert len(test) == 4 and not test.has_labels and test[0].label is None


def test_acdc_errors_and_labelids_fallback(tmp_path):
    root = L.make_acdc(tmp_path)
    with pytest.raises(UserError, match="did you mean 'fog'"):
        build_dataset("acdc", root, "train", condition="fgo")
    stem = L.acdc_id("rain", 41).split("/")[-1]
    (root / "gt" / "rain" / "val" / L.ACDC_SEQS["rain"] / f"{stem}_gt_labelTrainIds.png").unlink()
    val = build_dataset("acdc", root, "val", condition="rain")
    assert val.entries[0].meta["label_encoding"] == "cityscapes-labelIds" and (val[0].label == 255).all()
    shutil.rmtree(root / "gt" / "night" / "train")
    with pytest.raises(UserError, match=r"missing folder gt/night/train/"):
        build_dataset("acdc", root, "train")
    shutil.rmtree(root / "rgb_anon" / "snow")
    with pytest.raises(UserError, match=r"missing folder rgb_anon/snow/train/"):
        build_dataset("acdc", root, "train", condition="snow")
    assert len(build_dataset("acdc", root, "val")) == 3  # 'all' = the conditions present


# --- Dark Zurich ----------------------------------------------------------------------------------------


def test_darkzurich_splits_and_times(tmp_path):
    root = L.make_darkzurich(tmp_path)
    train = build_dataset("darkzurich", root)
    assert train.split == "train" and not train.has_labels
    assert ids(train) == [f"night/{k}" for k in L.DZ_TRAIN["night"]] and train[0].label is None
    assert ids(build_dataset("darkzurich", root, "train", time="day")) == [
        f"day/{k}" for k in L.DZ_TRAIN["day"]
    ]
    assert build_dataset("darkzurich", root, "train", time="twilight").entries[0].meta == {"time": "twilight"}
    val = build_dataset("darkzurich", root, "val")
    assert ids(val) == [f"night/{k}" for k in L.DZ_VAL]
    assert [first(val[i].label) for i in range(2)] == [[n, *L.TRAINIDS[1:]] for n in range(2)]
    assert not any("_ref" in str(e.image_path) for e in val.entries)
    test = build_dataset("darkzurich", root, "test")
    assert len(test) == 1 and not test.has_labels
    with pytest.raises(UserError, match="night images only"):
        build_dataset("darkzurich", root, "val", time="day")


# --- build_dataset ------------------------------------------------------------------------------------


def test_build_dataset_names_and_options(tmp_path):
    root = L.make_gta5(tmp_path)
    assert type(build_dataset("GTA", root)).name == "gta5"
    with pytest.raises(UserError, match="did you mean 'cityscapes'"):
        build_dataset("cityscape", root)
    with pytest.raises(
        UserError, match="unknown option 'conditon' for dataset acdc .*did you mean 'condition'"
    ):
        build_dataset("acdc", root, "train", conditon="fog")
