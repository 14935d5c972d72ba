"""Fuzz every reader against the reader contract, and read third-party test corpora.

The contract of :func:`meddx.read`: on any file it returns correct data or raises a
:class:`~meddx.exceptions.MeddxError` naming the file, the field and the fix; never a
raw exception, never silently wrong data, never a hang.

Part 1 mutates seeds of every format the readers accept (DICOM, NIfTI, PNG/JPEG,
NPZ, WFDB, EDF, CSV, FHIR JSON, HL7 v2; real files from the data mirror's
``format-samples`` plus small files written here, nothing downloaded) with bit
flips, truncation, inserted/overwritten bytes and header-field edits (numbers in
the header replaced by 0, -1, huge, NaN, ``1_000``...), and tallies per format:
mutants, meddx errors, clean reads, raw exceptions, hangs (a read over
``READ_LIMIT_S``) and silently wrong reads. A read is *silently wrong* when

* it belongs to a **checkable class** (the file carries an integrity check over
  the data: a WFDB signal file under its header's checksums, a gzip-compressed
  NIfTI (CRC-32), an NPZ member (zip CRC-32), a PNG (chunk CRCs, zlib Adler-32))
  and returns data different from the unmutated seed's; a WFDB change that keeps
  every 16-bit checksum (two flips that cancel) is counted apart as
  ``checksum_collisions``, not as wrong: no reader can see it;
* or it breaks an invariant every reader promises (an image or signal that is
  empty, 0-d or holds NaN/inf).

Part 2 reads the test files that pydicom, nibabel and pyedflib ship inside their
installed packages (wfdb-python ships none) with meddx and with the library
itself, and compares the data.

Run ``python -m bench.fuzz`` (``--mutants N`` per format, default 10,000;
``--workers``); it writes ``bench/results/fuzz.json`` and ``fuzz.md``. The test
suite (``tests/data/test_fuzz_contract.py``) runs the same engine on a few
hundred mutants per format.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("dicom", "nifti", "image", "npz", "wfdb", "edf", "table", "fhir", "hl7v2")
READ_LIMIT_S = 10.0
MEMORY_LIMIT = 6 * 1024**3  # address space of a fuzzing worker: a bomb gives MemoryError, not the OOM killer

# Values a header-field edit writes: the edges readers must check.
TEXT_VALUES = ("0", "-1", "1", "nan", "NaN", "inf", "-inf", "1_000", "1e999", "99999999999", "-99999999",
               "", "0x10", "2147483648", "-0", "1.5", "65536")
INT_VALUES = (0, 1, -1, 2, 0x7F, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 3, 1000)
FLOAT_VALUES = (0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e30, -1e30, 1e-30, 3.4e38, 2.0)


class ReadTimedOut(BaseException):
    """Raised by the alarm when one read exceeds READ_LIMIT_S (BaseException: readers cannot swallow it)."""


# --------------------------------------------------------------------------- seeds


@dataclass(frozen=True)
class HeaderField:
    """A header field of a binary seed: where it is and how its value is written."""

    offset: int
    kind: str  # a struct format ("<H", "<f", ">I"), or "ascii:N" (fixed-width text), or "text" (a token)
    name: str


@dataclass
class Seed:
    """A valid file to mutate, the files that go with it, and what reading it gives."""

    format: str
    name: str
    data: bytes
    companions: dict[str, bytes] = field(default_factory=dict)
    fields: list[HeaderField] = field(default_factory=list)
    text: bool = False  # header-field edits replace number tokens in the text
    checkable: str | None = None  # the integrity check that makes data changes detectable
    mutate_companion: str | None = None  # the companion that carries the checked data (WFDB .dat)
    expected: Any = None  # the data read from the unmutated seed

    @property
    def label(self) -> str:
        return f"{self.format}:{self.name}"


def _dicom_fields(data: bytes) -> list[HeaderField]:
    """Header fields of a little-endian DICOM: the image-pixel and rescale elements, wherever they are."""
    tags = {
        (0x0028, 0x0002): "SamplesPerPixel", (0x0028, 0x0010): "Rows", (0x0028, 0x0011): "Columns",
        (0x0028, 0x0100): "BitsAllocated", (0x0028, 0x0101): "BitsStored", (0x0028, 0x0102): "HighBit",
        (0x0028, 0x0103): "PixelRepresentation", (0x0028, 0x0008): "NumberOfFrames",
        (0x0028, 0x1052): "RescaleIntercept", (0x0028, 0x1053): "RescaleSlope", (0x7FE0, 0x0010): "PixelData",
        (0x0028, 0x0004): "PhotometricInterpretation",
    }
    fields: list[HeaderField] = []
    for (group, element), name in tags.items():
        pos = data.find(struct.pack("<HH", group, element), 128)
        if pos < 0:
            continue
        vr = data[pos + 4:pos + 6]
        explicit = vr.isalpha() and vr.isupper()
        if name == "PixelData":
            fields.append(HeaderField(pos + 8 if explicit else pos + 4, "<I", f"{name} length"))
        elif name in ("NumberOfFrames", "RescaleIntercept", "RescaleSlope", "PhotometricInterpretation"):
            length = struct.unpack("<H", data[pos + 6:pos + 8])[0] if explicit else \
                struct.unpack("<I", data[pos + 4:pos + 8])[0]
            fields.append(HeaderField(pos + 8, f"ascii:{length}", name))
        else:
            fields.append(HeaderField(pos + 8, "<H", name))
    return fields


_NIFTI1_FIELDS = (
    [HeaderField(0, "<i", "sizeof_hdr")]
    + [HeaderField(40 + 2 * i, "<h", f"dim[{i}]") for i in range(8)]
    + [HeaderField(70, "<h", "datatype"), HeaderField(72, "<h", "bitpix")]
    + [HeaderField(76 + 4 * i, "<f", f"pixdim[{i}]") for i in range(8)]
    + [HeaderField(108, "<f", "vox_offset"), HeaderField(112, "<f", "scl_slope"),
       HeaderField(116, "<f", "scl_inter"), HeaderField(252, "<h", "qform_code"),
       HeaderField(254, "<h", "sform_code"), HeaderField(344, "ascii:4", "magic")]
)


_NIFTI2_FIELDS = (
    [HeaderField(0, "<i", "sizeof_hdr"), HeaderField(12, "<h", "datatype"), HeaderField(14, "<h", "bitpix")]
    + [HeaderField(16 + 8 * i, "<q", f"dim[{i}]") for i in range(8)]
    + [HeaderField(104 + 8 * i, "<d", f"pixdim[{i}]") for i in range(8)]
    + [HeaderField(168, "<q", "vox_offset"), HeaderField(176, "<d", "scl_slope"),
       HeaderField(184, "<d", "scl_inter"), HeaderField(4, "ascii:8", "magic")]
)


def _edf_fields(data: bytes) -> list[HeaderField]:
    """The numeric fixed-width fields of an EDF header (global and per signal)."""
    fields = [HeaderField(184, "ascii:8", "header_bytes"), HeaderField(236, "ascii:8", "n_records"),
              HeaderField(244, "ascii:8", "record_duration"), HeaderField(252, "ascii:4", "n_signals"),
              HeaderField(192, "ascii:44", "reserved")]
    n = int(data[252:256].decode("ascii").strip())
    start = 256
    for name, width in (("label", 16), ("transducer", 80), ("physical_dimension", 8), ("physical_min", 8),
                        ("physical_max", 8), ("digital_min", 8), ("digital_max", 8), ("prefilter", 80),
                        ("n_samples", 8), ("reserved", 32)):
        if name in ("physical_min", "physical_max", "digital_min", "digital_max", "n_samples", "label"):
            fields += [HeaderField(start + i * width, f"ascii:{width}", f"{name}[{i}]") for i in range(n)]
        start += width * n
    return fields


def _png_fields() -> list[HeaderField]:
    return [HeaderField(16, ">I", "IHDR width"), HeaderField(20, ">I", "IHDR height"),
            HeaderField(24, ">B", "IHDR bit depth"), HeaderField(25, ">B", "IHDR colour type")]


def _jpeg_fields(data: bytes) -> list[HeaderField]:
    pos = data.find(b"\xff\xc0")
    if pos < 0:
        pos = data.find(b"\xff\xc2")
    if pos < 0:
        return []
    return [HeaderField(pos + 5, ">H", "SOF height"), HeaderField(pos + 7, ">H", "SOF width"),
            HeaderField(pos + 9, ">B", "SOF components"), HeaderField(pos + 4, ">B", "SOF precision")]


def generated_seeds(work: Path) -> list[Seed]:
    """Small valid files of every format, written by the libraries themselves (nothing downloaded)."""
    import nibabel as nib
    import pydicom
    import pyedflib
    import wfdb
    from PIL import Image
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    seeds: list[Seed] = []
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (24, 20), dtype=np.uint8)).save(buf, format=fmt)
        data = buf.getvalue()
        seeds.append(Seed("image", f"gen.{fmt.lower()}", data,
                          fields=_png_fields() if fmt == "PNG" else _jpeg_fields(data),
                          checkable="png chunk CRC + zlib Adler-32" if fmt == "PNG" else None))

    buf = io.BytesIO()
    splits = ("train", "val", "test")
    np.savez(buf, **{f"{s}_images": rng.integers(0, 255, (6, 28, 28), dtype=np.uint8) for s in splits},
             **{f"{s}_labels": rng.integers(0, 2, (6, 1), dtype=np.uint8) for s in splits})
    seeds.append(Seed("npz", "gen.npz", buf.getvalue(), text=True, checkable="zip CRC-32"))

    from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

    for syntax, name in ((ExplicitVRLittleEndian, "gen_explicit.dcm"), (ImplicitVRLittleEndian, "gen_implicit.dcm"),
                         (RLELossless, "gen_rle_2frames.dcm"), (DeflatedExplicitVRLittleEndian, "gen_deflated.dcm")):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[name])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if syntax == RLELossless else syntax
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.Rows, ds.Columns = "CT", "P1", 16, 16
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.RescaleSlope, ds.RescaleIntercept, ds.PixelSpacing = "1.0", "-1024", [0.5, 0.5]
        frames = 2 if syntax == RLELossless else 1
        pixels = rng.integers(0, 2000, (frames, 16, 16), dtype=np.int16)
        ds.PixelData = pixels.tobytes()
        if frames > 1:
            ds.NumberOfFrames = frames
        buf = io.BytesIO()
        if syntax == RLELossless:
            ds.compress(RLELossless, pixels)
            ds.save_as(buf, enforce_file_format=True)
        elif syntax == DeflatedExplicitVRLittleEndian:
            ds.save_as(buf, enforce_file_format=True)
        else:
            ds.save_as(buf, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian,
                       little_endian=True)
        data = buf.getvalue()
        seeds.append(Seed("dicom", name, data, fields=_dicom_fields(data)))

    volume = rng.normal(size=(8, 7, 6)).astype(np.float32)
    img = nib.Nifti1Image(volume, np.diag([2.0, 2.0, 3.0, 1.0]))
    for suffix in (".nii", ".nii.gz"):
        path = work / f"gen{suffix}"
        nib.save(img, str(path))
        data = path.read_bytes()
        seeds.append(Seed("nifti", path.name, data, fields=_NIFTI1_FIELDS if suffix == ".nii" else [],
                          checkable="gzip CRC-32" if suffix == ".nii.gz" else None))

    path = work / "gen2.nii"
    nib.save(nib.Nifti2Image(rng.integers(0, 1000, (6, 5, 4)).astype(np.int16), np.diag([1.0, 1.0, 2.0, 1.0])),
             str(path))
    seeds.append(Seed("nifti", path.name, path.read_bytes(), fields=list(_NIFTI2_FIELDS)))

    signal_data = rng.normal(size=(500, 2)).astype(np.float64)
    for fmt in ("16", "212"):
        wfdb.wrsamp(f"gen{fmt}", fs=250, units=["mV", "mV"], sig_name=["I", "II"], p_signal=signal_data,
                    fmt=[fmt, fmt], write_dir=str(work))
        seeds.append(Seed("wfdb", f"gen{fmt}.hea", (work / f"gen{fmt}.hea").read_bytes(),
                          companions={f"gen{fmt}.dat": (work / f"gen{fmt}.dat").read_bytes()}, text=True,
                          checkable="WFDB 16-bit checksums", mutate_companion=f"gen{fmt}.dat"))

    # two samples per frame on the first signal: the samps_per_frame and expanded-checksum paths
    record = wfdb.Record(record_name="genframes", n_sig=2, fs=100, sig_len=200, file_name=["genframes.dat"] * 2,
                         fmt=["16", "16"], samps_per_frame=[2, 1], units=["mV", "mV"], sig_name=["A", "B"],
                         adc_gain=[1000.0, 1000.0], baseline=[0, 0],
                         e_p_signal=[rng.normal(size=400), rng.normal(size=200)])
    record.set_d_features(expanded=True, do_adc=True)
    record.set_defaults()
    record.wrsamp(expanded=True, write_dir=str(work))
    seeds.append(Seed("wfdb", "genframes.hea", (work / "genframes.hea").read_bytes(),
                      companions={"genframes.dat": (work / "genframes.dat").read_bytes()}, text=True,
                      checkable="WFDB 16-bit checksums", mutate_companion="genframes.dat"))

    edf_path = work / "gen.edf"
    writer = pyedflib.EdfWriter(str(edf_path), 2, file_type=pyedflib.FILETYPE_EDFPLUS)
    writer.setSignalHeaders([
        {"label": f"ch{i}", "dimension": "uV", "sample_frequency": 100, "physical_max": 100.0,
         "physical_min": -100.0, "digital_max": 32767, "digital_min": -32768} for i in range(2)
    ])
    writer.writeSamples([np.clip(rng.normal(size=1000) * 20, -100, 100) for _ in range(2)])
    writer.writeAnnotation(1.0, -1, "event")
    writer.close()
    data = edf_path.read_bytes()
    seeds.append(Seed("edf", "gen.edf", data, fields=_edf_fields(data)))

    seeds.append(Seed("table", "gen.csv", b"age,sex,value\n61,F,3.5\n72,M,\n55,F,4.25\n", text=True))
    seeds.append(Seed("hl7v2", "gen.hl7", (
        "MSH|^~\\&|LAB|HOSP|||20240101||ORU^R01|1|P|2.5\rPID|||42||Doe^Jane||19700101|F\r"
        "OBR|1|||2345-7|||20240101120000\rOBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|||||F|||20240101120000\r"
        "OBX|2|SN|2160-0^Creatinine^LN||^88|umol/L|||||F\r").encode(), text=True))
    seeds.append(Seed("fhir", "gen.json", json.dumps({
        "resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "p1", "gender": "female",
                                                      "birthDate": "1970-01-01", "name": [{"family": "Doe",
                                                                                           "given": ["Jane"]}]}},
            {"resource": {"resourceType": "Observation", "id": "o1", "status": "final",
                          "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
                          "subject": {"reference": "urn:uuid:p1"}, "effectiveDateTime": "2024-01-01",
                          "valueQuantity": {"value": 5.4, "unit": "mmol/L"}}}]}).encode(), text=True))
    return seeds


def mirror_seeds(samples: Path) -> list[Seed]:
    """Real files of the data mirror's ``format-samples`` (and two data sets), small ones for speed."""
    seeds: list[Seed] = []

    def add(fmt: str, rel: str, **kw: Any) -> None:
        path = samples / rel
        if path.is_file():
            seeds.append(Seed(fmt, path.name, path.read_bytes(), **kw))

    for rel in ("dicom/CT_small.dcm", "dicom/MR_small.dcm"):
        path = samples / rel
        if path.is_file():
            data = path.read_bytes()
            seeds.append(Seed("dicom", path.name, data, fields=_dicom_fields(data)))
    add("nifti", "nifti/functional.nii", fields=_NIFTI1_FIELDS)
    add("nifti", "nifti/anatomical.nii", fields=_NIFTI1_FIELDS)
    add("nifti", "nifti/example4d.nii.gz", checkable="gzip CRC-32")
    edf = samples / "edf/test_edfann.edf"
    if edf.is_file():
        add("edf", "edf/test_edfann.edf", fields=_edf_fields(edf.read_bytes()))
    add("fhir", "fhir/001_Patient_NBS.json", text=True)
    add("fhir", "fhir/003_AL_ORM_O01_NBS_Fully_Populated_1_hl7_translation.json", text=True)
    add("hl7v2", "hl7v2/005_MN_ADT_A01.hl7", text=True)
    add("hl7v2", "hl7v2/002_Epic_ORU_R01.hl7", text=True)
    add("table", "../pima-indians-diabetes/diabetes.csv", text=True)
    jpg = samples / "../brain-tumor-mri-navoneel/yes/Y1.jpg"
    if jpg.is_file():
        data = jpg.read_bytes()
        seeds.append(Seed("image", "Y1.jpg", data, fields=_jpeg_fields(data)))
    hea, mat = samples / "wfdb/a103l.hea", samples / "wfdb/a103l.mat"
    if hea.is_file() and mat.is_file():
        seeds.append(Seed("wfdb", "a103l.hea", hea.read_bytes(), companions={"a103l.mat": mat.read_bytes()},
                          text=True, checkable="WFDB 16-bit checksums", mutate_companion="a103l.mat"))
    return seeds


