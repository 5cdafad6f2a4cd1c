"""`adaptseg data …`: generate MiniCity, check dataset trees."""

from __future__ import annotations

from pathlib import Path

import typer

from adaptseg.cli.base import make_typer
from adaptseg.errors import UserError, os_errors_as_user_errors

app = make_typer()


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size {text!r} is not HxW", fix="write e.g. --size 128x256") from None
    if h < 32 or w < 32:
        raise UserError(f"--size {text!r} is too small", fix="use at least 32x32")
    return h, w


@app.command("minicity")
def minicity(
    out: Path = typer.Option(..., "--out", help="Folder to write the datasets into."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives byte-identical files."),
    images: int | None = typer.Option(None, help="Images per split (default: the generator's own sizes)."),
    size: str = typer.Option("128x256", help="Image size HxW."),
    domains: str = typer.Option(
        "gta5,synthia,synscapes,cityscapes,acdc,darkzurich", help="Comma-separated domains to write."
    ),
) -> None:
    """Write MiniCity: small procedural street-scene datasets in the official layouts."""
    hw = _parse_size(size)
    from adaptseg.data.minicity import DOMAINS, generate

    wanted = [d.strip() for d in domains.split(",") if d.strip()]
    unknown = [d for d in wanted if d not in DOMAINS]
    if unknown:
        raise UserError(f"unknown MiniCity domain(s) {unknown}", fix=f"choose from {', '.join(DOMAINS)}")
    with os_errors_as_user_errors(out):  # name --out, not the temporary folder being filled
        written = generate(out, seed=seed, images=images, size=hw, domains=wanted)
    for name, root in written.items():
        typer.echo(f"{name:12s} {root}")


@app.command("check")
def check(
    dataset: str = typer.Argument(
        ..., help="Dataset name (cityscapes, gta5, synthia, synscapes, mapillary, acdc, darkzurich)."
    ),
    root: Path = typer.Argument(..., help="The dataset's root folder (official layout)."),
    split: str | None = typer.Option(None, "--split", help="Check one split only."),
) -> None:
    """Validate a dataset tree: counts, pairing, sizes, label values, unreadable files."""
    from adaptseg.data.check import check_dataset

    report = check_dataset(dataset, root, split=split)
    report.print()
    raise typer.Exit(0 if report.ok else 1)
