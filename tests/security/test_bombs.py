"""Decompression bombs (issue 18, item 1): refused everywhere a file is opened, at bounded memory.

Every bomb of :mod:`tests.security._bombs` (Deflated and encapsulated DICOM,
NIfTI ``.nii.gz``, PNG, JPEG, ``.npz``) is opened in a fresh Python process by
each entry point that takes it, and the process's peak resident memory is read
(``VmHWM``, reset to the current size first; ``ru_maxrss`` would include the resident size
of the pytest parent at fork) against its resident memory just before the call:

- ``meddx.read`` (also what ``meddx predict`` and batch prediction call),
- the service's upload check (:func:`meddx.service.uploads.receive`),
- de-identification (:func:`meddx.privacy.deid.deidentify_file`) and the
  ``meddx deidentify`` command (DICOM only).

Each must end in a meddx error (an :class:`UploadRejected` 413 for the upload)
with peak growth under :data:`BAR_BYTES`. On the code before the fix the
Deflated DICOM cost about 1.2 GB and the ``.nii.gz`` 1.08 GB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.security import _bombs

BAR_BYTES = 200 * 2**20
REPO = Path(__file__).resolve().parents[2]

_MEASURE = r"""
import json, os, resource, sys, tempfile
from pathlib import Path

import numpy, nibabel, pydicom, PIL.Image  # noqa: F401 - imported before the baseline
import psutil
import meddx.data.readers as readers
from meddx.data.readers import read
from meddx.exceptions import MeddxError
from meddx.privacy.deid import deidentify_file
from meddx.privacy.pseudonyms import PseudonymKey
from meddx.service.uploads import UploadRejected, receive
readers.list_readers()

action, path = sys.argv[1], Path(sys.argv[2])
out = Path(tempfile.mkdtemp())
key = PseudonymKey.generate()


def run():
    if action == "read":
        read(path)
    elif action == "upload":
        with open(path, "rb") as fh:
            receive(fh, out / "uploads")
    elif action == "deid":
        deidentify_file(path, out / "clean.dcm", key)
    elif action == "cli":
        from meddx.cli.deidentify import deidentify
        deidentify(path, out / "tree", out / "key" / "pseudonym.key", False)


def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


# ru_maxrss is not ours alone: Linux carries the parent's resident size at fork into it, so a big pytest
# process would show as growth. VmHWM belongs to this process's own memory map; reset it to now first.
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
except OSError:
    pass
before = psutil.Process().memory_info().rss
result = {"error": None}
try:
    run()
except UploadRejected as exc:
    result = {"error": "UploadRejected", "status": exc.status, "message": exc.reason[:400], "meddx": True}
except MeddxError as exc:
    result = {"error": type(exc).__name__, "field": exc.field, "message": str(exc)[:400], "meddx": True}
except BaseException as exc:  # typer.Exit(1) from the CLI when the file failed
    result = {"error": type(exc).__name__, "message": str(exc)[:400], "meddx": False,
              "exit_code": getattr(exc, "exit_code", None)}
peak = status("VmHWM")
result["growth"] = (peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) - before
print(json.dumps(result))
"""


def measure(action: str, path: Path) -> dict[str, Any]:
    """Run ``action`` on ``path`` in a fresh interpreter; its outcome and peak memory growth in bytes."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, action, str(path)], capture_output=True, text=True,
                          cwd=str(REPO), timeout=300, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDDX_MAX") and k != "MEDDX_FREE_DECODED_MB"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


BOMBS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "deflated-dicom": ("bomb.dcm", lambda p: _bombs.deflated_dicom(p)),
    "encapsulated-dicom": ("rle.dcm", _bombs.encapsulated_dicom),
    "nifti-gz": ("bomb.nii.gz", _bombs.nifti_gz),
    "png-rgba": ("bomb.png", _bombs.png_bomb),
    "png-pixels": ("pixels.png", _bombs.png_pixels_bomb),
    "jpeg-cmyk": ("bomb.jpg", _bombs.jpeg_bomb),
    "npz": ("bomb.npz", _bombs.npz_bomb),
}
UPLOADABLE = ("deflated-dicom", "encapsulated-dicom", "nifti-gz", "png-rgba", "png-pixels", "jpeg-cmyk")
DICOM = ("deflated-dicom", "encapsulated-dicom")


