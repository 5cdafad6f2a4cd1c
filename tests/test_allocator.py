"""The host allocator setting: freed large CPU tensors are reused without page faults.

Each case runs in a fresh interpreter (the setting is process-wide and cannot be undone)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from adaptseg.allocator import ENV_VAR

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)

PAGES = (64 << 20) // 4096  # pages of the largest activation of the probe's forward

PROBE = """
import json, resource, sys
import torch

if sys.argv[1] == "cli":  # the console script's entry point, as a user runs it
    from adaptseg.cli.app import main
    sys.argv = ["adaptseg", "--help"]
    try:
        main()
    except SystemExit:
        pass
    applied = None
else:
    from adaptseg.allocator import tune_host_allocator
    applied = tune_host_allocator()

torch.set_num_threads(1)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 19, 1))
x = torch.rand(4, 3, 256, 256)

def faults():  # one forward: activations of 64 MiB and 19 MiB, allocated and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.inference_mode():
        model(x)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

rounds = [faults() for _ in range(6)]  # the first ones fault the heap in whatever the setting
print(json.dumps({"applied": applied, "faults": sum(rounds[3:]) / 3}))
"""


def probe(how: str, setting: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if setting is not None:
        env[ENV_VAR] = setting
    res = subprocess.run(
        [sys.executable, "-c", PROBE, how], env=env, capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])


def huge_pages_always() -> bool:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return path.exists() and "[always]" in path.read_text()


def test_tuned_allocator_reuses_a_freed_block_without_faults():
    tuned = probe("direct", None)  # tuned is the default
    assert tuned["applied"] is True
    assert tuned["faults"] < PAGES // 100
    system = probe("direct", "system")
    assert system["applied"] is False
    if not huge_pages_always():  # with 2 MiB pages the control faults a few dozen times
        assert system["faults"] > PAGES // 2, (
            "glibc's defaults map the large activations afresh every forward"
        )


def test_command_line_entry_point_applies_it_unless_told_not_to():
    assert probe("cli", None)["faults"] < PAGES // 100
    if not huge_pages_always():
        assert probe("cli", "system")["faults"] > PAGES // 2


def test_unknown_setting_keeps_the_defaults_with_a_warning(monkeypatch, caplog):
    from adaptseg.allocator import tune_host_allocator

    monkeypatch.setenv(ENV_VAR, "jemalloc")
    with caplog.at_level("WARNING", logger="adaptseg.allocator"):
        assert tune_host_allocator() is False
    assert "ADAPTSEG_MALLOC='jemalloc' is not 'tuned' or 'system'" in caplog.text
