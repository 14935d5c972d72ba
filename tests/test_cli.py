"""The ``meddx`` command: help on every verb, fast start-up, info."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meddx.cli import main

MEDDX = Path(sys.executable).with_name("meddx")


def test_help_is_fast() -> None:
    """`meddx --help` must return in under 1 s (median of 5 runs): heavy imports are lazy.

    Wall time is asserted when the machine is not overloaded (load average below
    the core count); CPU time, which other processes barely change, always is.
    """
    import os
    import resource

    walls, cpus = [], []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        result = subprocess.run([str(MEDDX), "--help"], capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        assert "data" in result.stdout
    assert statistics.median(cpus) < 1.0, cpus
    if os.getloadavg()[0] < (os.cpu_count() or 1):
        assert statistics.median(walls) < 1.0, walls


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys\nfrom meddx.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'pydicom', 'nibabel', 'wfdb', 'pandas', 'sklearn') if m in sys.modules]\n"
        "print('HEAVY:' + ','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY:"


@pytest.mark.parametrize(
    "argv", [["--help"], ["info", "--help"], ["data", "--help"], ["data", "list", "--help"],
             ["data", "info", "--help"], ["data", "fetch", "--help"], ["data", "read", "--help"],
             ["train", "--help"], ["evaluate", "--help"], ["predict", "--help"], ["pretrain", "--help"],
             ["report", "--help"], ["serve", "--help"], ["deidentify", "--help"], ["users", "--help"],
             ["users", "create", "--help"], ["audit", "--help"], ["audit", "verify", "--help"],
             ["models", "--help"], ["models", "export", "--help"]],
)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert "Usage" in capsys.readouterr().out


def test_info_shows_version_extras_and_mirror(capsys: pytest.CaptureFixture[str], mirror: Path) -> None:
    from meddx import __version__

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"meddx {__version__}" in out
    assert "dicom yes" in out and "train yes" in out
    assert str(mirror) in out


def test_read_command_on_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["data", "read", str(tmp_path / "missing.dcm")]) == 2
    err = capsys.readouterr().err
    assert "missing.dcm" in err and "no such file" in err


@pytest.mark.parametrize("argv", [["predict"], ["train", "x", "--bogus"], ["models", "nope"]])
def test_usage_errors_are_one_message_and_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Error:" in err and "Traceback" not in err
