"""The strict DICOM series reader: order, spacing, rescale, and errors that name the files concerned."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from meddx.data import read
from meddx.data.readers.series import read_series
from meddx.exceptions import EmptyDataError, InvalidValueError
from meddx.tasks.volume.phantoms import write_dicom_series


def _volume(n: int = 5, rows: int = 6, cols: int = 7) -> np.ndarray:
    """Slice k is filled with 100 * k + pixel index, so the order is visible in the values."""
    base = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    return np.stack([base + 100.0 * k for k in range(n)])


def _series(folder: Path, n: int = 5, *, shuffle: bool = True, **options: object) -> list[Path]:
    order = [3, 0, 4, 1, 2, 5, 6, 7][:n] if shuffle else list(range(n))
    names = [f"img{i}.dcm" for i in order]  # file names do not follow the slice order
    return write_dicom_series(_volume(n), folder, names=names, **options)


def test_slices_come_back_in_position_order_with_spacing_rescale_and_affine(tmp_path: Path) -> None:
    paths = _series(tmp_path / "s", spacing=(2.5, 0.7, 0.8), origin=(10.0, -20.0, 30.0))
    sample = read(tmp_path / "s", reader="dicom_series")
    assert sample.format == "dicom_series"
    assert sample.shape == (5, 6, 7)
    assert sample.array.dtype == np.float32
    np.testing.assert_array_equal(sample.array, _volume(5))  # stored - 1024 + intercept -1024 back to values
    assert pydicom.dcmread(paths[0]).RescaleIntercept == -1024
    assert sample.spacing == pytest.approx((2.5, 0.7, 0.8))
    assert sample.meta["files"] == [p.name for p in paths]
    # columns: slice step (+z, 2.5 mm), row step (+y, 0.7 mm), column step (+x, 0.8 mm), origin
    expected = np.array([[0, 0, 0.8, 10.0], [0, 0.7, 0, -20.0], [2.5, 0, 0, 30.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(sample.affine, expected)
    assert sample.orientation == ("S", "P", "L")
    # voxel (k, r, c) -> the ImagePositionPatient of slice k plus the in-plane offset
    ipp = [float(v) for v in pydicom.dcmread(paths[3]).ImagePositionPatient]
    np.testing.assert_allclose((sample.affine @ [3, 0, 0, 1])[:3], ipp)


def test_descending_positions_and_instance_number_fallback(tmp_path: Path) -> None:
    paths = write_dicom_series(_volume(4), tmp_path / "s", spacing=(-3.0, 1.0, 1.0))  # z decreasing
    sample = read_series(tmp_path / "s")
    np.testing.assert_array_equal(sample.array, _volume(4)[::-1])
    assert sample.spacing[0] == pytest.approx(3.0)
    for path in paths:  # no positions: InstanceNumber decides, with a warning
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        ds.save_as(path)
    with pytest.warns(UserWarning, match="InstanceNumber"):
        sample = read_series(tmp_path / "s")
    np.testing.assert_array_equal(sample.array, _volume(4))


def test_gap_names_both_neighbours_and_allow_gaps_reads_on(tmp_path: Path) -> None:
    paths = write_dicom_series(_volume(6), tmp_path / "s", spacing=(2.0, 1.0, 1.0))
    paths[3].unlink()  # z = 6 mm missing: 4 mm between slice_002 and slice_004
    with pytest.raises(InvalidValueError, match=r"gap of 4\.000 mm between slice_002\.dcm and slice_004\.dcm") as info:
        read_series(tmp_path / "s")
    assert info.value.field == "ImagePositionPatient"
    assert "allow_gaps=True" in str(info.value)
    with pytest.warns(UserWarning, match="slice_002.dcm and slice_004.dcm"):
        sample = read_series(tmp_path / "s", allow_gaps=True)
    assert sample.shape == (5, 6, 7)
    assert sample.meta["gaps"] == [{"after": "slice_002.dcm", "before": "slice_004.dcm", "distance_mm": 4.0,
                                    "missing": 1}]


def test_gap_in_a_three_slice_series_is_found(tmp_path: Path) -> None:
    paths = write_dicom_series(_volume(4), tmp_path / "s", spacing=(2.0, 1.0, 1.0))
    paths[2].unlink()
    with pytest.raises(InvalidValueError, match="slice_001.dcm and slice_003.dcm"):
        read_series(tmp_path / "s")


def test_small_jitter_is_not_a_gap(tmp_path: Path) -> None:
    paths = write_dicom_series(_volume(4), tmp_path / "s", spacing=(2.0, 1.0, 1.0))
    ds = pydicom.dcmread(paths[2])
    ds.ImagePositionPatient = [0.0, 0.0, 4.4]
    ds.save_as(paths[2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_series(tmp_path / "s").shape == (4, 6, 7)


def test_duplicated_position_names_both_files(tmp_path: Path) -> None:
    paths = write_dicom_series(_volume(4), tmp_path / "s", spacing=(2.0, 1.0, 1.0))
    ds = pydicom.dcmread(paths[1])
    ds.ImagePositionPatient = [0.0, 0.0, 4.0]  # the position of slice_002
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "s" / "copy.dcm")
    with pytest.raises(InvalidValueError, match="(copy.dcm and slice_002.dcm|slice_002.dcm and copy.dcm) lie at the "
                       "same position"):
        read_series(tmp_path / "s")


@pytest.mark.parametrize(
    ("keyword", "value", "field"),
    [
        ("SeriesInstanceUID", "1.2.3.4.5", "SeriesInstanceUID"),
        ("ImageOrientationPatient", [0.0, 1.0, 0.0, 0.0, 0.0, -1.0], "ImageOrientationPatient"),
    ],
)
def test_mixed_series_or_orientation_names_the_odd_file(tmp_path: Path, keyword: str, value: object,
                                                        field: str) -> None:
    paths = write_dicom_series(_volume(5), tmp_path / "s")
    ds = pydicom.dcmread(paths[2])
    setattr(ds, keyword, value)
    ds.save_as(paths[2])
    with pytest.raises(InvalidValueError) as info:
        read_series(tmp_path / "s")
    assert info.value.path == str(paths[2])
    assert info.value.field == field


def test_mixed_sizes_name_the_odd_file(tmp_path: Path) -> None:
    write_dicom_series(_volume(4), tmp_path / "s")
    odd = write_dicom_series(np.zeros((1, 5, 5)), tmp_path / "other", origin=(0.0, 0.0, 8.0))[0]
    template = pydicom.dcmread(tmp_path / "s" / "slice_000.dcm")
    ds = pydicom.dcmread(odd)
    for keyword in ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"):
        setattr(ds, keyword, getattr(template, keyword))
    ds.save_as(tmp_path / "s" / "small.dcm")
    with pytest.raises(InvalidValueError, match=r"size \(rows, columns\) \(5, 5\) differs from \(6, 7\)") as info:
        read_series(tmp_path / "s")
    assert info.value.path == str(tmp_path / "s" / "small.dcm")


def test_series_uid_picks_one_series(tmp_path: Path) -> None:
    write_dicom_series(_volume(3), tmp_path / "s", series_uid="1.2.3.1", names=["a0.dcm", "a1.dcm", "a2.dcm"])
    write_dicom_series(_volume(2), tmp_path / "s", series_uid="1.2.3.2", names=["b0.dcm", "b1.dcm"])
    assert read_series(tmp_path / "s", series_uid="1.2.3.2").shape == (2, 6, 7)
    with pytest.raises(InvalidValueError, match="SeriesInstanceUID"):
        read_series(tmp_path / "s")


def test_folder_without_dicom_images(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(EmptyDataError, match="no DICOM files") as info:
        read_series(tmp_path / "empty")
    assert info.value.path == str(tmp_path / "empty")


@pytest.mark.mirror
def test_ct_format_sample_split_into_a_series(tmp_path: Path) -> None:
    from meddx.data.catalogue import fetch

    ct_path = fetch("format-samples") / "dicom" / "CT_small.dcm"
    ct = read(ct_path)
    volume = np.stack([ct.array + 10.0 * k for k in range(4)])
    write_dicom_series(volume, tmp_path / "ct", template=ct_path, spacing=(5.0, *ct.spacing),
                       origin=ct.meta["ImagePositionPatient"], names=["d.dcm", "b.dcm", "a.dcm", "c.dcm"])
    sample = read(tmp_path / "ct", reader="dicom_series")
    np.testing.assert_array_equal(sample.array, volume)
    assert sample.spacing == pytest.approx((5.0, *ct.spacing))
    assert sample.modality == "CT"
    assert sample.meta["files"] == ["d.dcm", "b.dcm", "a.dcm", "c.dcm"]
    assert sample.patient_id == ct.patient_id
