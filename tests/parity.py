"""Reading the parity line that ``adaptseg export`` prints, for tests that export a trained student."""

from __future__ import annotations

import re

_PARITY = re.compile(r"argmax agreement ([0-9.]+)%, max \|Δlogit\| ([0-9.e+-]+)")


def assert_fp32_parity(output: str, *, min_agreement: float = 99.99, max_logit_diff: float = 1e-3) -> None:
    """An fp32 export agrees with eager PyTorch up to float rounding.

    Exact 100 % argmax agreement is not a property of a correct export: a trained model has a few pixels
    whose two best logits tie to within 1e-6, and a different summation order flips them. What a broken
    export shows is large logit differences, which ``max_logit_diff`` catches. Its 1e-3 is the exporter's
    own fp32 bar (the smallest it accepts): ONNX Runtime's CPU kernels differ by host (1.2e-4 and 1.5e-4
    on an AMD EPYC where another host measured below 1e-5), and a real export error is orders larger.
    """
    found = _PARITY.search(output)
    assert found, f"no parity line in the export output:\n{output}"
    agreement, diff = float(found.group(1)), float(found.group(2))
    assert agreement >= min_agreement, output
    assert diff <= max_logit_diff, output


def assert_exports_with_parity_and_evaluates(weights, fmt: str, dataset_root, tmp_path) -> None:
    """``adaptseg export`` of a trained student (fp32 parity as above), then ``adaptseg eval`` of the artifact
    on the Cityscapes-like val split writes an mIoU."""
    from typer.testing import CliRunner

    from adaptseg.cli.app import app

    runner = CliRunner()
    out = tmp_path / fmt
    result = runner.invoke(app, ["export", str(weights), "--format", fmt, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert_fp32_parity(result.output)
    artifact = next(p for p in out.iterdir() if p.suffix in (".pt", ".onnx"))
    report = tmp_path / "m.json"
    args = ["--model", str(artifact), "--dataset", "cityscapes", "--root", str(dataset_root)]
    result = runner.invoke(app, ["eval", *args, "--split", "val", "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert "mIoU" in report.read_text()
