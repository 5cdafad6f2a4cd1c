"""``adaptseg demo``: the report pieces, AdaBN, the CLI's input errors, and (slow) the reduced demo end to end."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from adaptseg.cli.app import app
from adaptseg.data.labels import PALETTE
from adaptseg.demo.methods import DEFAULT_METHOD, demo_methods, get_method, recipes_dir
from adaptseg.demo.report import CAPTION_H, GAP, blend_labels, changed_most, markdown, overlay_strip
from adaptseg.errors import UserError
from adaptseg.methods.parts.adabn import adabn, batchnorm_layers

runner = CliRunner()


# ------------------------------------------------------------------------------------------ report
def test_blend_labels_colours_and_keeps_ignored_pixels():
    image = np.full((4, 6, 3), 100, np.uint8)
    label = np.zeros((4, 6), np.uint8)  # road
    label[:, 3:] = 255  # ignored: the bare image
    out = blend_labels(image, label, alpha=0.5)
    road = PALETTE[0].astype(np.float64)
    np.testing.assert_array_equal(out[:, :3], np.broadcast_to(np.rint(0.5 * 100 + 0.5 * road), (4, 3, 3)))
    np.testing.assert_array_equal(out[:, 3:], image[:, 3:])


def test_overlay_strip_layout():
    h, w = 16, 24
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 1] = 200
    truth = np.full((h, w), 13, np.uint8)  # car
    source = np.full((h, w), 255, np.uint8)  # all ignored → the image itself
    adapted = np.full((h, w), 0, np.uint8)  # road
    strip = overlay_strip(image, [truth, source, adapted], ["image", "truth", "source", "adapted"])
    assert strip.shape == (CAPTION_H + h, 4 * w + 3 * GAP, 3) and strip.dtype == np.uint8
    tiles = [strip[CAPTION_H:, k * (w + GAP) : k * (w + GAP) + w] for k in range(4)]
    np.testing.assert_array_equal(tiles[0], image)
    np.testing.assert_array_equal(tiles[1], blend_labels(image, truth))
    np.testing.assert_array_equal(tiles[2], image)
    np.testing.assert_array_equal(tiles[3], blend_labels(image, adapted))
    assert not np.array_equal(tiles[1], tiles[3])  # car and road colours differ
    # the gaps are white and the caption strip holds dark text
    assert (strip[CAPTION_H:, w : w + GAP] == 255).all()
    assert strip[:CAPTION_H].min() < 100
    with pytest.raises(ValueError):
        overlay_strip(image, [truth], ["only one caption"])


def test_changed_most_orders_by_absolute_change_and_skips_nan():
    before = {"road": 90.0, "car": 40.0, "bus": math.nan, "sky": 80.0, "pole": 10.0, "truck": 30.0}
    after = {"road": 91.0, "car": 60.0, "bus": 20.0, "sky": 50.0, "pole": 11.0, "truck": 10.0}
    picked = changed_most(before, after, k=3)
    assert [c.name for c in picked] == ["sky", "car", "truck"]  # −30, +20, −20 (tie: class order)
    assert picked[0].delta == pytest.approx(-30.0) and picked[1].delta == pytest.approx(20.0)
    assert [c.name for c in changed_most(before, after, k=10)][-2:] == ["road", "pole"]  # bus (NaN) left out


def test_markdown_report_names_every_row_and_picture():
    per_class = {"road": 90.0, "car": 50.0}
    rows = {
        key: {"label": key.upper(), "miou": m, "per_class": per_class}
        for key, m in (
            ("oracle", 70.0),
            ("source_only", 30.0),
            ("adabn", 40.0),
            ("adapted", 50.0),
            ("adapted_onnx", 50.0),
        )
    }
    results = {
        "method_label": "DDB",
        "seed": 0,
        "quick": True,
        "stages_note": "R1 ca only",
        "rows": rows,
        "data": {"source_images": 8, "target_images": 8, "val_images": 8, "size": [128, 256]},
        "onnx_vs_eager": 0.0,
        "changed_most": [{"class": "car", "before": 30.0, "after": 50.0, "delta": 20.0}],
        "steps": [{"title": "train", "estimate_s": 10.0, "wall_s": 12.0, "cpu_s": 20.0}],
        "total": {"wall_s": 12.0, "cpu_s": 20.0},
    }
    text = markdown(results, ["overlay_0.png"], "per_class_iou.png")
    for needle in (
        "ORACLE",
        "SOURCE_ONLY",
        "ADABN",
        "ADAPTED_ONNX",
        "| ADAPTED | 50.0 | +20.0 |",
        "R1 ca only",
        "![overlay 0](overlay_0.png)",
        "![per-class IoU](per_class_iou.png)",
        "| car | 30.0 |",
    ):
        assert needle in text


# ------------------------------------------------------------------------------------------- AdaBN
class _BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4, momentum=0.3)
        self.drop = nn.Dropout(0.9)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn2(self.drop(self.bn(self.conv(x))))


def test_adabn_sets_running_stats_to_the_target_statistics():
    torch.manual_seed(0)
    model = _BNNet()
    model.train()
    model(torch.randn(8, 3, 5, 5))  # some "source" statistics
    weights = {
        k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k
    }
    target = torch.randn(16, 3, 5, 5) * 3 + 2
    assert adabn(model, [target[:8], target[8:]]) == 2
    with torch.no_grad():
        feats = model.conv(target)
    # equal batches: the cumulative average of batch means is the mean over all target pixels
    torch.testing.assert_close(model.bn.running_mean, feats.mean(dim=(0, 2, 3)))
    unbiased = [feats[s].var(dim=(0, 2, 3), unbiased=True) for s in (slice(0, 8), slice(8, 16))]
    torch.testing.assert_close(model.bn.running_var, (unbiased[0] + unbiased[1]) / 2)
    # dropout stayed off: bn2 saw bn's output unscaled
    with torch.no_grad():
        normed = nn.functional.batch_norm(
            feats[:8], None, None, model.bn.weight, model.bn.bias, training=True
        )
    assert abs(model.bn2.running_mean.mean().item() - 0.0) < 0.2 and normed.abs().max() < 10
    assert model.bn.momentum == 0.3 and not model.training
    for k, v in weights.items():
        torch.testing.assert_close(model.state_dict()[k], v)  # no weight changed


def test_adabn_without_batchnorm_is_a_no_op():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert batchnorm_layers(model) == [] and adabn(model, [torch.randn(2, 3, 4, 4)]) == 0
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])


# --------------------------------------------------------------------------------------- the CLI
def test_unknown_method_is_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, ["demo", "--method", "dbd", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the demo has no method 'dbd'")
    assert "did you mean 'ddb'" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "demo").exists()  # nothing written before the input is checked


def test_negative_seed_is_a_user_error(tmp_path):
    result = runner.invoke(app, ["demo", "--seed", "-1", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 2 and "error: --seed -1 is negative" in result.output


def test_every_demo_method_has_its_recipe_and_stages():
    from adaptseg.config import load_recipe
    from adaptseg.train.config import Recipe
    from adaptseg.train.pipeline import check_recipe

    methods = demo_methods()
    assert sorted(methods) == ["atp", "ddb"]  # oracle.yaml and _base.yaml have no demo: section
    assert DEFAULT_METHOD in methods and get_method(" DDB ").name == "ddb"
    assert (
        get_method("ddb").adapted_file == "ema.safetensors"
        and get_method("atp").adapted_file == "student.safetensors"
    )
    with pytest.raises(UserError, match="the demo has no method 'dacs' — fix: choose one of: atp, ddb"):
        get_method("dacs")
    for method in methods.values():
        recipe = load_recipe(Recipe, recipes_dir() / method.recipe, method.quick)
        check_recipe(recipe)
        names = [s.name for s in recipe.stages]
        assert names[0] == method.source_stage and method.adapted_stage in names
        assert recipe.demo is not None and recipe.demo["label"] == method.label


def test_a_demo_method_is_a_recipe_with_a_demo_section(tmp_path, monkeypatch):
    """Adding a method to the demo is adding its recipe (here in an ADAPTSEG_HOME tree); a bad section is a
    one-line error naming the file and the key."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(recipes_dir().parent, home / "train")
    recipe = home / "train" / "demo" / "selftrain.yaml"
    recipe.write_text(
        "extends: ddb.yaml\ndemo: {label: Self-training, stages_note: ca only, adapted_stage: r1_st_ca}\n"
    )
    monkeypatch.setenv("ADAPTSEG_HOME", str(home))
    method = get_method("selftrain")
    assert (method.name, method.recipe, method.label, method.source_stage) == (
        "selftrain",
        "selftrain.yaml",
        "Self-training",
        "source",
    )
    assert sorted(demo_methods()) == ["atp", "ddb", "selftrain"]
    recipe.write_text(
        "extends: ddb.yaml\ndemo: {label: x, stages_note: y, adapted_stage: r1_st_ca, adaptedfile: z}\n"
    )
    with pytest.raises(
        UserError,
        match=r"selftrain.yaml \(demo section\): unknown key 'adaptedfile' — fix: did you "
        r"mean 'adapted_file'",
    ):
        get_method("ddb")


