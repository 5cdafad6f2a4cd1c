"""`adaptseg export`: a trained student → TorchScript, ONNX or TensorRT artifact + model.json, parity-checked."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from adaptseg.errors import UserError


def parse_crop(text: str | None) -> tuple[int, int] | None:
    """``"512x1024"`` (h × w) → ``(512, 1024)``."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX×,]\s*(\d+)\s*", text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise UserError(
            f"--crop {text!r} is not HxW", fix="write the crop as height x width, e.g. --crop 512x1024"
        )
    return int(match[1]), int(match[2])


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        model: str = typer.Argument(
            ..., help="Run folder, weights file (.safetensors/.pth/.pt, with --arch) or preset name."
        ),
        fmt: str = typer.Option(
            ...,
            "--format",
            "-f",
            help="Artifact format: a registered export format, e.g. onnx (an unknown name lists them).",
        ),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Artifact folder (default models/<name>-<format>)."
        ),
        profile: str | None = typer.Option(
            None, "--profile", help="Export profile: export/<name>.yaml or a path."
        ),
        crop: str | None = typer.Option(
            None, "--crop", help="Fixed input crop HxW (default: the preset's crop)."
        ),
        fp16: bool = typer.Option(
            False, "--fp16", help="Half precision (overrides the profile's precision)."
        ),
        force: bool = typer.Option(
            False, "--force", help="Replace an existing artifact folder (never a folder of other files)."
        ),
        calib: Path | None = typer.Option(
            None,
            "--calib",
            help="Folder of target images for the parity check and int8 calibration (default MiniCity).",
        ),
        preset: str | None = typer.Option(
            None, "--arch", "--preset", help="Model preset of a weights file that does not name its own."
        ),
    ) -> None:
        """Export a trained model to TorchScript, ONNX or TensorRT, with model.json and a parity check."""
        from adaptseg.export.exporter import export_model

        artifact = export_model(
            model,
            fmt,
            out=out,
            profile=profile,
            crop=parse_crop(crop),
            fp16=fp16,
            force=force,
            calib=calib,
            arch=preset,
        )
        meta = artifact.meta
        parity = meta.parity
        typer.echo(f"wrote {artifact.model_path} and {artifact.sidecar_path}")
        typer.echo(
            f"{meta.format} ({meta.exporter}, {meta.precision}), crop {meta.crop[0]}x{meta.crop[1]}, "
            f"{meta.num_classes} classes, {meta.file_bytes / 1e6:.1f} MB"
        )
        if parity is not None:
            typer.echo(
                f"parity vs eager on {parity.crops} crops: argmax agreement {parity.agreement:.4%}, "
                f"max |Δlogit| {parity.max_abs_diff:.2e}"
            )
