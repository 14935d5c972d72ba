"""TID 1500 Measurement Reports for boxes and masks on real CT and MR samples, re-read finding by finding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

from meddx.exceptions import ConfigError, InvalidValueError, MissingFieldError  # noqa: E402
from meddx.outputs import read_sr, write_seg, write_sr  # noqa: E402
from meddx.tasks.volume.phantoms import write_dicom_series  # noqa: E402

BOXES = [
    {"label": "RBC", "score": 0.91, "box": [10.0, 20.0, 30.0, 44.5]},
    {"label": "WBC", "score": 0.5, "box": [0.0, 0.0, 64.0, 64.0]},
    {"label": "RBC", "score": 0.25, "box": [1.0, 2.0, 3.0, 4.0]},
]


def _samples() -> Path:
    from meddx.data.catalogue import fetch

    return fetch("format-samples") / "dicom"


def _content_item(ds: object, meaning: str) -> object:
    return next(item for item in ds.ContentSequence if item.ConceptNameCodeSequence[0].CodeMeaning == meaning)


@pytest.mark.mirror
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_boxes_on_format_sample_round_trip(name: str, tmp_path: Path) -> None:
    path = _samples() / name
    source = pydicom.dcmread(path)
    out = write_sr(path, findings=BOXES, out=tmp_path / "sr.dcm", algorithm="meddx-detector", version="2.0")
    back = read_sr(out)
    boxes = [f for f in back if "box" in f]
    assert [(f["label"], f["box"], f["score"]) for f in boxes] == [(b["label"], b["box"], b["score"]) for b in BOXES]
    row, col = (float(v) for v in source.PixelSpacing)
    for found, given in zip(boxes, BOXES, strict=True):
        x0, y0, x1, y1 = given["box"]
        assert found["area_px"] == pytest.approx((x1 - x0) * (y1 - y0))
        assert found["area_mm2"] == pytest.approx((x1 - x0) * (y1 - y0) * row * col)
    assert boxes[0]["code"] == ("41898006", "SCT", "Erythrocyte")
    assert {f["label"]: f["count"] for f in back if "count" in f} == {"RBC": 2, "WBC": 1}

    sr = pydicom.dcmread(out)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
    assert (sr.StudyInstanceUID, sr.PatientID) == (source.StudyInstanceUID, source.PatientID)
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    measurements = _content_item(sr, "Imaging Measurements")
    first = next(i for i in measurements.ContentSequence if i.ValueType == "CONTAINER")
    region = next(i for i in first.ContentSequence if i.ValueType == "SCOORD")
    assert region.GraphicType == "POLYLINE"
    assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


@pytest.mark.mirror
def test_mask_findings_reference_the_segments_of_a_seg(tmp_path: Path) -> None:
    path = _samples() / "CT_small.dcm"
    mask = np.zeros((128, 128), dtype=np.uint8)
    mask[30:60, 40:90] = 1
    mask[70:80, 10:20] = 2
    seg = write_seg(path, mask, classes=["lesion", "vessel"], out=tmp_path / "seg.dcm", algorithm="unet", version="1")
    findings = [{"label": name, "area_px": int((mask == k).sum()), "fraction": float((mask == k).mean())}
                for k, name in ((1, "lesion"), (2, "vessel"))]
    out = write_sr(path, findings=findings, out=tmp_path / "sr.dcm", algorithm="unet", version="1", seg=seg)
    back = read_sr(out)
    seg_uid = pydicom.dcmread(seg).SOPInstanceUID
    assert [(f["label"], f["area_px"], f["fraction"], f["segment_number"], f["seg_sop_instance_uid"]) for f in back] \
        == [("lesion", 1500.0, 1500 / 128**2, 1, seg_uid), ("vessel", 100.0, 100 / 128**2, 2, seg_uid)]
    # without a SEG the same findings are image-level measurements
    plain = read_sr(write_sr(path, findings=findings, out=tmp_path / "sr2.dcm", algorithm="unet", version="1"))
    assert [(f["label"], f["area_px"]) for f in plain] == [("lesion", 1500.0), ("vessel", 100.0)]
    assert all("segment_number" not in f for f in plain)
    with pytest.raises(MissingFieldError, match="'tumour' but the SEG has no such segment") as info:
        write_sr(path, findings=[{"label": "tumour", "area_px": 3}], out=tmp_path / "x.dcm", algorithm="u",
                 version="1", seg=seg)
    assert "lesion, vessel" in str(info.value)


def test_pixel_units_without_spacing(tmp_path: Path) -> None:
    source = write_dicom_series(np.zeros((1, 20, 30)), tmp_path / "s")[0]
    ds = pydicom.dcmread(source)
    del ds.PixelSpacing
    back = read_sr(write_sr(ds, findings=BOXES[2:], out=tmp_path / "sr.dcm", algorithm="m", version="1"))
    assert back[0]["area_px"] == 4.0 and "area_mm2" not in back[0]


def test_bad_findings_name_the_finding_and_field(tmp_path: Path) -> None:
    source = write_dicom_series(np.zeros((1, 20, 30)), tmp_path / "s")[0]
    outside = [BOXES[2], {"label": "WBC", "score": 0.4, "box": [5, 5, 31, 10]}]
    with pytest.raises(InvalidValueError, match=r"findings\[1\]\.box \[5, 5, 31, 10\] is empty or outside the "
                       r"image of 30 columns x 20 rows") as info:
        write_sr(source, findings=outside, out=tmp_path / "sr.dcm", algorithm="m", version="1")
    assert info.value.field == "findings[1].box" and info.value.path == str(source)
    with pytest.raises(ConfigError, match=r"findings\[0\] has no label"):
        write_sr(source, findings=[{"box": [0, 0, 1, 1]}], out=tmp_path / "sr.dcm", algorithm="m", version="1")
    with pytest.raises(InvalidValueError, match=r"findings\[0\]\.score is 1\.5"):
        write_sr(source, findings=[{"label": "a", "score": 1.5, "box": [0, 0, 1, 1]}], out=tmp_path / "sr.dcm",
                 algorithm="m", version="1")
    assert not (tmp_path / "sr.dcm").exists()


@pytest.mark.mirror
def test_a_waveform_is_not_a_source_image(tmp_path: Path) -> None:
    ecg = _samples() / "waveform_ecg.dcm"
    with pytest.raises(MissingFieldError, match="not an image") as info:
        write_sr(ecg, findings=BOXES, out=tmp_path / "sr.dcm", algorithm="m", version="1")
    assert info.value.path == str(ecg)
