"""DICOM SEG written for real CT and MR samples and a generated CT series, re-read voxel by voxel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

from meddx.exceptions import ConfigError, InvalidValueError, LabelShapeError, MissingFieldError  # noqa: E402
from meddx.outputs import read_seg, write_seg  # noqa: E402
from meddx.tasks.volume.phantoms import write_dicom_series  # noqa: E402


def _samples() -> Path:
    from meddx.data.catalogue import fetch

    return fetch("format-samples") / "dicom"


def _mask(rows: int, cols: int) -> np.ndarray:
    mask = np.zeros((rows, cols), dtype=np.uint8)
    mask[rows // 4 : rows // 2, cols // 3 : cols - 4] = 1
    mask[rows - 10 : rows - 3, 2:9] = 2
    mask[0, 0] = 2  # a corner pixel: orientation mistakes show
    return mask


def _assert_same_geometry(geometry: dict, source: object) -> None:
    assert geometry["pixel_spacing"] == pytest.approx([float(v) for v in source.PixelSpacing])
    assert geometry["image_orientation"] == pytest.approx([float(v) for v in source.ImageOrientationPatient])
    assert geometry["frame_of_reference_uid"] == source.FrameOfReferenceUID


@pytest.mark.mirror
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_binary_seg_on_format_sample_round_trips(name: str, tmp_path: Path) -> None:
    path = _samples() / name
    source = pydicom.dcmread(path)
    mask = _mask(int(source.Rows), int(source.Columns))
    out = write_seg([path], mask, classes=["vessel", "lesion"], out=tmp_path / "seg.dcm",
                    algorithm="meddx-unet", version="1.2.0")
    back, classes, geometry = read_seg(out)
    assert classes == ["vessel", "lesion"]
    assert back.shape == (1, *mask.shape)
    np.testing.assert_array_equal(back[0], mask)
    _assert_same_geometry(geometry, source)
    assert geometry["image_positions"] == [pytest.approx([float(v) for v in source.ImagePositionPatient])]
    assert geometry["source_sop_instance_uids"] == [source.SOPInstanceUID]
    assert (geometry["algorithm"], geometry["version"]) == ("meddx-unet", "1.2.0")

    seg = pydicom.dcmread(out)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.SegmentationType == "BINARY"
    assert list(seg.ImageType)[0] == "DERIVED"
    assert (seg.StudyInstanceUID, seg.PatientID) == (source.StudyInstanceUID, source.PatientID)
    derivation = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert derivation.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    vessel, lesion = seg.SegmentSequence
    assert vessel.SegmentedPropertyTypeCodeSequence[0].CodeValue == "59820001"  # SCT blood vessel
    assert vessel.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"  # anatomical structure
    assert lesion.SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"  # SCT lesion
    assert lesion.SegmentAlgorithmType == "AUTOMATIC"
    assert lesion.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "meddx-unet"


@pytest.mark.mirror
def test_fractional_seg_keeps_probabilities(tmp_path: Path) -> None:
    path = _samples() / "MR_small.dcm"
    rng = np.random.default_rng(0)
    probability = rng.random((64, 64, 2)).astype(np.float32)
    mask = np.where(probability.max(axis=-1) >= 0.5, probability.argmax(axis=-1) + 1, 0).astype(np.uint8)
    out = write_seg(path, mask, classes=["tumour", "edema"], out=tmp_path, algorithm="m", version="1",
                    probability=probability)
    assert out.parent == tmp_path and out.name.startswith("SEG_")
    back, _, geometry = read_seg(out, as_probability=True)
    assert geometry["segmentation_type"] == "FRACTIONAL"
    np.testing.assert_allclose(back[0], probability, atol=0.5 / 255 + 1e-6)
    labels, _, _ = read_seg(out)
    agree = labels[0] == mask  # quantisation may flip voxels within 1/255 of 0.5 or of a tie
    assert agree.mean() > 0.99


def _series_seg_round_trip(folder: Path, tmp_path: Path) -> None:
    from meddx.data.readers.series import read_series

    volume = read_series(folder)
    slices = [folder / name for name in volume.meta["files"]]  # sorted along the slice normal
    mask = np.zeros(volume.shape, dtype=np.uint8)
    mask[1, 5:9, 3:7] = 1
    mask[2:, 10:12, :] = 1
    mask[-1, 0, 0] = 1
    out = write_seg(slices, mask, classes=["liver"], out=tmp_path / "series-seg.dcm", algorithm="unet3d",
                    version="0.1")
    back, classes, geometry = read_seg(out)
    assert classes == ["liver"]
    np.testing.assert_array_equal(back, mask)
    np.testing.assert_allclose(geometry["image_positions"], volume.meta["slice_positions"], atol=1e-4)
    assert geometry["source_sop_instance_uids"] == volume.meta["sop_instance_uids"]
    _assert_same_geometry(geometry, pydicom.dcmread(slices[0]))


def test_multi_slice_seg_on_a_generated_series(tmp_path: Path) -> None:
    volume = np.random.default_rng(1).normal(size=(4, 16, 12)) * 50
    write_dicom_series(volume, tmp_path / "ct", spacing=(3.0, 0.8, 0.8), names=["c.dcm", "a.dcm", "d.dcm", "b.dcm"])
    _series_seg_round_trip(tmp_path / "ct", tmp_path)


@pytest.mark.mirror
def test_multi_slice_seg_on_ct_sample_split_into_a_series(tmp_path: Path) -> None:
    path = _samples() / "CT_small.dcm"
    ct = pydicom.dcmread(path)
    plane = ct.pixel_array.astype(np.float32) + float(ct.RescaleIntercept)
    write_dicom_series(np.stack([plane + 5 * k for k in range(3)]), tmp_path / "ct", template=path,
                       spacing=(5.0, *[float(v) for v in ct.PixelSpacing]),
                       origin=[float(v) for v in ct.ImagePositionPatient])
    _series_seg_round_trip(tmp_path / "ct", tmp_path)


def _phantom_slice(tmp_path: Path) -> Path:
    return write_dicom_series(np.zeros((1, 8, 10)), tmp_path / "one")[0]


def test_mask_of_the_wrong_shape_names_the_source_and_expected_shape(tmp_path: Path) -> None:
    source = _phantom_slice(tmp_path)
    with pytest.raises(LabelShapeError, match=r"shape \(10, 8\).*1 frame\(s\) of 8 rows x 10 columns") as info:
        write_seg([source], np.zeros((10, 8), np.uint8), classes=["a"], out=tmp_path / "s.dcm", algorithm="m",
                  version="1")
    assert info.value.field == "mask" and info.value.path == str(source)
    with pytest.raises(LabelShapeError, match=r"\(1, 8, 10\)"):
        write_seg([source], np.zeros((2, 8, 10), np.uint8), classes=["a"], out=tmp_path / "s.dcm", algorithm="m",
                  version="1")


def test_reading_back_something_else_is_refused(tmp_path: Path) -> None:
    from meddx.outputs import read_sr

    source = _phantom_slice(tmp_path)
    with pytest.raises(InvalidValueError, match="not a DICOM Segmentation") as info:
        read_seg(source)
    assert info.value.field == "SOPClassUID"
    with pytest.raises(MissingFieldError, match="not a structured report"):
        read_sr(source)


def test_empty_classes_and_values_beyond_them_are_refused(tmp_path: Path) -> None:
    source = _phantom_slice(tmp_path)
    with pytest.raises(ConfigError, match="class list is empty") as info:
        write_seg(source, np.zeros((8, 10), np.uint8), classes=[], out=tmp_path / "s.dcm", algorithm="m", version="1")
    assert info.value.field == "classes"
    mask = np.zeros((8, 10), np.uint8)
    mask[0, 0] = 3
    with pytest.raises(InvalidValueError, match="run from 0 to 3 but there are 2 class"):
        write_seg(source, mask, classes=["a", "b"], out=tmp_path / "s.dcm", algorithm="m", version="1")
    with pytest.raises(InvalidValueError, match=r"within \[0, 1\]"):
        write_seg(source, mask.clip(0, 1), classes=["a"], out=tmp_path / "s.dcm", algorithm="m", version="1",
                  probability=np.full((8, 10), 1.5))


@pytest.mark.mirror
def test_a_waveform_is_not_a_source_image(tmp_path: Path) -> None:
    ecg = _samples() / "waveform_ecg.dcm"
    with pytest.raises(MissingFieldError, match="not an image") as info:
        write_seg([ecg], np.zeros((4, 4), np.uint8), classes=["a"], out=tmp_path / "s.dcm", algorithm="m",
                  version="1")
    assert info.value.path == str(ecg) and info.value.field == "PixelData"
    assert not (tmp_path / "s.dcm").exists()


def test_a_source_without_its_uids_is_a_missing_field_error_naming_it(tmp_path: Path) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from meddx.exceptions import MissingFieldError
    from meddx.outputs import write_seg

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", generate_uid()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 4, 4, 8, 8, 7
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.PixelData = bytes(16)
    with pytest.raises(MissingFieldError, match="StudyInstanceUID or SeriesInstanceUID") as err:
        write_seg(ds, np.ones((4, 4), dtype=np.uint8), classes=["vessel"], out=tmp_path / "s.dcm",
                  algorithm="m", version="1")
    assert err.value.field == "StudyInstanceUID"