# ------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    """The reduced demo (``--quick``: 64×128 images, 160 per split; oracle 300, source-only 800, DDB ca
    self-training 800 iterations): margins, not values (MiniCity's run-to-run spread is about 4 mIoU).

    Measured (1 torch thread on a busy 2-core machine; ~225 s of CPU): source-only / AdaBN / adapted
    seed 0 21.4 / 27.8 / 33.9, seed 1 25.0 / 30.6 / 33.9, seed 2 24.3 / 28.0 / 32.0; ONNX = eager to 1e-4. The quick oracle is too short to be an upper bound
    (it only runs the step), so nothing is asserted about it.
    """
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--quick", "--out", str(out), "--overlays", "2"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    rows = {key: row["miou"] for key, row in results["rows"].items()}
    assert rows["adapted"] >= rows["source_only"] + 5, rows
    assert rows["adapted"] > rows["adabn"], rows
    assert abs(rows["adapted_onnx"] - rows["adapted"]) <= 0.01, rows
    assert len(results["changed_most"]) == 5
    # the report and its pictures
    assert (out / "report.md").is_file() and "adapted" in (out / "report.md").read_text()
    h, w = results["data"]["size"]
    for i in range(2):
        strip = cv2.imread(str(out / f"overlay_{i}.png"))
        assert strip is not None and strip.shape == (CAPTION_H + h, 4 * w + 3 * GAP, 3)
    assert cv2.imread(str(out / "per_class_iou.png")) is not None
    assert (out / "export" / "onnx" / "model.onnx").is_file() and (
        out / "export" / "torchscript" / "model.json"
    ).is_file()
    # the table on the console names every row
    for key in ("Oracle", "Source-only", "AdaBN", "ONNX artifact"):
        assert key in result.output
    assert "adapted_onnx_int8" not in results["rows"]  # int8 only when asked
    # --int8 on the finished run: every stage is reused; the static int8 artifact is exported and scored
    again = runner.invoke(app, ["demo", "--quick", "--out", str(out), "--overlays", "0", "--int8"])
    assert again.exit_code == 0, again.output
    int8 = json.loads((out / "results.json").read_text())
    meta = json.loads((out / "export" / "onnx-int8" / "model.json").read_text())
    assert meta["precision"] == "int8" and int8["rows"]["adapted"] == results["rows"]["adapted"]
    fp32_miou, int8_miou = int8["rows"]["adapted_onnx"]["miou"], int8["rows"]["adapted_onnx_int8"]["miou"]
    assert int8["int8_vs_fp32"] == pytest.approx(int8_miou - fp32_miou, abs=1e-3)
    assert "ONNX int8 artifact" in again.output and "int8 vs fp32" in again.output
