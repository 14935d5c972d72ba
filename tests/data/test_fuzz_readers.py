"""Property-based fuzzing of every reader with random bytes, truncations and bit-flips.

The only allowed outcomes of ``read`` on a mutated file are a valid sample or a
:class:`~meddx.exceptions.MeddxError` that names the file. Anything else, a read
that takes longer than ``READ_LIMIT_S`` (a hang), or a file opened for writing
outside the temporary folder, fails the test.

Seeds are real files from the data mirror's ``format-samples`` plus small files
that the test generates. ``MEDDX_FUZZ_EXAMPLES`` sets the inputs per reader
(default 1,200: with 9 readers, over 10,000 inputs per run);
``MEDDX_FUZZ_REPORT`` names a JSON file for the per-reader tallies.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meddx.data.readers import read
from meddx.data.sample import Sample
from meddx.exceptions import MeddxError

EXAMPLES = int(os.environ.get("MEDDX_FUZZ_EXAMPLES", "1200"))
READ_LIMIT_S = 10.0
TALLY: dict[str, Counter[str]] = {}


class ReadTimedOut(BaseException):
    """Raised by the alarm when one read exceeds READ_LIMIT_S (BaseException: readers can't swallow it)."""


# ----------------------------------------------------------------- write guard

_GUARD = {"active": False, "allowed": "", "violations": []}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _audit(event: str, args: tuple) -> None:
    if not _GUARD["active"]:
        return
    target = None
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        target = args[0] if writes else None
    elif event in {"os.remove", "os.rename", "os.replace", "os.mkdir", "os.rmdir", "shutil.rmtree"}:
        target = args[0]
    if target is not None:
        path = os.path.realpath(os.fsdecode(target))
        if not path.startswith(_GUARD["allowed"]):
            _GUARD["violations"].append(f"{event} {path}")


sys.addaudithook(_audit)


# ----------------------------------------------------------------- seeds

@dataclass(frozen=True)
class Seed:
    reader: str
    name: str  # file name to write (suffix matters)
    data: bytes
    companion: tuple[str, bytes] | None = None  # e.g. the .dat next to a .hea


def _generated_seeds() -> list[Seed]:
    """Small valid files written by this test's own code."""
    import pyedflib
    import pydicom
    import wfdb
    from PIL import Image
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    seeds: list[Seed] = []
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="meddx-seeds-"))

    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (24, 20), dtype=np.uint8)).save(buf, format=fmt)
        seeds.append(Seed("image", f"x.{fmt.lower()}", buf.getvalue()))

    buf = io.BytesIO()
    np.savez(buf, **{f"{s}_images": rng.integers(0, 255, (6, 28, 28), dtype=np.uint8) for s in ("train", "val", "test")},
             **{f"{s}_labels": rng.integers(0, 2, (6, 1), dtype=np.uint8) for s in ("train", "val", "test")})
    seeds.append(Seed("npz", "x.npz", buf.getvalue()))

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.Rows, ds.Columns = "CT", "P1", 16, 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept, ds.PixelSpacing = 1, -1024, [0.5, 0.5]
    ds.PixelData = rng.integers(0, 2000, (16, 16), dtype=np.int16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    seeds.append(Seed("dicom", "x.dcm", buf.getvalue()))

    signal_data = rng.normal(size=(500, 2)).astype(np.float64)
    for fmt in ("16", "212"):
        wfdb.wrsamp(f"gen{fmt}", fs=250, units=["mV", "mV"], sig_name=["I", "II"], p_signal=signal_data,
                    fmt=[fmt, fmt], write_dir=str(work))
        seeds.append(Seed("wfdb", f"gen{fmt}.hea", (work / f"gen{fmt}.hea").read_bytes(),
                          (f"gen{fmt}.dat", (work / f"gen{fmt}.dat").read_bytes())))

    edf_path = work / "gen.edf"
    writer = pyedflib.EdfWriter(str(edf_path), 2, file_type=pyedflib.FILETYPE_EDFPLUS)
    writer.setSignalHeaders([
        {"label": f"ch{i}", "dimension": "uV", "sample_frequency": 100, "physical_max": 100.0,
         "physical_min": -100.0, "digital_max": 32767, "digital_min": -32768} for i in range(2)
    ])
    writer.writeSamples([np.clip(rng.normal(size=1000) * 20, -100, 100) for _ in range(2)])
    writer.writeAnnotation(1.0, -1, "event")
    writer.close()
    seeds.append(Seed("edf", "gen.edf", edf_path.read_bytes()))

    seeds.append(Seed("table", "x.csv", b"age,sex,value\n61,F,3.5\n72,M,\n55,F,4.25\n"))
    return seeds


def _mirror_seeds(samples: Path) -> list[Seed]:
    picks = {
        "dicom": ["dicom/CT_small.dcm", "dicom/MR_small.dcm"],
        "nifti": ["nifti/anatomical.nii", "nifti/functional.nii", "nifti/example4d.nii.gz"],
        "edf": ["edf/test_edfann.edf"],
        "fhir": ["fhir/001_Patient_NBS.json", "fhir/003_AL_ORM_O01_NBS_Fully_Populated_1_hl7_translation.json"],
        "hl7v2": ["hl7v2/005_MN_ADT_A01.hl7", "hl7v2/002_Epic_ORU_R01.hl7"],
        "table": ["../pima-indians-diabetes/diabetes.csv"],
        "image": ["../brain-tumor-mri-navoneel/yes/Y1.jpg"],
    }
    seeds = [Seed(reader, Path(rel).name, (samples / rel).read_bytes()) for reader, rels in picks.items() for rel in rels]
    seeds.append(Seed("wfdb", "a103l.hea", (samples / "wfdb/a103l.hea").read_bytes(),
                      ("a103l.mat", (samples / "wfdb/a103l.mat").read_bytes())))
    return seeds


@pytest.fixture(scope="module")
def seeds(format_samples: Path) -> dict[str, list[Seed]]:
    by_reader: dict[str, list[Seed]] = {}
    for seed in _generated_seeds() + _mirror_seeds(format_samples):
        by_reader.setdefault(seed.reader, []).append(seed)
    return by_reader


READERS = ["dicom", "nifti", "image", "npz", "wfdb", "edf", "fhir", "hl7v2", "table"]


def test_seeds_are_valid(seeds: dict[str, list[Seed]], tmp_path: Path) -> None:
    """Unmutated seeds read cleanly: the fuzz starts from real, readable files."""
    assert sorted(seeds) == sorted(READERS)
    for reader, items in seeds.items():
        for seed in items:
            path = _materialise(tmp_path, seed, seed.data, companion_mutated=False)
            assert isinstance(read(path, reader=reader), Sample), seed.name


# ----------------------------------------------------------------- mutations

@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["random", "truncate", "bitflip", "header-bitflip", "overwrite", "insert"]))
    if kind == "random" or not data:
        return kind, draw(st.binary(max_size=4096))
    if kind == "truncate":
        return kind, data[: draw(st.integers(0, len(data) - 1))]
    buf = bytearray(data)
    if kind in {"bitflip", "header-bitflip"}:
        span = min(len(buf), 1024) if kind == "header-bitflip" else len(buf)
        for _ in range(draw(st.integers(1, 16))):
            pos = draw(st.integers(0, span - 1))
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        return kind, bytes(buf)
    pos = draw(st.integers(0, len(buf)))
    chunk = draw(st.binary(min_size=1, max_size=64))
    if kind == "overwrite":
        buf[pos:pos + len(chunk)] = chunk
    else:
        buf[pos:pos] = chunk
    return kind, bytes(buf)