@pytest.fixture(scope="session")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every bomb, written once per session (streamed: the test process never holds the inflated size)."""
    folder = tmp_path_factory.mktemp("bombs")
    return {name: make(folder / file) for name, (file, make) in BOMBS.items()}


def test_bombs_are_small_files(bombs: dict[str, Path]) -> None:
    for name, path in bombs.items():
        assert path.stat().st_size < 1 << 20, name


@pytest.mark.parametrize("name", list(BOMBS))
def test_read_refuses_bomb_at_bounded_memory(bombs: dict[str, Path], name: str) -> None:
    outcome = measure("read", bombs[name])
    assert outcome["meddx"], outcome
    assert outcome["error"] in ("LimitExceededError", "InvalidValueError"), outcome
    assert bombs[name].name in outcome["message"], outcome  # the error names the file ...
    assert outcome["field"], outcome  # ... and the field
    assert outcome["growth"] < BAR_BYTES, f"{name}: peak grew {outcome['growth'] / 2**20:.0f} MiB"


@pytest.mark.parametrize("name", UPLOADABLE)
def test_upload_check_refuses_bomb_at_bounded_memory(bombs: dict[str, Path], name: str) -> None:
    outcome = measure("upload", bombs[name])
    assert outcome["error"] == "UploadRejected" and outcome["status"] == 413, outcome
    assert str(bombs[name]) not in outcome["message"]  # no server path in the answer
    assert outcome["growth"] < BAR_BYTES, f"{name}: peak grew {outcome['growth'] / 2**20:.0f} MiB"


@pytest.mark.parametrize("name", DICOM)
def test_deidentification_refuses_dicom_bomb_at_bounded_memory(bombs: dict[str, Path], name: str) -> None:
    outcome = measure("deid", bombs[name])
    if name == "deflated-dicom":  # the data set itself is the bomb
        assert outcome["error"] == "LimitExceededError" and outcome["field"] == "TransferSyntaxUID", outcome
    else:  # de-identification never decodes pixels: the tiny encapsulated file is simply de-identified
        assert outcome["error"] is None, outcome
    assert outcome["growth"] < BAR_BYTES, f"{name}: peak grew {outcome['growth'] / 2**20:.0f} MiB"


def test_deidentify_command_reports_the_bomb_as_failed(bombs: dict[str, Path]) -> None:
    outcome = measure("cli", bombs["deflated-dicom"])
    assert outcome["error"] == "Exit" and outcome["exit_code"] == 1, outcome  # the file is listed as failed
    assert outcome["growth"] < BAR_BYTES, f"peak grew {outcome['growth'] / 2**20:.0f} MiB"


def test_limits_can_be_raised_for_genuine_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from meddx.data.readers import read
    from meddx.data.readers.limits import LimitExceededError

    path = _bombs.deflated_dicom(tmp_path / "big.dcm", 8 * 2**20)
    monkeypatch.setenv("MEDDX_FREE_DECODED_MB", "1")
    monkeypatch.setenv("MEDDX_MAX_EXPANSION_RATIO", "10")
    with pytest.raises(LimitExceededError) as err:
        read(path)
    assert err.value.field == "TransferSyntaxUID" and "MEDDX_MAX_EXPANSION_RATIO" in str(err.value)
    monkeypatch.setenv("MEDDX_MAX_EXPANSION_RATIO", "100000")
    with pytest.raises(Exception) as err2:  # now inflated: the 16x16 image has far too much PixelData
        read(path)
    assert err2.value.field == "Rows", str(err2.value)  # type: ignore[attr-defined]


def test_valid_deflated_dicom_reads(tmp_path: Path) -> None:
    """Every Deflated file was called truncated (positions in the inflated data set exceed the file size)."""
    from meddx.data.readers import read

    pixels = (np.arange(256 * 256) % 4000).astype(np.uint16).reshape(256, 256)
    path = _bombs.deflated_dicom(tmp_path / "ok.dcm", None, rows=256, cols=256, pixels=pixels)
    assert path.stat().st_size < pixels.nbytes  # the inflated data set is larger than the file
    sample = read(path)
    np.testing.assert_array_equal(sample.array, pixels)
    assert sample.meta["TransferSyntaxUID"] == "1.2.840.10008.1.2.1.99"


def test_truncated_deflated_dicom_is_corrupt(tmp_path: Path) -> None:
    from meddx.data.readers import read
    from meddx.exceptions import CorruptFileError

    pixels = (np.arange(64 * 64) % 4000).astype(np.uint16).reshape(64, 64)
    path = _bombs.deflated_dicom(tmp_path / "cut.dcm", None, rows=64, cols=64, pixels=pixels)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(CorruptFileError) as err:
        read(path)
    assert "cut.dcm" in str(err.value) and err.value.field == "TransferSyntaxUID"


def test_the_measure_sees_a_large_read(tmp_path: Path) -> None:
    """The instrument works: a genuine Deflated image of 32 MiB within the limits shows as growth."""
    pixels = np.zeros((4096, 4096), np.uint16)
    path = _bombs.deflated_dicom(tmp_path / "large.dcm", None, rows=4096, cols=4096, pixels=pixels)
    outcome = measure("read", path)
    assert outcome["error"] is None, outcome
    assert outcome["growth"] > 48 * 2**20, outcome  # inflated bytes + the pixel array at least
