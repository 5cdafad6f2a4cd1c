"""``adaptseg demo``: the whole story on MiniCity, orchestrated from the toolkit's own parts.

Steps (each reused when an earlier run into the same ``--out`` finished it):

1. **data** — MiniCity's GTA5-like and Cityscapes-like domains (``adaptseg.data.minicity``), written
   under ``OUT/minicity/`` (the recipes' ``minicity.cache``), so a demo folder is self-contained.
2. **oracle** — ``train/demo/oracle.yaml``: the same model trained on the labelled Cityscapes-like train split.
3. **source-only** — the method recipe's ``source`` stage (``train/demo/<method>.yaml``) on GTA5-like.
4. **adapt** — the method's stages (``adaptseg.train.pipeline``), unlabelled Cityscapes-like train images.
5. **AdaBN** — the source-only model with its BatchNorm statistics re-estimated on the target train images
   (:mod:`adaptseg.methods.parts.adabn`).
6. **export** — the adapted student to ONNX and TorchScript (``adaptseg.export``, parity-checked).
7. **evaluate** — every model through the sliding-window engine (``adaptseg.infer``, ``infer/minicity.yaml``)
   on the Cityscapes-like val split: the eager models, and the adapted student from its ONNX artifact.
8. **report** — ``report.md`` with overlays and the per-class IoU chart, ``results.json``, a console table.

Run folders: ``OUT/runs/oracle`` and ``OUT/runs/<method>`` (ordinary ``adaptseg train`` run folders),
``OUT/runs/adabn/student.safetensors``, artifacts in ``OUT/export/{onnx,torchscript}``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from adaptseg.demo.methods import DEFAULT_METHOD, DemoMethod, get_method, recipes_dir
from adaptseg.demo.report import changed_most, overlay_strip, write_report
from adaptseg.demo.steps import Plan, cpu_seconds, fmt_seconds
from adaptseg.errors import UserError
from adaptseg.io import write_json_atomic

#: the inference preset every model is scored with (whole 128×256 images, batch 8)
INFER_PRESET = "minicity"
#: how many val images the report shows
OVERLAYS = 4

#: Seconds per unit of work on 2 idle CPU cores (measured; the step estimates), at 128×256 and batch 4.
COST = {
    "image": 0.06,  # MiniCity rendering + writing, per image (2 workers)
    "source_only": 0.14,  # per training iteration
    "ddb_st": 0.38,
    "atp_align": 0.35,
    "atp_teach": 0.35,
    "atp_rank": 0.0,
    "atp_propagate": 0.45,
    "eval": 0.02,  # per val image and model (whole-image inference)
    "export": 6.0,  # per format, with its parity check
}

#: The reduced size (``--quick``, the end-to-end test, ≤ 3 min on 2 idle cores): 64×128 images (a pixel
#: costs the same, an iteration ~3× less), 160 images per split, source-only and self-training 800
#: iterations (oracle 300: it only runs the step). Measured mIoU, source-only / AdaBN / adapted: seed 0
#: 21.4 / 27.8 / 33.9, seed 1 25.0 / 30.6 / 33.9, seed 2 24.3 / 28.0 / 32.0 (~225 s of CPU, 1 thread).
#: A method's own reductions are its recipe's ``demo.quick`` overrides.
#: ``--pretrained``: MiniCity's stand-in for ImageNet (adaptseg.models.pretrained)
PRETRAINED = "pretrained:minicity-synscapes"
QUICK: dict[str, list[str]] = {
    "common": ["minicity.size=[64,128]", "minicity.images=160"],
    "oracle": ["schedule.iters=300"],
}


@dataclass
class DemoOptions:
    out: Path = Path("runs/demo")
    method: str = DEFAULT_METHOD
    seed: int = 0
    quick: bool = False
    overlays: int = OVERLAYS
    threads: int | None = None
    #: start every trained model's encoder from MiniCity's pre-trained one (True), from random weights
    #: (False), or as the method's recipe says (None: ATP pre-trained, DDB random)
    pretrained: bool | None = None
    #: also export the adapted model as static int8 ONNX (``export/onnx-int8.yaml``) and score it
    int8: bool = False


@dataclass
class Row:
    label: str
    miou: float
    per_class: dict[str, float]
    source: str  # what was scored

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "miou": round(self.miou, 4),
            "per_class": {k: (None if math.isnan(v) else round(v, 4)) for k, v in self.per_class.items()},
            "scored": self.source,
        }


@dataclass
class Demo:
    """One demo run: the options, the resolved recipes and the paths of everything it writes."""

    options: DemoOptions
    console: Console = field(default_factory=lambda: Console(stderr=True))

    def __post_init__(self) -> None:
        from adaptseg.config import load_recipe
        from adaptseg.train.config import Recipe, stage_recipe

        self.method: DemoMethod = get_method(self.options.method)
        self.out = Path(self.options.out)
        folder = recipes_dir()
        self.recipe_path = folder / self.method.recipe
        self.oracle_path = folder / "oracle.yaml"
        opts = self.options
        if opts.seed < 0:
            raise UserError(f"--seed {opts.seed} is negative", fix="use a seed >= 0")
        common = [
            f"seed={opts.seed}",
            f"minicity.seed={opts.seed}",
            f"minicity.cache={(self.out / 'minicity').resolve()}",
        ]
        if opts.quick:
            common += QUICK["common"]
        if opts.pretrained is not None:
            common.append(f"model.init={PRETRAINED if opts.pretrained else 'null'}")
        self.recipe = load_recipe(
            Recipe, self.recipe_path, [*common, *(self.method.quick if opts.quick else [])]
        )
        for name in (self.method.source_stage, self.method.adapted_stage):
            self.recipe.stage(name)  # a UserError if the recipe lacks it
        source = stage_recipe(self.recipe, self.recipe.stage(self.method.source_stage))
        self.source_preset = source.model.preset
        # the oracle is the source stage's model from the same initial weights, trained on the labelled target
        init = json.dumps(source.model.init.model_dump(mode="json")) if source.model.init else "null"
        self.oracle = load_recipe(
            Recipe,
            self.oracle_path,
            [
                *common,
                f"model.preset={self.source_preset}",
                f"model.init={init}",
                *(QUICK["oracle"] if opts.quick else []),
            ],
        )
        self.runs = self.out / "runs"
        self.method_dir = self.runs / self.method.name
        self.oracle_dir = self.runs / "oracle"
        self.adabn_weights = self.runs / "adabn" / "student.safetensors"
        self.export_dir = self.out / "export"

    # ------------------------------------------------------------------------------------ helpers
    def initial_weights(self) -> str:
        """What the source-only model (and the oracle) start from, as results.json records it."""
        from adaptseg.train.config import stage_recipe

        init = stage_recipe(self.recipe, self.recipe.stage(self.method.source_stage)).model.init
        return "random" if init is None else init.path

    def _minicity(self) -> dict[str, Any]:
        return self.recipe.minicity.generator_options()

    def _dataset(self, spec: Any, labels: bool = True) -> Any:
        from adaptseg.data.pipeline import open_dataset

        return open_dataset(
            spec.name, spec.root, spec.split, labels=labels, options=spec.options, minicity=self._minicity()
        )

    def val_dataset(self) -> Any:
        return self._dataset(self.recipe.eval.dataset)

    def weights(self, stage: str, run_dir: Path | None = None) -> Path:
        return (run_dir or self.method_dir) / stage / "student.safetensors"

    @property
    def adapted_weights(self) -> Path:
        return self.method_dir / self.method.adapted_stage / self.method.adapted_file

    def _iters(self, recipe: Any, stage: Any) -> int:
        from adaptseg.train.config import stage_recipe

        resolved = stage_recipe(recipe, stage)
        return resolved.schedule.iters if resolved.schedule is not None else 0

    def _scale(self) -> float:
        """Cost of an image or iteration relative to 128×256 (a fixed part does not shrink with the pixels)."""
        h, w = self.recipe.minicity.size
        return 0.2 + 0.8 * h * w / (128 * 256)

    def counts(self) -> dict[str, int]:
        """Images per split as generated (MiniCity's defaults unless ``minicity.images`` overrides them)."""
        from adaptseg.data.minicity.generator import SPECS

        n = self.recipe.minicity.images
        gta = SPECS["gta5"].splits[0].count if n is None else n
        train, val = ((sp.count if n is None else n) for sp in SPECS["cityscapes"].splits)
        return {"source_images": gta, "target_images": train, "val_images": val}

    def plan(self) -> Plan:
        c, scale = self.counts(), self._scale()
        method_stages = [s for s in self.recipe.stages if s.name != self.method.source_stage]
        adapt_s = sum(COST.get(s.method, 0.4) * self._iters(self.recipe, s) for s in method_stages) * scale
        source = self.recipe.stage(self.method.source_stage)
        return Plan.of(
            [
                (
                    "data",
                    f"generate MiniCity ({c['source_images']} GTA5-like, "
                    f"{c['target_images'] + c['val_images']} Cityscapes-like images)",
                    COST["image"] * scale * (c["source_images"] + c["target_images"] + c["val_images"]),
                ),
                (
                    "oracle",
                    f"oracle: train on the labelled Cityscapes-like images ({self._iters(self.oracle, self.oracle.stages[0])} it)",
                    COST["source_only"] * scale * self._iters(self.oracle, self.oracle.stages[0]),
                ),
                (
                    "source",
                    f"source-only: train on GTA5-like ({self._iters(self.recipe, source)} it)",
                    COST["source_only"] * scale * self._iters(self.recipe, source),
                ),
                (
                    "adapt",
                    f"adapt with {self.method.name.upper()}: "
                    + ", ".join(f"{s.name} ({self._iters(self.recipe, s)} it)" for s in method_stages),
                    adapt_s,
                ),
                (
                    "adabn",
                    "AdaBN: re-estimate the source-only model's BN statistics on the target",
                    COST["eval"] * scale * c["target_images"],
                ),
                ("export", "export the adapted student to ONNX and TorchScript", 2 * COST["export"]),
                (
                    "evaluate",
                    "evaluate on Cityscapes-like val (sliding-window engine; adapted from ONNX too)",
                    5 * COST["eval"] * scale * c["val_images"] + 3,
                ),
                ("report", "write report.md, overlays and the IoU chart", 3.0),
            ],
            self.console,
        )

    # ------------------------------------------------------------------------------------- steps
    def generate_data(self) -> None:
        from adaptseg.data.pipeline import minicity_root

        for domain in ("gta5", "cityscapes"):
            minicity_root(domain, **self._minicity())

    def train(self, recipe: Any, run_dir: Path, path: Path, stage: str | None = None) -> None:
        from adaptseg.train.pipeline import RecipeRunner

        RecipeRunner(recipe, run_dir, recipe_path=path, console=self.console).run(stage=stage)

    def adapt(self) -> None:
        from adaptseg.train.pipeline import RecipeRunner

        runner = RecipeRunner(
            self.recipe, self.method_dir, recipe_path=self.recipe_path, console=self.console
        )
        for stage in self.recipe.stages:
            runner.run(stage=stage.name)
            if stage.name == self.method.adapted_stage:
                break

    def run_adabn(self) -> None:
        from adaptseg.methods.parts.adabn import adabn, image_batches
        from adaptseg.models import build_model, load_preset, load_weights, save_weights

        if self.adabn_weights.is_file():
            self.console.print(f"  reused {self.adabn_weights}")
            return
        preset = load_preset(self.source_preset)
        model = build_model(preset)
        load_weights(model, self.weights(self.method.source_stage))
        target = self._dataset(self.recipe.data["target"], labels=False)
        batches = adabn(model, image_batches(target, preset.mean, preset.std, batch_size=4))
        if batches == 0:
            self.console.print(f"  {self.source_preset} has no BatchNorm: AdaBN leaves it unchanged")
        save_weights(model, self.adabn_weights, {"preset": self.source_preset, "stage": "adabn"})

    def export(self) -> dict[str, Path]:
        from adaptseg.export import export_model, open_artifact

        written = {}
        weights = self.adapted_weights
        exports: dict[str, tuple[str, str | None]] = {
            "onnx": ("onnx", None),
            "torchscript": ("torchscript", None),
        }
        if self.options.int8:
            exports["onnx-int8"] = ("onnx", "onnx-int8")
        for name, (fmt, profile) in exports.items():
            dest = self.export_dir / name
            if (dest / "model.json").is_file() and dest.stat().st_mtime >= weights.stat().st_mtime:
                artifact = open_artifact(dest)
                self.console.print(f"  reused {artifact.model_path}")
            else:
                # the artifact's fixed crop is the MiniCity image: whole-image inference, one crop per image
                artifact = export_model(
                    weights,
                    fmt,
                    out=dest,
                    force=True,
                    crop=tuple(self.recipe.minicity.size),
                    profile=profile,
                )
                parity = artifact.meta.parity
                if parity is not None:
                    diff = "" if parity.max_abs_diff is None else f", max |Δlogit| {parity.max_abs_diff:.1e}"
                    self.console.print(
                        f"  {name}: {artifact.model_path} — parity vs eager on {parity.crops} crops: "
                        f"argmax agreement {parity.agreement:.4%}{diff}",
                        highlight=False,
                    )
            written[name] = Path(artifact.model_path)
        return written

    def score(self, model: str | Path, label: str, val: Any) -> Row:
        from adaptseg.eval.report import Report
        from adaptseg.infer.evaluate import evaluate_model

        cm, n = evaluate_model(model, val, INFER_PRESET, device="cpu", console=self.console)
        report = Report.from_confusion(cm, protocol=self.recipe.eval.protocol, n_images=n)
        self.console.print(f"  {label}: mIoU {report.miou:.2f}", highlight=False)
        return Row(label, float(report.miou), dict(report.per_class), str(model))

    def evaluate(self) -> dict[str, Row]:
        val = self.val_dataset()
        rows = {
            "oracle": self.score(self.weights("source", self.oracle_dir), "Oracle (target labels)", val),
            "source_only": self.score(self.weights(self.method.source_stage), "Source-only", val),
            "adabn": self.score(self.adabn_weights, "AdaBN (source-only, target BN stats)", val),
            "adapted": self.score(self.adapted_weights, f"Adapted: {self.method.label}, eager", val),
            "adapted_onnx": self.score(
                self.export_dir / "onnx", f"Adapted: {self.method.label}, ONNX artifact", val
            ),
        }
        if self.options.int8:
            rows["adapted_onnx_int8"] = self.score(
                self.export_dir / "onnx-int8", f"Adapted: {self.method.label}, ONNX int8 artifact", val
            )
        if self.adapted_weights != self.weights(self.method.adapted_stage):  # e.g. DDB's EMA teacher
            rows["adapted_student"] = self.score(
                self.weights(self.method.adapted_stage),
                f"(its student, {self.method.adapted_stage}/student)",
                val,
            )
        return rows

    def overlays(self, count: int) -> list:
        """``image | ground truth | source-only | adapted`` strips of the first ``count`` val images."""
        from adaptseg.infer.backends import load_backend
        from adaptseg.infer.config import load_preset as load_infer_preset
        from adaptseg.infer.engine import SlidingWindow

        val = self.val_dataset()
        config = load_infer_preset(INFER_PRESET)
        engines = [
            SlidingWindow(load_backend(path, "cpu", config.backend), config)
            for path in (self.weights(self.method.source_stage), self.export_dir / "onnx")
        ]
        strips = []
        for i in range(min(count, len(val))):
            image, truth = val.read_image(i), val.read_label(i)
            preds = [engine.predict_image(image).argmax(0).byte().cpu().numpy() for engine in engines]
            strips.append(
                overlay_strip(
                    image, [truth, *preds], ["image", "ground truth", "source-only", "adapted (ONNX)"]
                )
            )
        return strips


def run_demo(
    options: DemoOptions, console: Console | None = None, table_console: Console | None = None
) -> dict[str, Any]:
    """Run (or finish) the demo into ``options.out``; returns what ``results.json`` holds.

    Progress goes to ``console`` (stderr), the results table to ``table_console`` (default: ``console``).
    """
    from adaptseg.eval.plots import iou_bar_chart

    demo = Demo(options, console or Console(stderr=True))
    say = demo.console
    if options.threads:
        torch.set_num_threads(options.threads)
    demo.out.mkdir(parents=True, exist_ok=True)
    plan = demo.plan()
    say.print(
        f"[bold]adaptseg demo[/bold]: {demo.method.label} on MiniCity → {demo.out}"
        f"{' (reduced size)' if options.quick else ''}",
        highlight=False,
    )
    plan.announce()
    started_wall, started_cpu = time.perf_counter(), cpu_seconds()

    with plan.step("data"):
        demo.generate_data()
    with plan.step("oracle"):
        demo.train(demo.oracle, demo.oracle_dir, demo.oracle_path)
    with plan.step("source"):
        demo.train(demo.recipe, demo.method_dir, demo.recipe_path, stage=demo.method.source_stage)
    with plan.step("adapt"):
        demo.adapt()
    with plan.step("adabn"):
        demo.run_adabn()
    with plan.step("export"):
        artifacts = demo.export()
    with plan.step("evaluate"):
        rows = demo.evaluate()
    with plan.step("report"):
        source, adapted = rows["source_only"], rows["adapted"]
        changes = changed_most(source.per_class, adapted.per_class, k=5)
        chart = iou_bar_chart(
            source.per_class,
            {
                "AdaBN": rows["adabn"].per_class,
                "adapted (ONNX)": rows["adapted_onnx"].per_class,
                "oracle": rows["oracle"].per_class,
            },
            name="source-only",
            title=f"Per-class IoU on Cityscapes-like val ({demo.method.name.upper()} demo)",
        )
        strips = demo.overlays(options.overlays)
        results: dict[str, Any] = {
            "method": demo.method.name,
            "method_label": demo.method.label,
            "stages_note": demo.method.stages_note,
            "adapted_stage": demo.method.adapted_stage,
            "seed": options.seed,
            "quick": options.quick,
            "init": demo.initial_weights(),
            "data": {
                **demo.counts(),
                "size": list(demo.recipe.minicity.size),
                "folder": str(demo.out / "minicity"),
            },
            "recipes": {"method": str(demo.recipe_path), "oracle": str(demo.oracle_path)},
            "rows": {key: row.to_dict() for key, row in rows.items()},
            "onnx_vs_eager": round(abs(rows["adapted_onnx"].miou - adapted.miou), 6),
            **(
                {"int8_vs_fp32": round(rows["adapted_onnx_int8"].miou - rows["adapted_onnx"].miou, 4)}
                if "adapted_onnx_int8" in rows
                else {}
            ),
            "changed_most": [
                {
                    "class": c.name,
                    "before": round(c.before, 4),
                    "after": round(c.after, 4),
                    "delta": round(c.delta, 4),
                }
                for c in changes
            ],
            "artifacts": {fmt: str(path) for fmt, path in artifacts.items()},
        }
    results["steps"] = plan.timings()
    results["total"] = {
        "wall_s": round(time.perf_counter() - started_wall, 1),
        "cpu_s": round(cpu_seconds() - started_cpu, 1),
        "estimate_s": round(plan.estimate_s, 1),
    }
    paths = write_report(demo.out, results, strips, chart)
    results["files"] = {key: str(path) for key, path in paths.items()}
    write_json_atomic(demo.out / "results.json", results)
    print_table(results, table_console or say)
    say.print(
        f"report: {paths['report']}   figures: {demo.out / 'results.json'}   "
        f"total {fmt_seconds(results['total']['wall_s'])} (CPU {fmt_seconds(results['total']['cpu_s'])})",
        highlight=False,
    )
    return results


def _cell(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1f}"


def print_table(results: dict[str, Any], console: Console) -> None:
    """The demo's results table: each model's mIoU and the per-class IoUs that changed most."""
    rows = results["rows"]
    changes = results["changed_most"]
    table = Table(
        title=f"MiniCity GTA5-like → Cityscapes-like val, 19-class IoU % ({results['method_label']})"
    )
    table.add_column("model")
    table.add_column("mIoU", justify="right")
    table.add_column("Δ source", justify="right")
    for change in changes:
        table.add_column(change["class"], justify="right")
    base = rows["source_only"]["miou"]
    for key, row in rows.items():
        cells = [_cell(row["per_class"].get(c["class"])) for c in changes]
        delta = "" if key == "source_only" else f"{row['miou'] - base:+.1f}"
        table.add_row(row["label"], f"{row['miou']:.1f}", delta, *cells)
    console.print(table)
    int8 = f"; int8 vs fp32 ONNX ΔmIoU = {results['int8_vs_fp32']:+.2f}" if "int8_vs_fp32" in results else ""
    console.print(
        f"adapted = {results['stages_note']}; ONNX vs eager |ΔmIoU| = {results['onnx_vs_eager']:.4f}{int8}",
        highlight=False,
    )
