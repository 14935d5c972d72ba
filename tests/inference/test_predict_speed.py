"""The bar of the issue: `meddx predict` on a PNG and on a DICOM file answers JSON in under 3 s, cold.

Each call is a fresh process (the console script), as a user would run it. The
test machine is shared: when it is oversubscribed (load above the core count),
wall time measures the neighbours, so the child's CPU time is checked instead.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.inference import Pipeline
from tests._factories import make_labelled_pngs, write_dicom

BAR_S = 3.0


@pytest.fixture(scope="module", params=["cnn-tiny", "resnet18-28"])
def files(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A trained model (meddx's own CNN, or a timm ResNet-18 at full size), one PNG and the same pixels as a DICOM.

    The ResNet is the MedMNIST benchmark's model: 11 M parameters, the case where
    importing torch and timm alone used to take longer than the bar.
    """
    from meddx.training import TrainConfig, train

    base = tmp_path_factory.mktemp("speed")
    data = make_labelled_pngs(base / "data", n=16, size=16)
    run = train(TrainConfig(data=str(data), model=request.param, epochs=2 if request.param == "cnn-tiny" else 1,
                            size=28, out=str(base / "run"), threads=1), progress=False)
    dcm = write_dicom(base / "1.dcm", np.asarray(Image.open(data / "img001.png")))
    return run, data / "img001.png", dcm


def _command() -> list[str]:
    script = Path(sys.executable).parent / "meddx"
    if script.is_file():
        return [str(script)]
    found = shutil.which("meddx")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from meddx.cli import main; sys.exit(main())"]


def _timed(args: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall and CPU seconds (user + system) of one fresh `meddx` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(_command() + args, capture_output=True, text=True, timeout=60, env=dict(os.environ))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc


@pytest.mark.parametrize("kind", ["png", "dicom"])
def test_cold_predict_under_3_seconds(files: tuple[Path, Path, Path], kind: str) -> None:
    run, png, dcm = files
    target = png if kind == "png" else dcm
    tries = []
    for _ in range(2):  # a second try only when a neighbour's burst made the first one slow
        wall, cpu, proc = _timed(["predict", str(run), str(target)])
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert set(result["probabilities"]) == {"lesion", "normal"} and result["model_version"]
        tries.append((wall, cpu))
        if wall < BAR_S:
            return
    busy = os.getloadavg()[0] > (os.cpu_count() or 1)
    best_cpu = min(cpu for _, cpu in tries)
    assert busy and best_cpu < BAR_S, f"cold predict ({kind}) took {tries} (wall s, cpu s); load {os.getloadavg()}"


def test_predict_is_the_python_api(files: tuple[Path, Path, Path]) -> None:
    run, png, dcm = files
    pipe = Pipeline.load(run)
    results = pipe.predict([png, dcm])
    assert [r["file"] for r in results] == [str(png), str(dcm)]
    assert pipe.predict(png) == results[:1]
    # the same pixels in a PNG and a DICOM give the same answer
    assert results[0]["probabilities"] == pytest.approx(results[1]["probabilities"], abs=1e-6)


def test_files_the_model_cannot_take_get_clear_errors(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    import nibabel as nib

    from meddx.exceptions import CorruptFileError, InvalidValueError

    run, png, _ = files
    pipe = Pipeline.load(run)
    volume = tmp_path / "volume.nii"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 5)).astype(np.float32), np.eye(4)), volume)
    # a file the model cannot take is a rejected prediction with the reader's reason, never an aborted batch
    rejected = pipe.predict(volume)[0]
    assert rejected["decision"]["decision"] == "rejected" and "--slice" in rejected["decision"]["reason"]
    assert rejected["probabilities"] == {} and rejected["prediction"] is None
    out_of_range = pipe.predict(volume, slice_index=5)[0]
    assert "outside the volume's 5 slices" in out_of_range["decision"]["reason"]
    assert "[slice]" in out_of_range["input_check"]["reasons"][0]
    assert len(pipe.predict(volume, slice_index=-1)) == 1
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 1), np.float32), np.eye(4)), flat)
    assert pipe.predict(flat)[0]["prediction"] in {"lesion", "normal"}
    broken = tmp_path / "broken.png"
    broken.write_bytes(png.read_bytes()[:40])
    batch = pipe.predict([png, broken, png])
    assert [r["decision"]["decision"] == "rejected" for r in batch] == [False, True, False]
    assert str(broken) in batch[1]["decision"]["reason"]
    with pytest.raises(CorruptFileError):
        pipe.image_from_file(broken)