def all_seeds(work: Path, samples: Path | None) -> dict[str, list[Seed]]:
    """Seeds by format, each with ``expected`` set from reading it unmutated (a seed must read)."""
    seeds = generated_seeds(work) + (mirror_seeds(samples) if samples else [])
    by_format: dict[str, list[Seed]] = {}
    folder = work / "seed-check"
    folder.mkdir(exist_ok=True)
    for seed in seeds:
        path = materialise(folder, seed, seed.data, None)
        seed.expected = fingerprint(read_quietly(path))
        by_format.setdefault(seed.format, []).append(seed)
    return by_format


# --------------------------------------------------------------------------- mutation

_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _pack(kind: str, rnd: random.Random, old: bytes) -> bytes:
    """An edge value for a binary field: absolute (0, -1, max, NaN...) or relative to the old value (x2, /2, +-1)."""
    size = struct.calcsize(kind)
    if kind.endswith(("f", "d")):
        if rnd.random() < 0.3 and len(old) == size:
            (current,) = struct.unpack(kind, old)
            value = rnd.choice((current * 2, current / 2, -current, current + 1))
        else:
            value = rnd.choice(FLOAT_VALUES)
        return struct.pack(kind, value)
    big = kind.startswith(">")
    if rnd.random() < 0.3 and len(old) == size:
        current = int.from_bytes(old, "big" if big else "little", signed=kind[-1].islower())
        value = rnd.choice((current * 2, current // 2, current + 1, current - 1, -current))
    else:
        value = rnd.choice(INT_VALUES)
    value &= (1 << (8 * size)) - 1
    return value.to_bytes(size, "big" if big else "little")


def _field_edit(seed: Seed, data: bytes, rnd: random.Random) -> bytes:
    """Replace one header field's value with an edge value (see TEXT_VALUES, INT_VALUES, FLOAT_VALUES)."""
    buf = bytearray(data)
    if seed.fields:
        spot = rnd.choice(seed.fields)
        if spot.kind.startswith("ascii:"):
            width = int(spot.kind.split(":")[1])
            value = rnd.choice(TEXT_VALUES + ("EDF Annotations", "EDF+C", "MONOCHROME1", "n1+", "ni1"))
            buf[spot.offset:spot.offset + width] = value.encode().ljust(width)[:width]
        else:
            width = struct.calcsize(spot.kind)
            packed = _pack(spot.kind, rnd, bytes(buf[spot.offset:spot.offset + width]))
            buf[spot.offset:spot.offset + len(packed)] = packed
        return bytes(buf)
    if seed.text:
        head = data[:65536]
        tokens = list(_NUMBER.finditer(head))
        if tokens:
            token = rnd.choice(tokens)
            value = rnd.choice(TEXT_VALUES).encode()
            if seed.format == "npz":  # keep the zip member sizes: same width
                value = value.ljust(len(token.group()))[:len(token.group())]
            return data[:token.start()] + value + data[token.end():]
    return _bit_flips(data, rnd, 1)


def _bit_flips(data: bytes, rnd: random.Random, count: int, span: int | None = None) -> bytes:
    buf = bytearray(data)
    limit = min(len(buf), span) if span else len(buf)
    for _ in range(count):
        pos = rnd.randrange(limit)
        buf[pos] ^= 1 << rnd.randrange(8)
    return bytes(buf)


MUTATIONS = ("bitflip", "header-bitflip", "truncate", "field-edit", "overwrite", "insert", "random")


def mutate(seed: Seed, data: bytes, rnd: random.Random, kind: str) -> bytes:
    """One mutant of ``data`` (the seed's bytes or its checked companion's) of the given kind."""
    if not data or kind == "random":
        return rnd.randbytes(rnd.randrange(4096))
    if kind == "bitflip":
        return _bit_flips(data, rnd, rnd.randint(1, 16))
    if kind == "header-bitflip":
        return _bit_flips(data, rnd, rnd.randint(1, 8), span=1024)
    if kind == "truncate":
        return data[:rnd.randrange(len(data))]
    if kind == "field-edit":
        return _field_edit(seed, data, rnd)
    pos = rnd.randrange(len(data) + 1)
    chunk = rnd.randbytes(rnd.randint(1, 64))
    if kind == "overwrite":
        return data[:pos] + chunk + data[pos + len(chunk):]
    return data[:pos] + chunk + data[pos:]


def mutants(
    seeds: list[Seed], n: int, start: int = 0, base_seed: int = 18
) -> Iterator[tuple[int, Seed, str, str | None, bytes]]:
    """``(index, seed, kind, mutated companion or None, bytes)`` for mutants ``start .. n-1`` (deterministic)."""
    for i in range(start, n):
        rnd = random.Random(base_seed * 1_000_003 + i)
        seed = seeds[i % len(seeds)]
        kind = MUTATIONS[rnd.randrange(len(MUTATIONS))]
        target = None
        if seed.mutate_companion and kind != "field-edit" and rnd.random() < 0.5:
            target = seed.mutate_companion
        source = seed.companions[target] if target else seed.data
        if target and kind == "random":
            kind = "bitflip"
        yield i, seed, kind, target, mutate(seed, source, rnd, kind)


def materialise(folder: Path, seed: Seed, data: bytes, target: str | None) -> Path:
    """Write the (mutated) file and its companions into ``folder``; return the file to read."""
    for old in folder.iterdir():
        if old.is_file():
            old.unlink()
    for name, companion in seed.companions.items():
        (folder / name).write_bytes(data if name == target else companion)
    if target is None:
        (folder / seed.name).write_bytes(data)
    else:
        (folder / seed.name).write_bytes(seed.data)
    return folder / seed.name


# --------------------------------------------------------------------------- reading and judging


def read_quietly(path: Path) -> Any:
    from meddx.data.readers import read

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read(path)


def fingerprint(sample: Any) -> Any:
    """The data of a sample in a comparable form (arrays as bytes + shape + dtype; tables as records)."""
    out: dict[str, Any] = {"type": type(sample).__name__}
    for name in ("array", "data"):
        value = getattr(sample, name, None)
        if isinstance(value, np.ndarray):
            arr = np.ascontiguousarray(value)
            out[name] = (arr.shape, str(arr.dtype), arr.tobytes())
    splits = getattr(sample, "splits", None)
    if splits:
        out["splits"] = {k: tuple((v.shape, str(v.dtype), v.tobytes()) for v in pair) for k, pair in splits.items()}
    for name in ("frame", "patients", "observations"):
        value = getattr(sample, name, None)
        if value is not None:
            out[name] = value.to_csv(index=False)
    return out


def invariant_problem(sample: Any) -> str | None:
    """What an image or signal sample breaks of the invariants every read promises, or None."""
    arr = getattr(sample, "array", None)
    if arr is None:
        arr = getattr(sample, "data", None)
    if not isinstance(arr, np.ndarray):
        return None
    if type(sample).__name__ == "ImageSample":
        if arr.ndim < 2 or arr.size == 0 or 0 in arr.shape:
            return f"image of shape {arr.shape}"
    if type(sample).__name__ == "SignalSample" and arr.size == 0 and not getattr(sample, "annotations", None):
        return "signal with neither samples nor annotations"
    if arr.dtype.kind not in "fc" or not arr.size:
        return None
    finite = np.isfinite(arr)
    if finite.all():
        return None
    # A float NIfTI may hold NaN voxels legitimately; an image that is all NaN/inf never is (a NaN scale).
    if not finite.any():
        return f"all {arr.size} values NaN/inf"
    if type(sample).__name__ == "SignalSample" or getattr(sample, "format", "") == "dicom":
        return f"{int((~finite).sum())} NaN/inf values"
    return None


def _wfdb_checksums_hold(path: Path) -> bool:
    """True if the mutated WFDB record still matches every checksum in its header (an undetectable change)."""
    import wfdb

    from meddx.data.readers.wfdb import decode_header, parse_signal_lines

    try:
        signals = parse_signal_lines(decode_header(path.read_bytes()), path)
        record = wfdb.rdrecord(str(path.with_suffix("")), physical=False, smooth_frames=False, return_res=64)
        return all(
            sig["checksum"] is None or int(np.asarray(samples, np.int64).sum()) % 65536 == sig["checksum"] % 65536
            for sig, samples in zip(signals, record.e_d_signal, strict=False)
        )
    except Exception:  # noqa: BLE001 - only an oracle
        return False


def judge(seed: Seed, path: Path, target: str | None) -> tuple[str, str]:
    """Read ``path`` under the alarm; return ``(outcome, detail)``.

    Outcomes: ``meddx_error``, ``clean``, ``raw_exception``, ``hang``, ``silent_wrong``,
    ``checksum_collision`` (a WFDB change no checksum can see), ``invariant``.
    """
    from meddx.exceptions import MeddxError

    def alarm(signum: int, frame: Any) -> None:
        raise ReadTimedOut(f"read of {path.name} took over {READ_LIMIT_S}s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, READ_LIMIT_S)
    try:
        sample = read_quietly(path)
    except ReadTimedOut:
        return "hang", f"{seed.label}: over {READ_LIMIT_S}s"
    except MeddxError as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        named = path.name in str(exc) or any(n in str(exc) for n in seed.companions)
        if not named:
            return "raw_exception", f"{seed.label}: {type(exc).__name__} without the file name: {exc}"[:300]
        if not exc.field:
            text = str(exc).replace(f"{path.parent}{os.sep}", "")  # no temporary folder names in the results
            return "meddx_error", f"{type(exc).__name__} (no field): {seed.label}: {text}"[:300]
        return "meddx_error", type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - the point of the exercise
        signal.setitimer(signal.ITIMER_REAL, 0)
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return "raw_exception", f"{seed.label}: {type(exc).__name__}: {str(exc)[:120]} at " \
                                f"{Path(where.filename).name}:{where.lineno}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    problem = invariant_problem(sample)
    if problem:
        return "invariant", f"{seed.label}: {problem}"
    checked = seed.checkable and (seed.format != "wfdb" or target is not None)
    if checked and fingerprint(sample) != seed.expected:
        if seed.format == "wfdb" and _wfdb_checksums_hold(path):
            return "checksum_collision", seed.label
        return "silent_wrong", f"{seed.label}: data differ from the seed ({seed.checkable})"
    return "clean", ""


@dataclass
class Tally:
    """Counts of one format's mutants, with the first few examples of each bad outcome."""

    mutants: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    checkable: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, outcome: str, detail: str, checkable: bool) -> None:
        self.mutants += 1
        self.kinds[kind] += 1
        self.outcomes[outcome] += 1
        self.checkable += int(checkable)
        if outcome == "meddx_error":
            if "(no field)" in detail:
                self.errors[detail.split(":")[0]] += 1
                bucket = self.examples.setdefault("error without a field", [])
                if len(bucket) < 8 and detail not in bucket:
                    bucket.append(detail)
            else:
                self.errors[detail] += 1
        elif outcome != "clean" and detail:
            bucket = self.examples.setdefault(outcome, [])
            if len(bucket) < 8 and detail not in bucket:
                bucket.append(detail)

    def merge(self, other: Tally) -> None:
        self.mutants += other.mutants
        self.outcomes.update(other.outcomes)
        self.errors.update(other.errors)
        self.kinds.update(other.kinds)
        self.checkable += other.checkable
        for key, values in other.examples.items():
            bucket = self.examples.setdefault(key, [])
            bucket.extend(v for v in values if v not in bucket and len(bucket) < 8)

    def as_dict(self) -> dict[str, Any]:
        return {"mutants": self.mutants, "outcomes": dict(self.outcomes), "meddx_errors": dict(self.errors),
                "mutation_kinds": dict(self.kinds), "checkable_mutants": self.checkable, "examples": self.examples}


def fuzz_format(seeds: list[Seed], n: int, folder: Path, start: int = 0,
                on_result: Callable[[int, str, str], None] | None = None) -> Tally:
    """Run mutants ``start .. n-1`` of one format's seeds in ``folder``."""
    tally = Tally()
    folder.mkdir(parents=True, exist_ok=True)
    for i, seed, kind, target, data in mutants(seeds, n, start):
        path = materialise(folder, seed, data, target)
        outcome, detail = judge(seed, path, target)
        checkable = bool(seed.checkable) and (seed.format != "wfdb" or target is not None)
        tally.add(kind, outcome, detail, checkable)
        if on_result:
            on_result(i, outcome, detail)
    return tally


# --------------------------------------------------------------------------- third-party corpora


def site_packages() -> Path:
    import pydicom

    return Path(pydicom.__file__).resolve().parent.parent


def corpus_files() -> dict[str, list[Path]]:
    """Test files shipped inside the installed pydicom, nibabel, pyedflib (and wfdb, which ships none)."""
    site = site_packages()
    dicom = sorted(p for p in (site / "pydicom" / "data").rglob("*") if p.is_file() and
                   (p.suffix.lower() == ".dcm" or (p.suffix == "" and p.stat().st_size > 132)))
    dicom += sorted((site / "nibabel").rglob("*.dcm"))
    nifti = sorted(p for p in (site / "nibabel").rglob("*") if p.is_file() and
                   (p.name.endswith((".nii", ".nii.gz"))))
    edf = sorted(p for p in (site / "pyedflib").rglob("*") if p.suffix.lower() in (".edf", ".bdf"))
    wfdb = sorted((site / "wfdb").rglob("*.hea")) if (site / "wfdb").is_dir() else []
    return {"dicom": dicom, "nifti": nifti, "edf": edf, "wfdb": wfdb}


def library_read(fmt: str, path: Path) -> tuple[np.ndarray | None, str]:
    """What the format's own library reads: the data meddx should return, or None and why not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if fmt == "dicom":
                import pydicom
                from pydicom.pixels import apply_modality_lut

                ds = pydicom.dcmread(str(path))
                if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
                    return None, "no pixel data"
                photometric = str(ds.get("PhotometricInterpretation", ""))
                if photometric == "PALETTE COLOR":
                    from pydicom.pixels import apply_color_lut

                    return np.asarray(apply_color_lut(ds.pixel_array, ds), dtype=np.float64), ""
                arr = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)
                if photometric == "MONOCHROME1":
                    arr = -arr  # meddx mirrors MONOCHROME1; compared up to the constant (see compare)
                return arr, ""
            if fmt == "nifti":
                import nibabel as nib

                img = nib.load(str(path))
                if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
                    return None, f"{type(img).__name__}, not NIfTI"
                return np.asarray(nib.as_closest_canonical(img).get_fdata(), dtype=np.float64), ""
            if fmt == "edf":
                import pyedflib

                reader = pyedflib.EdfReader(str(path))
                try:
                    rates = [reader.getSampleFrequency(i) for i in range(reader.signals_in_file)]
                    top = max(rates)
                    cols = [reader.readSignal(i) for i, r in enumerate(rates) if r == top]
                finally:
                    reader.close()
                n = min(len(c) for c in cols)
                return np.stack([c[:n] for c in cols], axis=1), ""
            if fmt == "wfdb":
                import wfdb

                return np.asarray(wfdb.rdrecord(str(path.with_suffix(""))).p_signal, dtype=np.float64), ""
        except Exception as exc:  # noqa: BLE001 - the library refusing is an answer
            return None, f"{type(exc).__name__}: {str(exc)[:100]}"
    return None, "unknown format"


def compare(fmt: str, ours: np.ndarray, theirs: np.ndarray, monochrome1: bool) -> bool:
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape:
        a, b = np.squeeze(a), np.squeeze(b)
    if a.shape != b.shape:
        return False
    if monochrome1:  # meddx gives low + high - x: the sum is constant
        total = a - b  # b is -x
        return bool(np.allclose(total, total.flat[0], rtol=1e-5, atol=1e-3)) if total.size else True
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return False
    scale = max(1.0, float(np.nanmax(np.abs(b), initial=0)))
    return bool(np.allclose(a, b, rtol=1e-5, atol=1e-6 * scale, equal_nan=True))


def corpus_check(fmt: str, path: Path) -> tuple[str, str]:
    """Outcome of one corpus file: agree, both_refuse, meddx_refuses, library_refuses, differ, raw_exception."""
    from meddx.data.readers import read
    from meddx.exceptions import MeddxError

    theirs, why = library_read(fmt, path)
    reader = {"dicom": "dicom", "nifti": "nifti", "edf": "edf", "wfdb": "wfdb"}[fmt]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample = read(path, reader=reader)
    except MeddxError as exc:
        if why == "no pixel data":
            return "no_pixel_data", f"{path.name}: meddx: {type(exc).__name__}"
        if theirs is None:
            return "both_refuse", f"{path.name}: library: {why}; meddx: {type(exc).__name__}"
        return "meddx_refuses", f"{path.name}: {type(exc).__name__}: {str(exc)[:200]}"
    except Exception as exc:  # noqa: BLE001
        return "raw_exception", f"{path.name}: {type(exc).__name__}: {str(exc)[:150]}"
    ours = getattr(sample, "array", None) if fmt in ("dicom", "nifti") else getattr(sample, "data", None)
    if theirs is None:
        if why == "no pixel data":
            return "agree", ""  # meddx reads such DICOMs as non-image samples (waveforms, reports)
        return "library_refuses", f"{path.name}: library: {why}"
    mono1 = fmt == "dicom" and getattr(sample, "meta", {}).get("photometric_original", "") == "MONOCHROME1"
    mono1 = mono1 or (fmt == "dicom" and _is_monochrome1(path))
    if ours is None or not compare(fmt, ours, theirs, mono1):
        shape = getattr(ours, "shape", None)
        return "differ", f"{path.name}: meddx {shape} vs library {theirs.shape}"
    return "agree", ""


def _is_monochrome1(path: Path) -> bool:
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        return str(ds.get("PhotometricInterpretation")) == "MONOCHROME1"
    except Exception:  # noqa: BLE001
        return False


def run_corpora(limit_per_format: int | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for fmt, files in corpus_files().items():
        outcomes: Counter[str] = Counter()
        examples: dict[str, list[str]] = {}
        for path in files[:limit_per_format]:
            outcome, detail = corpus_check(fmt, path)
            outcomes[outcome] += 1
            if detail:
                examples.setdefault(outcome, []).append(detail)
        result[fmt] = {"files": len(files[:limit_per_format]), "outcomes": dict(outcomes), "examples": examples}
    return result


# --------------------------------------------------------------------------- the benchmark


def _worker_init() -> None:
    import logging

    logging.getLogger("nibabel").setLevel(logging.ERROR)  # "magic string ... not valid" on every bad magic
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, hard))
    except (ValueError, OSError):  # pragma: no cover
        pass


_WORKER_SEEDS: dict[str, dict[str, list[Seed]]] = {}


def _worker_seeds(samples: str | None) -> dict[str, list[Seed]]:
    """The seeds, built once per worker process."""
    key = samples or ""
    if key not in _WORKER_SEEDS:
        work = Path(tempfile.mkdtemp(prefix="meddx-fuzz-seeds-"))
        try:
            _WORKER_SEEDS[key] = all_seeds(work, Path(samples) if samples else None)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return _WORKER_SEEDS[key]


def _run_chunk(args: tuple[str, int, int, str | None]) -> tuple[str, dict[str, Any], float]:
    fmt, start, stop, samples = args
    seeds = _worker_seeds(samples)[fmt]
    work = Path(tempfile.mkdtemp(prefix=f"meddx-fuzz-{fmt}-"))
    try:
        t0 = time.perf_counter()
        tally = fuzz_format(seeds, stop, work, start=start)
        return fmt, _tally_state(tally), time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tally_state(tally: Tally) -> dict[str, Any]:
    return {"mutants": tally.mutants, "outcomes": dict(tally.outcomes), "errors": dict(tally.errors),
            "kinds": dict(tally.kinds), "checkable": tally.checkable, "examples": tally.examples}


def _tally_from(state: dict[str, Any]) -> Tally:
    return Tally(state["mutants"], Counter(state["outcomes"]), Counter(state["errors"]), Counter(state["kinds"]),
                 state["checkable"], state["examples"])


OWNERS = {"dicom": "dicom.py (other helper)", "nifti": "nifti.py (other helper)",
          "image": "image.py (other helper)", "npz": "npz.py (other helper)"}


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("`", "'")


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# Reader fuzzing and third-party corpora (issue 18)",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}; {payload['seconds']:.0f} s; "
        f"mutants per format: {payload['mutants_per_format']}",
        "",
        "Contract: `meddx.read` returns correct data or raises a meddx error naming the file (and field); "
        "never a raw exception, a hang (over "
        f"{READ_LIMIT_S:g} s) or silently wrong data. *Silently wrong* counts reads of checkable mutants "
        "(an integrity check covers the data: WFDB checksums over a mutated signal file, gzip/zip CRC-32, PNG CRC) "
        "that return data different from the seed, plus reads that break an invariant (empty or 0-d image, "
        "NaN/inf values). *Checksum collisions* are WFDB mutants whose samples still match every 16-bit checksum "
        "(no reader can detect them).",
        "",
        "| format | mutants | meddx errors | clean reads | raw exceptions | hangs | silently wrong (checkable) "
        "| invariant broken | checkable mutants | checksum collisions | errors without a field |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fmt, t in payload["formats"].items():
        o = t["outcomes"]
        no_field = sum(v for k, v in t["meddx_errors"].items() if "(no field)" in k)
        lines.append(
            f"| {fmt} | {t['mutants']} | {o.get('meddx_error', 0)} | {o.get('clean', 0)} | "
            f"{o.get('raw_exception', 0)} | {o.get('hang', 0)} | {o.get('silent_wrong', 0)} | "
            f"{o.get('invariant', 0)} | {t['checkable_mutants']} | {o.get('checksum_collision', 0)} | {no_field} |"
        )
    lines += ["", "Seeds: " + "; ".join(f"{fmt}: {', '.join(names)}" for fmt, names in payload["seeds"].items()), ""]
    bad = [(fmt, k, v) for fmt, t in payload["formats"].items() for k, v in t["examples"].items()
           if k != "checksum_collision"]
    if bad:
        lines += ["## Examples of contract breaks (the reader that owns each is named)", ""]
        for fmt, kind, values in bad:
            owner = f" ({OWNERS[fmt]})" if fmt in OWNERS else ""
            lines.append(f"- **{fmt}{owner}, {kind}**: " + "; ".join(f"`{_one_line(v)[:240]}`" for v in values[:4]))
        lines.append("")
    collisions = {fmt: t["outcomes"].get("checksum_collision", 0) for fmt, t in payload["formats"].items()}
    if any(collisions.values()):
        lines += ["Checksum collisions (not contract breaks): "
                  + "; ".join(f"{fmt}: {n} mutants whose changed samples keep every 16-bit checksum "
                              "(e.g. two bit flips that cancel in the sum)" for fmt, n in collisions.items() if n),
                  ""]
    lines += ["## Third-party corpora (files shipped inside the installed packages)", "",
              "| format | files | agree with the library | no pixel data (library reads the data set, meddx "
              "says MissingFieldError) | both refuse | meddx refuses | library refuses | data differ "
              "| raw exceptions |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for fmt, c in payload["corpora"].items():
        o = c["outcomes"]
        lines.append(f"| {fmt} | {c['files']} | {o.get('agree', 0)} | {o.get('no_pixel_data', 0)} | "
                     f"{o.get('both_refuse', 0)} | "
                     f"{o.get('meddx_refuses', 0)} | {o.get('library_refuses', 0)} | {o.get('differ', 0)} | "
                     f"{o.get('raw_exception', 0)} |")
    lines.append("")
    lines.append("wfdb-python ships no test records in its installed package; WFDB is covered by the mirror's "
                 "records and the generated ones above.")
    for fmt, c in payload["corpora"].items():
        for kind in ("both_refuse", "meddx_refuses", "library_refuses", "differ", "raw_exception"):
            if c["examples"].get(kind):
                lines.append(f"- {fmt} {kind}: " + "; ".join(f"`{_one_line(v)}`" for v in c["examples"][kind][:12]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from bench._common import command_line, write_results

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=10_000, help="mutants per format")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--no-corpora", action="store_true")
    parser.add_argument("--stem", default="fuzz")
    args = parser.parse_args(argv)
    mirror = os.environ.get("MEDDX_DATA_MIRROR")
    samples = str(Path(mirror) / "format-samples") if mirror else None
    formats = [f for f in args.formats.split(",") if f]

    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="meddx-fuzz-seeds-"))
    seed_names = {fmt: [s.name for s in items]
                  for fmt, items in all_seeds(work, Path(samples) if samples else None).items() if fmt in formats}
    shutil.rmtree(work, ignore_errors=True)
    jobs = [(fmt, start, min(start + args.chunk, args.mutants), samples)
            for start in range(0, args.mutants, args.chunk) for fmt in formats]
    totals = {fmt: Tally() for fmt in formats}
    seconds: Counter[str] = Counter()
    with ProcessPoolExecutor(max_workers=args.workers, initializer=_worker_init) as pool:
        futures = [pool.submit(_run_chunk, job) for job in jobs]
        for done, future in enumerate(as_completed(futures), start=1):
            fmt, state, secs = future.result()
            totals[fmt].merge(_tally_from(state))
            seconds[fmt] += secs
            print(f"[{done}/{len(jobs)}] {fmt}: {totals[fmt].mutants} mutants, {dict(totals[fmt].outcomes)}",
                  flush=True)
    corpora = {} if args.no_corpora else run_corpora()
    payload = {
        "command": command_line(),
        "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {args.workers} workers",
        "seconds": time.perf_counter() - t0,
        "mutants_per_format": args.mutants,
        "read_limit_s": READ_LIMIT_S,
        "seeds": seed_names,
        "formats": {fmt: {**totals[fmt].as_dict(), "cpu_seconds": round(seconds[fmt], 1)} for fmt in formats},
        "corpora": corpora,
    }
    json_path, md_path = write_results(args.stem, payload, markdown(payload))
    print(markdown(payload))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