def _materialise(folder: Path, seed: Seed, data: bytes, *, companion_mutated: bool) -> Path:
    for old in folder.iterdir():
        if old.is_file():
            old.unlink()
    if seed.companion:
        name, companion = seed.companion
        if companion_mutated:  # mutate the data file, keep the header
            (folder / seed.name).write_bytes(seed.data)
            (folder / name).write_bytes(data)
            return folder / seed.name
        (folder / name).write_bytes(companion)
    (folder / seed.name).write_bytes(data)
    return folder / seed.name


def _timed_read(path: Path, reader: str | None) -> object:
    def alarm(signum: int, frame: object) -> None:
        raise ReadTimedOut(f"read of {path} took over {READ_LIMIT_S}s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, READ_LIMIT_S)
    try:
        return read(path, reader=reader)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("reader", READERS)
def test_fuzz_reader(reader: str, seeds: dict[str, list[Seed]], tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp(f"fuzz-{reader}")
    tally = TALLY.setdefault(reader, Counter())
    items = seeds[reader]

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        seed = data.draw(st.sampled_from(items))
        mutate_companion = seed.companion is not None and data.draw(st.booleans())
        source = seed.companion[1] if mutate_companion else seed.data
        kind, mutated = data.draw(mutations(source))
        auto = data.draw(st.booleans())  # half the time let read() pick the reader by content
        path = _materialise(folder, seed, mutated, companion_mutated=mutate_companion)
        tally["inputs"] += 1
        tally[f"mutation:{kind}"] += 1
        _GUARD.update(active=True, allowed=os.path.realpath(tempfile.gettempdir()))
        try:
            result = _timed_read(path, None if auto else reader)
        except MeddxError as exc:
            tally[f"error:{type(exc).__name__}"] += 1
            assert seed.name in str(exc) or (seed.companion and seed.companion[0] in str(exc)), str(exc)
        except ReadTimedOut:
            tally["hang"] += 1
            raise
        else:
            assert isinstance(result, Sample)
            tally["sample"] += 1
        finally:
            _GUARD["active"] = False
        assert not _GUARD["violations"], _GUARD["violations"]

    run()
    assert tally["inputs"] >= EXAMPLES


def teardown_module() -> None:
    report = os.environ.get("MEDDX_FUZZ_REPORT")
    total = sum(t["inputs"] for t in TALLY.values())
    summary = {"total_inputs": total, "per_reader": {r: dict(t) for r, t in TALLY.items()}}
    print(f"\nfuzz: {total} inputs; " + "; ".join(f"{r} {dict(t)}" for r, t in TALLY.items()))
    if report:
        Path(report).write_text(json.dumps(summary, indent=2), encoding="utf-8")
