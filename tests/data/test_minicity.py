"""MiniCity: official layouts and encodings, determinism, class coverage, a real appearance gap, read-back."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from adaptseg.cli.app import app
from adaptseg.data.check import check_dataset
from adaptseg.data.datasets import build_dataset
from adaptseg.data.labels import CITYSCAPES_LUT, PALETTE, SYNTHIA_LUT
from adaptseg.data.minicity import DOMAINS, SPECS, generate, make_sample
from adaptseg.data.minicity.geometry import Camera
from adaptseg.data.minicity.render import render
from adaptseg.data.minicity.scene import SceneConfig, sample_scene
from adaptseg.data.minicity.styles import GTA, PHOTO, photo_like
from adaptseg.errors import UserError
from adaptseg.io import read_image, read_label, read_palette_indices, read_raw

N = 8  # images per split in the shared tree (enough for all 19 classes)
N_ACDC = 3  # per condition and split
SIZE = (128, 256)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("minicity")
    others = tuple(d for d in DOMAINS if d != "acdc")
    roots = generate(out, seed=0, images=N, size=SIZE, domains=others, progress=False)
    roots |= generate(out, seed=0, images=N_ACDC, size=SIZE, domains=("acdc",), progress=False)
    assert roots == {d: out / d for d in DOMAINS}
    return out


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for rel in _files(root):
        digest.update(rel.encode())
        digest.update(hashlib.sha256((root / rel).read_bytes()).digest())
    return digest.hexdigest()


def _train_ids(folder: Path, pattern: str, read) -> list[np.ndarray]:
    return [CITYSCAPES_LUT[read(p)] for p in sorted(folder.glob(pattern))]


# --- geometry ------------------------------------------------------------------------------------------


def test_plane_coefficients_give_the_depth_of_projected_points():
    cam = Camera(height=100, width=200, focal=150.0, cx=100.0, cy=40.0, cam_height=1.5, yaw=0.1)
    for normal, d, point in (
        ((0.0, 1.0, 0.0), 0.0, (1.0, 0.0, 10.0)),  # ground
        ((1.0, 0.0, 0.0), -6.0, (-6.0, 3.0, 20.0)),  # left facade X = -6, facing the road
        ((0.0, 0.0, -1.0), -12.0, (0.5, 1.0, 12.0)),
    ):  # frontal plane Z = 12
        pc = cam.to_camera(np.array([point]))
        x, y = cam.project(pc)[0]
        a, b, c = cam.plane(normal, d)
        inv_depth = a * (x - cam.cx) / cam.focal + b * (y - cam.cy) / cam.focal + c
        assert inv_depth == pytest.approx(1.0 / pc[0, 2], rel=1e-9)
        assert cam.faces_camera(normal, d)


def test_strength_blends_the_synthetic_look_towards_the_photo_look():
    assert (photo_like(0.0).colors == GTA.colors).all() and photo_like(0.0).noise == GTA.noise
    assert np.allclose(photo_like(1.0).colors, PHOTO.colors) and photo_like(1.0).blur == pytest.approx(
        PHOTO.blur
    )
    half = photo_like(0.5)
    assert np.allclose(half.colors, (GTA.colors + PHOTO.colors) / 2)
    assert half.texture[0, 1] == pytest.approx((GTA.texture[0, 1] + PHOTO.texture[0, 1]) / 2)


def _local_contrast(img: np.ndarray) -> float:
    grey = cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 1.0)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F)).mean())


def test_fog_hides_the_distance_first():
    scene = sample_scene(np.random.default_rng(3), (64, 128), SceneConfig(), 0)
    clear = render(scene, photo_like(0.45), np.random.default_rng(0))
    fog = render(scene, photo_like(0.45), np.random.default_rng(0), "fog")
    assert fog.shape == clear.shape == (64, 128, 3)
    assert _local_contrast(fog) < 0.85 * _local_contrast(clear) and fog.mean() > clear.mean()
    change = np.abs(fog.astype(float) - clear.astype(float)).mean(axis=2)
    horizon = int(scene.camera.cy)
    assert change[horizon - 3 : horizon + 3].mean() > change[-8:].mean()  # far pixels change most
    with pytest.raises(ValueError, match="condition"):
        render(scene, GTA, np.random.default_rng(0), "hail")


# --- layouts -------------------------------------------------------------------------------------------


def test_official_layouts_and_names(tree):
    assert _files(tree / "gta5") == sorted(
        [f"images/{i:05d}.png" for i in range(1, N + 1)]
        + [f"labels/{i:05d}.png" for i in range(1, N + 1)]
        + ["minicity.json"]
    )
    assert sorted(_files(tree / "synthia")) == sorted(
        [f"RGB/{i:07d}.png" for i in range(N)]
        + [f"GT/LABELS/{i:07d}.png" for i in range(N)]
        + ["minicity.json"]
    )
    assert sorted(_files(tree / "synscapes")) == sorted(
        [f"img/rgb/{i}.png" for i in range(1, N + 1)]
        + [f"img/class/{i}.png" for i in range(1, N + 1)]
        + ["minicity.json"]
    )
    cs = tree / "cityscapes"
    assert (cs / "leftImg8bit/train/altenbruck/altenbruck_000000_000019_leftImg8bit.png").is_file()
    assert (cs / "leftImg8bit/train/altenbruck/altenbruck_000001_000019_leftImg8bit.png").is_file()  # index 6
    assert (cs / "gtFine/train/altenbruck/altenbruck_000000_000019_gtFine_labelIds.png").is_file()
    assert (cs / "gtFine/train/altenbruck/altenbruck_000000_000019_gtFine_instanceIds.png").is_file()
    assert (cs / "leftImg8bit/val/hollenbach/hollenbach_000002_000019_leftImg8bit.png").is_file()  # index 6
    assert len(list(cs.glob("leftImg8bit/train/*/*_leftImg8bit.png"))) == N
    assert len(list(cs.glob("gtFine/val/*/*_gtFine_labelIds.png"))) == N
    assert not list(cs.rglob("*labelTrainIds*"))  # not shipped by Cityscapes
    acdc = tree / "acdc"
    for cond in ("fog", "night", "rain", "snow"):
        for split in ("train", "val"):
            images = sorted(acdc.glob(f"rgb_anon/{cond}/{split}/*/*_rgb_anon.png"))
            assert len(images) == N_ACDC
            for img in images:
                stem = img.name.removesuffix("_rgb_anon.png")
                gt = acdc / "gt" / cond / split / img.parent.name
                assert (gt / f"{stem}_gt_labelTrainIds.png").is_file() and (
                    gt / f"{stem}_gt_labelIds.png"
                ).is_file()
    assert (acdc / "rgb_anon/fog/train/GOPR0475/GOPR0475_frame_000041_rgb_anon.png").is_file()
    assert (acdc / "rgb_anon/fog/val/GOPR0479/GOPR0479_frame_000078_rgb_anon.png").is_file()  # index 2
    dz = tree / "darkzurich"
    assert len(list(dz.glob("rgb_anon/train/night/*/*_rgb_anon.png"))) == N
    assert (dz / "rgb_anon/train/night/GOPR0346/GOPR0346_frame_000041_rgb_anon.png").is_file()
    assert (dz / "gt/val/night/GOPR0356/GOPR0356_frame_000041_gt_labelTrainIds.png").is_file()
    assert not (dz / "gt/train").exists()  # Dark Zurich train is unlabelled


def test_gta5_labels_are_palette_pngs_of_cityscapes_labelids(tree):
    path = tree / "gta5/labels/00001.png"
    with Image.open(path) as img:
        assert img.mode == "P"
        palette = np.array(img.getpalette()[: 256 * 3]).reshape(256, 3)
        indices = np.asarray(img)
    assert tuple(palette[7]) == tuple(PALETTE[0]) and tuple(palette[26]) == tuple(PALETTE[13])  # road, car
    assert set(np.unique(indices)) <= set(range(34))
    assert 7 in indices and read_image(tree / "gta5/images/00001.png").shape == (*SIZE, 3)
    assert (read_palette_indices(path) == indices).all()


def test_synthia_labels_are_16bit_with_the_class_in_red(tree):
    ids = []
    for path in sorted((tree / "synthia/GT/LABELS").glob("*.png")):
        raw = read_raw(path)  # OpenCV: BGR order
        assert raw.dtype == np.uint16 and raw.shape == (*SIZE, 3)
        assert (raw[:, :, 0] == 0).all()  # B unused
        ids.append(raw[:, :, 2])
        assert raw[:, :, 1].max() > 0  # G: instance ids
    classes = set(np.unique(np.stack(ids)))
    assert 3 in classes and 2 in classes  # road, building
    assert 22 in classes  # lane markings, ignored like the real SYNTHIA
    assert classes <= set(range(23))
    assert not classes & {16, 18, 20}  # no terrain, truck or train
    assert not set(np.unique(SYNTHIA_LUT[np.stack(ids)])) & {9, 14, 16}


def test_grey_labelid_encodings(tree):
    label = read_label(tree / "synscapes/img/class/1.png")
    assert label.dtype == np.uint8 and label.shape == SIZE and 7 in label
    stem = "altenbruck_000000_000019"
    ids = read_label(tree / f"cityscapes/gtFine/train/altenbruck/{stem}_gtFine_labelIds.png")
    inst = read_raw(tree / f"cityscapes/gtFine/train/altenbruck/{stem}_gtFine_instanceIds.png")
    assert inst.dtype == np.uint16
    assert (inst[ids < 24] == ids[ids < 24]).all()  # stuff keeps its labelId
    cars = ids == 26
    assert cars.any() and (inst[cars] // 1000 == 26).all()
    assert 1 in ids  # the recording car's bonnet (ego vehicle), ignored in training


def test_acdc_trainids_agree_with_labelids(tree):
    for path in sorted((tree / "acdc/gt").rglob("*_gt_labelIds.png"))[:12]:
        train_ids = read_label(path.with_name(path.name.replace("_labelIds", "_labelTrainIds")))
        assert (CITYSCAPES_LUT[read_label(path)] == train_ids).all()


# --- content -------------------------------------------------------------------------------------------


def test_all_19_classes_in_gta5_and_cityscapes(tree):
    gta = _train_ids(tree / "gta5/labels", "*.png", read_palette_indices)
    cs_val = _train_ids(tree / "cityscapes/gtFine/val", "*/*_labelIds.png", read_label)
    cs_train = _train_ids(tree / "cityscapes/gtFine/train", "*/*_labelIds.png", read_label)
    for labels in (gta, cs_val, cs_train):
        assert set(range(19)) <= set(np.unique(np.stack(labels)))


def _class_share(labels: list[np.ndarray]) -> np.ndarray:
    counts = np.bincount(np.stack(labels).ravel(), minlength=256)[:19].astype(float)
    return counts / counts.sum()


def test_appearance_differs_while_layout_statistics_match(tree):
    gta_labels = _train_ids(tree / "gta5/labels", "*.png", read_palette_indices)
    cs_labels = _train_ids(tree / "cityscapes/gtFine/train", "*/*_labelIds.png", read_label)
    # same street statistics (L1 distance of class pixel shares), different scenes
    assert np.abs(_class_share(gta_labels) - _class_share(cs_labels)).sum() < 0.35
    assert not any((a == b).all() for a, b in zip(gta_labels, cs_labels, strict=True))
    gta_images = np.stack([read_image(p) for p in sorted((tree / "gta5/images").glob("*.png"))])
    cs_images = np.stack(
        [read_image(p) for p in sorted((tree / "cityscapes/leftImg8bit/train").glob("*/*.png"))]
    )
    gta_labels, cs_labels = np.stack(gta_labels), np.stack(cs_labels)
    # per-class mean colours move (sky, sidewalk, building, vegetation, road)
    shifts = [
        np.abs(gta_images[gta_labels == c].mean(0) - cs_images[cs_labels == c].mean(0)).max()
        for c in (10, 1, 2, 8, 0)
    ]
    assert np.mean(shifts) > 10
    saturation = [
        cv2.cvtColor(x.reshape(-1, 1, 3), cv2.COLOR_RGB2HSV)[:, 0, 1].mean() for x in (gta_images, cs_images)
    ]
    assert saturation[0] > saturation[1] + 8  # the synthetic source is more saturated


def test_night_has_lights_not_only_darkness(tree):
    day = np.stack([read_image(p) for p in sorted((tree / "acdc/rgb_anon/fog/train").rglob("*.png"))])
    night = np.stack([read_image(p) for p in sorted((tree / "acdc/rgb_anon/night/train").rglob("*.png"))])
    assert night.mean() < 0.6 * day.mean()
    assert np.percentile(night, 99.9) > 200  # lamps, lit windows, head- and taillights


# --- determinism and safety ----------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tmp_path):
    kwargs = {"images": 1, "size": (64, 128), "domains": ("synthia", "acdc"), "progress": False}
    generate(tmp_path / "a", seed=7, workers=1, **kwargs)
    generate(tmp_path / "b", seed=7, workers=2, **kwargs)
    generate(tmp_path / "c", seed=8, workers=1, **kwargs)
    for domain in kwargs["domains"]:
        assert _files(tmp_path / "a" / domain) == _files(tmp_path / "b" / domain)
        assert _tree_hash(tmp_path / "a" / domain) == _tree_hash(tmp_path / "b" / domain)
        assert _tree_hash(tmp_path / "a" / domain) != _tree_hash(tmp_path / "c" / domain)


def test_rerun_replaces_a_minicity_domain_and_refuses_other_folders(tmp_path):
    generate(tmp_path, images=3, size=(64, 128), domains=("synscapes",), progress=False)
    generate(tmp_path, images=2, size=(64, 128), domains=("synscapes",), progress=False)
    assert sorted(p.name for p in (tmp_path / "synscapes/img/rgb").iterdir()) == ["1.png", "2.png"]
    assert not list(tmp_path.glob(".*partial"))
    (tmp_path / "gta5").mkdir()
    (tmp_path / "gta5" / "mine.txt").write_text("user data")
    with pytest.raises(UserError, match="not written by MiniCity"):
        generate(tmp_path, images=1, size=(64, 128), domains=("gta5",), progress=False)
    assert (tmp_path / "gta5" / "mine.txt").read_text() == "user data"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "negative"),
        ({"images": 0}, "at least 1"),
        ({"size": (16, 256)}, "too small"),
        ({"domains": ("gta6",)}, "unknown MiniCity domain"),
    ],
)
def test_bad_arguments_are_user_errors(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        generate(tmp_path, progress=False, **kwargs)


def test_cli_writes_the_requested_domains(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "data",
            "minicity",
            "--out",
            str(tmp_path),
            "--images",
            "2",
            "--size",
            "64x128",
            "--domains",
            "gta5,darkzurich",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["darkzurich", "gta5"]
    assert read_image(tmp_path / "gta5/images/00002.png").shape == (64, 128, 3)


# --- read back with the dataset readers ----------------------------------------------------------------

READERS = [
    ("gta5", "all", "gta5", {}),
    ("synthia", "all", "synthia", {}),
    ("synscapes", "all", "synscapes", {}),
    ("cityscapes", "train", "cityscapes", {}),
    ("cityscapes", "val", "cityscapes", {}),
    *[
        ("acdc", split, "acdc", {"condition": cond})
        for cond in ("fog", "night", "rain", "snow")
        for split in ("train", "val")
    ],
    ("darkzurich", "train", "darkzurich", {}),
    ("darkzurich", "val", "darkzurich", {}),
]


def _digest(array: np.ndarray | None) -> str | None:
    return None if array is None else hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.mark.parametrize(
    ("domain", "split", "reader", "options"),
    READERS,
    ids=[f"{r[0]}-{r[1]}-{r[3].get('condition', '')}" for r in READERS],
)
def test_readers_read_back_what_was_written(tree, domain, split, reader, options):
    ds = build_dataset(reader, tree / domain, split, **options)
    n = N_ACDC if domain == "acdc" else N
    assert len(ds) == n
    read = {(_digest(s.image), _digest(s.label)) for s in (ds[i] for i in range(len(ds)))}
    spec = next(
        sp
        for sp in SPECS[domain].splits
        if sp.split == split and sp.condition in (options.get("condition"), "darkzurich", None)
    )
    for index in (0, n - 1):
        sample = make_sample(domain, spec, index, seed=0, size=SIZE)
        label = sample.train_ids
        if domain == "synthia":  # SYNTHIA labels lane markings apart (id 22), and they are ignored
            label[sample.lane_marks] = 255
        expected = None if (domain, split) == ("darkzurich", "train") else _digest(label)
        assert (_digest(sample.image), expected) in read


@pytest.mark.parametrize("domain", DOMAINS)
def test_generated_trees_pass_data_check(tree, domain):
    report = check_dataset(domain, tree / domain)
    assert report.ok
