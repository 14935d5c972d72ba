"""DICOM reader: the mirror's sample files checked against pydicom, generated edge cases, bad files."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.pixels import apply_modality_lut, apply_voi_lut, convert_color_space  # noqa: E402
from pydicom.uid import (  # noqa: E402
    CTImageStorage,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from meddx.data.readers._base import _BUILTIN_MODULES  # noqa: E402
from meddx.data.readers.dicom import DicomReader  # noqa: E402
from meddx.data.sample import ImageSample, SignalSample  # noqa: E402
from meddx.exceptions import (  # noqa: E402
    ConfigError,
    CorruptFileError,
    EmptyDataError,
    InvalidValueError,
    MissingFieldError,
)

READER = DicomReader()


def _all_readers_present() -> bool:
    return all(importlib.util.find_spec(f"meddx.data.readers.{m}") for m in _BUILTIN_MODULES)


def _write(
    path: Path,
    arr: np.ndarray | None,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **tags: Any,
) -> Path:
    """Write a small CT-like Part 10 file with pydicom; ``arr=None`` leaves PixelData out."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientID = "TEST-1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    if arr is not None:
        ds.set_pixel_data(arr, photometric, bits_stored or arr.dtype.itemsize * 8)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def _read_ds(path: Path) -> Any:
    return pydicom.dcmread(path)


# -- the mirror's files -----------------------------------------------------------------

SAMPLES = [
    # name, shape, modality, spacing, photometric
    ("CT_small.dcm", (128, 128), "CT", (0.661468, 0.661468), "MONOCHROME2"),
    ("MR_small.dcm", (64, 64), "MR", (0.3125, 0.3125), "MONOCHROME2"),
    ("MR2_UNCR.dcm", (1024, 1024), "MR", (0.195313, 0.195313), "MONOCHROME2"),
    ("US1_UNCR.dcm", (480, 640, 3), "US", None, "RGB"),
    ("nibabel_siemens_0.dcm", (256, 256), "MR", (1.796875, 1.796875), "MONOCHROME2"),
]


@pytest.mark.mirror
@pytest.mark.parametrize(("name", "shape", "modality", "spacing", "photometric"), SAMPLES)
def test_mirror_images_have_documented_shape_and_spacing(
    format_samples: Path, name: str, shape: tuple[int, ...], modality: str, spacing: Any, photometric: str
) -> None:
    path = format_samples / "dicom" / name
    sample = READER.read(path)
    assert isinstance(sample, ImageSample)
    assert sample.format == "dicom"
    assert sample.shape == shape
    assert sample.modality == modality
    assert sample.photometric == photometric
    if spacing is None:
        assert sample.spacing is None
    else:
        assert sample.spacing == pytest.approx(spacing)
    ds = _read_ds(path)
    assert sample.patient_id == ds.PatientID
    assert sample.study_id == ds.StudyInstanceUID
    assert sample.meta["SeriesInstanceUID"] == ds.SeriesInstanceUID
    assert sample.meta["SOPClassUID"] == ds.SOPClassUID
    assert sample.meta["Rows"] == shape[0] and sample.meta["Columns"] == shape[1]
    assert sample.meta["BitsAllocated"] == ds.BitsAllocated
    assert sample.meta["NumberOfFrames"] == 1


@pytest.mark.mirror
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR2_UNCR.dcm"])
def test_mirror_rescale_matches_pydicom(format_samples: Path, name: str) -> None:
    path = format_samples / "dicom" / name
    ds = _read_ds(path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    sample = READER.read(path)
    assert sample.array.dtype == np.float32
    np.testing.assert_allclose(sample.array, expected, rtol=1e-6, atol=1e-3)


@pytest.mark.mirror
def test_ct_small_is_in_hounsfield_units(format_samples: Path) -> None:
    sample = READER.read(format_samples / "dicom" / "CT_small.dcm")
    raw = _read_ds(format_samples / "dicom" / "CT_small.dcm").pixel_array
    assert raw.dtype == np.int16
    np.testing.assert_array_equal(sample.array, raw.astype(np.float32) - 1024.0)
    assert sample.orientation == ("P", "L")  # axial: rows run posterior, columns to the left
    assert sample.affine is not None
    np.testing.assert_allclose(sample.affine[:3, 3], [-158.135803, -179.035797, -75.699997])


@pytest.mark.mirror
@pytest.mark.parametrize(
    ("name", "window"), [("MR_small.dcm", (600.0, 1600.0)), ("nibabel_siemens_0.dcm", (468.0, 1016.0))]
)
def test_mirror_unscaled_images_keep_pixel_values_and_window(
    format_samples: Path, name: str, window: Any
) -> None:
    path = format_samples / "dicom" / name
    sample = READER.read(path)
    raw = _read_ds(path).pixel_array
    assert sample.array.dtype == raw.dtype
    np.testing.assert_array_equal(sample.array, raw)
    assert sample.window == window


@pytest.mark.mirror
def test_ultrasound_is_rgb_like_pydicom(format_samples: Path) -> None:
    path = format_samples / "dicom" / "US1_UNCR.dcm"
    sample = READER.read(path)
    assert sample.array.dtype == np.uint8
    np.testing.assert_array_equal(sample.array, _read_ds(path).pixel_array)


@pytest.mark.mirror
def test_ecg_waveform_is_a_signal_in_microvolts(format_samples: Path) -> None:
    path = format_samples / "dicom" / "waveform_ecg.dcm"
    sample = READER.read(path)
    assert isinstance(sample, SignalSample)
    assert sample.data.shape == (10_000, 12)
    assert sample.fs == 1000.0
    assert sample.duration_s == pytest.approx(10.0)
    assert sample.channel_names[:3] == ["Lead I (Einthoven)", "Lead II", "Lead III"]
    assert sample.channel_names[-1] == "Lead V6"
    assert sample.units == ["uV"] * 12
    # independent check: raw 16-bit samples x Channel Sensitivity (1.25 uV) x correction + baseline
    ds = _read_ds(path)
    group = ds.WaveformSequence[0]
    raw = np.frombuffer(group.WaveformData, dtype="<i2").reshape(10_000, 12).astype(np.float64)
    for ch, item in enumerate(group.ChannelDefinitionSequence):
        factor = float(item.ChannelSensitivity) * float(item.get("ChannelSensitivityCorrectionFactor", 1))
        raw[:, ch] = raw[:, ch] * factor + float(item.get("ChannelBaseline", 0))
    np.testing.assert_allclose(sample.data, raw)
    assert sample.meta["measurements"]["RR Interval"] == {"value": 982.0, "unit": "ms"}
    assert "RITMO SINUSALE" in sample.meta["findings"]
    assert [g["label"] for g in sample.meta["waveform_groups"]][1] == "MEDIAN BEAT"
    assert all(0 <= onset < 10 for onset, _, _ in sample.annotations)
    assert sample.patient_id == "642341"


@pytest.mark.mirror
def test_second_waveform_group_and_bad_index(format_samples: Path) -> None:
    path = format_samples / "dicom" / "waveform_ecg.dcm"
    median = READER.read(path, waveform=1)
    assert median.data.shape == (1200, 12)
    with pytest.raises(ConfigError) as err:
        READER.read(path, waveform=5)
    assert path.name in str(err.value) and err.value.field == "waveform"


@pytest.mark.mirror
def test_sniff_recognises_every_sample(format_samples: Path) -> None:
    for path in sorted((format_samples / "dicom").glob("*.dcm")):
        assert READER.sniff(path, path.read_bytes()[:1024]), path.name
    readme = format_samples / "dicom" / "pydicom_test_files_README.txt"
    assert not READER.sniff(readme, readme.read_bytes()[:1024])


@pytest.mark.mirror
@pytest.mark.skipif(not _all_readers_present(), reason="not every built-in reader module exists yet")
def test_read_entry_point_detects_dicom_by_content(format_samples: Path, tmp_path: Path) -> None:
    from meddx.data import read

    renamed = tmp_path / "ct_without_suffix"
    renamed.write_bytes((format_samples / "dicom" / "CT_small.dcm").read_bytes())
    sample = read(renamed)
    assert sample.format == "dicom" and sample.shape == (128, 128)


# -- generated files ----------------------------------------------------------------------


def test_monochrome1_is_inverted_with_its_window(tmp_path: Path) -> None:
    raw = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 300).clip(0, 4095)
    path = _write(
        tmp_path / "m1.dcm", raw, "MONOCHROME1", 12, WindowCenter=[1000, 500], WindowWidth=[400, 200]
    )
    sample = READER.read(path)
    np.testing.assert_array_equal(sample.array, 4095 - raw)
    assert sample.array.dtype == np.uint16
    assert sample.photometric == "MONOCHROME2"
    assert sample.meta["source_photometric"] == "MONOCHROME1" and sample.meta["inverted"] is True
    assert sample.window == (4095 - 1000, 400)  # first of the multi-valued window, mirrored


def test_monochrome1_with_rescale_is_mirrored_in_physical_range(tmp_path: Path) -> None:
    raw = np.array([[0, 100], [200, 4095]], dtype=np.uint16)
    path = _write(tmp_path / "m1r.dcm", raw, "MONOCHROME1", 12, RescaleSlope=2, RescaleIntercept=-10)
    sample = READER.read(path)
    physical = raw * 2.0 - 10
    low, high = -10.0, 4095 * 2.0 - 10
    np.testing.assert_allclose(sample.array, low + high - physical)


def test_rescale_gives_float32_physical_values(tmp_path: Path) -> None:
    raw = np.array([[0, 1000], [2000, 3000]], dtype=np.int16)
    path = _write(tmp_path / "ct.dcm", raw, RescaleSlope=1, RescaleIntercept=-1024)
    sample = READER.read(path)
    assert sample.array.dtype == np.float32
    np.testing.assert_array_equal(sample.array, raw.astype(np.float32) - 1024)
    assert sample.meta["RescaleIntercept"] == -1024.0


def test_multiframe_is_frames_rows_columns(tmp_path: Path) -> None:
    frames = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    path = _write(tmp_path / "mf.dcm", frames, PixelSpacing=[0.5, 0.25])
    sample = READER.read(path)
    assert sample.shape == (3, 4, 5)
    np.testing.assert_array_equal(sample.array, frames)
    assert sample.meta["NumberOfFrames"] == 3
    assert sample.spacing == (0.5, 0.25)


def test_ybr_full_colour_is_converted_to_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    path = _write(tmp_path / "ybr.dcm", convert_color_space(rgb, "RGB", "YBR_FULL"), "YBR_FULL")
    sample = READER.read(path)
    assert sample.photometric == "RGB" and sample.meta["source_photometric"] == "YBR_FULL"
    np.testing.assert_allclose(sample.array.astype(int), rgb.astype(int), atol=2)


def test_voi_option_applies_pydicom_voi_lut(tmp_path: Path) -> None:
    raw = np.arange(0, 4000, 250, dtype=np.int16).reshape(4, 4)
    path = _write(
        tmp_path / "w.dcm", raw, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400
    )
    ds = _read_ds(path)
    expected = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    sample = READER.read(path, voi=True)
    np.testing.assert_allclose(sample.array, expected, rtol=1e-5)
    assert sample.meta["voi"] == "window"
    assert not np.array_equal(READER.read(path).array, sample.array)


def test_imager_pixel_spacing_is_the_fallback(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "dx.dcm", np.zeros((2, 3), np.uint16), ImagerPixelSpacing=[0.1, 0.2], Modality="DX"
    )
    sample = READER.read(path)
    assert sample.spacing == (0.1, 0.2) and sample.modality == "DX"


def _write_series(folder: Path, z_positions: list[float], order: list[int], **extra: Any) -> list[Path]:
    """Slices whose pixel value is their index along z, written in the order given."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, k in enumerate(order):
        paths.append(
            _write(
                folder / f"IMG{n:04d}.dcm",
                np.full((3, 4), k, dtype=np.int16),
                ImagePositionPatient=[-5.0, -6.0, z_positions[k]],
                ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                PixelSpacing=[0.5, 0.7],
                SliceThickness=2.5,
                InstanceNumber=n + 1,
                **extra,
            )
        )
    return paths


def test_series_written_shuffled_comes_back_sorted(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    _write_series(folder, [10.0, 12.5, 15.0, 17.5], order=[2, 0, 3, 1])
    (folder / "notes.txt").write_text("not a slice")
    assert READER.accepts_directory(folder)
    sample = READER.read(folder)
    assert sample.shape == (4, 3, 4)
    np.testing.assert_array_equal(sample.array[:, 0, 0], [0, 1, 2, 3])
    assert sample.spacing == pytest.approx((2.5, 0.5, 0.7))
    assert sample.orientation == ("S", "P", "L")
    assert sample.meta["n_slices"] == 4 and sample.meta["uneven_spacing"] is False
    assert sample.patient_id == "TEST-1"
    # voxel (z=3, row=2, col=1) lies at x = -5 + 0.7, y = -6 + 2 * 0.5, z = 17.5 (LPS)
    assert sample.affine is not None
    np.testing.assert_allclose(sample.affine @ [3, 2, 1, 1], [-4.3, -5.0, 17.5, 1.0])


def test_series_sorted_along_the_slice_normal_not_along_z(tmp_path: Path) -> None:
    folder = tmp_path / "sagittal"
    folder.mkdir()
    # rows run along +y (P), columns along -z (I): the normal row x column is -x (towards R)
    for n, k in enumerate([1, 2, 0]):
        _write(
            folder / f"s{n}.dcm",
            np.full((2, 2), k, dtype=np.int16),
            ImagePositionPatient=[3.0 * k, 0.0, 50.0],
            ImageOrientationPatient=[0, 1, 0, 0, 0, -1],
            PixelSpacing=[1.0, 1.0],
        )
    sample = READER.read(folder)
    np.testing.assert_array_equal(sample.array[:, 0, 0], [2, 1, 0])  # decreasing x = along the normal
    assert sample.spacing == pytest.approx((3.0, 1.0, 1.0))
    assert sample.orientation == ("R", "I", "P")
    assert sample.affine is not None
    np.testing.assert_allclose(sample.affine @ [2, 1, 1, 1], [0.0, 1.0, 49.0, 1.0])


def test_series_with_duplicated_position_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "dup"
    _write_series(folder, [10.0, 12.5, 12.5, 15.0], order=[0, 1, 2, 3])
    with pytest.raises(InvalidValueError) as err:
        READER.read(folder)
    assert "dup" in str(err.value) and err.value.field == "ImagePositionPatient"
    assert "same position" in str(err.value)


def test_series_with_a_gap_warns_or_fails_when_strict(tmp_path: Path) -> None:
    folder = tmp_path / "gap"
    _write_series(folder, [0.0, 2.0, 4.0, 8.0], order=[3, 1, 0, 2])
    with pytest.warns(UserWarning, match="unevenly spaced"):
        sample = READER.read(folder)
    assert sample.spacing is not None and sample.spacing[0] == pytest.approx(2.0)
    assert sample.meta["uneven_spacing"] is True
    with pytest.raises(InvalidValueError) as err:
        READER.read(folder, strict=True)
    assert "gap" in str(err.value)


def test_folder_with_two_series_needs_series_uid(tmp_path: Path) -> None:
    folder = tmp_path / "two"
    _write_series(folder / "a", [0.0, 1.0], order=[0, 1])
    _write_series(folder / "b", [0.0, 1.0, 2.0], order=[0, 1, 2], SeriesInstanceUID="1.2.3.99")
    for sub in ("a", "b"):
        for file in (folder / sub).iterdir():
            file.rename(folder / f"{sub}_{file.name}")
    with pytest.raises(InvalidValueError) as err:
        READER.read(folder)
    assert "two" in str(err.value) and "1.2.3.99" in str(err.value)
    sample = READER.read(folder, series_uid="1.2.3.99")
    assert sample.shape == (3, 3, 4)
    with pytest.raises(ConfigError):
        READER.read(folder, series_uid="9.9.9")


def test_empty_folder_is_empty_data(tmp_path: Path) -> None:
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "readme.txt").write_text("hi")
    assert not READER.accepts_directory(folder)
    with pytest.raises(EmptyDataError) as err:
        READER.read(folder)
    assert "nothing" in str(err.value)


# -- bad files ---------------------------------------------------------------------------


def test_missing_pixel_data_names_file_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "no_pixels.dcm", None, Rows=4, Columns=4)
    with pytest.raises(MissingFieldError) as err:
        READER.read(path)
    assert "no_pixels.dcm" in str(err.value) and "PixelData" in str(err.value)
    assert err.value.field == "PixelData" and err.value.hint


@pytest.mark.parametrize("cut", ["pixels", "last_tag", "header", "meta"])
def test_truncated_files_are_corrupt(tmp_path: Path, cut: str) -> None:
    source = _write(tmp_path / "whole.dcm", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    data = source.read_bytes()
    keep = {
        "pixels": len(data) - 1000,  # inside PixelData
        "last_tag": len(data) - 64 * 64 * 2 - 5,  # inside the PixelData tag itself
        "header": 400,  # inside the data set, before any image element
        "meta": 140,  # inside the file meta information
    }[cut]
    path = tmp_path / f"cut_{cut}.dcm"
    path.write_bytes(data[:keep])
    with pytest.raises(CorruptFileError) as err:
        READER.read(path)
    assert path.name in str(err.value)


def test_not_dicom_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "fake.dcm"
    path.write_bytes(b"hello, this is not DICOM" * 20)
    with pytest.raises(CorruptFileError) as err:
        READER.read(path)
    assert "fake.dcm" in str(err.value) and "force=True" in str(err.value)


def test_absurd_frame_count_is_refused_before_decoding(tmp_path: Path) -> None:
    path = _write(tmp_path / "frames.dcm", np.zeros((2, 16, 16), np.uint16))
    ds = _read_ds(path)
    ds.NumberOfFrames = 2_000_000_000
    ds.save_as(path)
    with pytest.raises(CorruptFileError) as err:
        READER.read(path)
    assert "frames.dcm" in str(err.value) and "NumberOfFrames" in str(err.value)


def test_absurd_size_of_compressed_data_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "rle.dcm", np.zeros((64, 64), np.uint8))
    ds = _read_ds(path)
    ds.compress(RLELossless)
    ds.NumberOfFrames = 100_000
    ds.Rows = ds.Columns = 65_535
    ds.save_as(path)
    with pytest.raises(InvalidValueError) as err:  # LimitExceededError: refused before decoding
        READER.read(path)
    assert "rle.dcm" in str(err.value) and err.value.field == "NumberOfFrames"


def test_rle_compressed_file_decodes(tmp_path: Path) -> None:
    raw = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    path = _write(tmp_path / "rle_ok.dcm", raw)
    ds = _read_ds(path)
    ds.compress(RLELossless)
    ds.save_as(path)
    np.testing.assert_array_equal(READER.read(path).array, raw)


def test_unknown_option_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "opt.dcm", np.zeros((2, 2), np.uint8))
    with pytest.raises(ConfigError) as err:
        READER.read(path, window=True)
    assert "opt.dcm" in str(err.value) and err.value.field == "window"


def test_bit_flips_raise_only_meddx_errors(tmp_path: Path) -> None:
    source = _write(
        tmp_path / "seed.dcm",
        np.arange(16 * 16, dtype=np.int16).reshape(16, 16),
        RescaleSlope=1,
        RescaleIntercept=0,
    )
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(7)
    path = tmp_path / "flipped.dcm"
    from meddx.exceptions import MeddxError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(150):
            mutated = bytearray(data)
            for pos in rng.integers(128, min(len(data), 700), size=3):
                mutated[pos] = int(rng.integers(0, 256))
            path.write_bytes(bytes(mutated))
            try:
                READER.read(path)
            except MeddxError as exc:
                assert path.name in str(exc)


# -- issue 18: decompression and header defects -------------------------------------------------


def _rle(tmp_path: Path, name: str, frames: int = 2) -> tuple[Path, Any]:
    raw = (np.arange(frames * 8 * 8) % 200).astype(np.uint16).reshape(frames, 8, 8)
    path = _write(tmp_path / name, raw if frames > 1 else raw[0], NumberOfFrames=frames)
    ds = _read_ds(path)
    ds.compress(RLELossless)
    return path, ds


def test_compressed_file_declaring_more_frames_than_present_is_corrupt(tmp_path: Path) -> None:
    """The decoder used to end in a raw StopIteration."""
    path, ds = _rle(tmp_path, "frames.dcm")
    ds.NumberOfFrames = 5
    ds.save_as(path)
    with pytest.raises(CorruptFileError) as err:
        READER.read(path)
    assert err.value.field == "NumberOfFrames" and "frames.dcm" in str(err.value)


def test_corrupt_rle_is_corrupt_not_a_missing_decoder(tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate, generate_frames

    path, ds = _rle(tmp_path, "badrle.dcm")
    fragments = [bytearray(f) for f in generate_frames(ds.PixelData, number_of_frames=2)]
    fragments[0][4:8] = b"\xff\xff\x00\x00"  # the first segment offset points past the data
    ds.PixelData = encapsulate([bytes(f) for f in fragments])
    ds.save_as(path)
    with pytest.raises(CorruptFileError) as err:
        READER.read(path)
    assert err.value.field == "PixelData" and "install" not in str(err.value).lower()


def test_pixel_data_longer_than_declared_is_not_read_as_extra_frames(tmp_path: Path) -> None:
    raw = np.arange(64, dtype=np.uint16).reshape(8, 8)
    path = _write(tmp_path / "long.dcm", raw)
    ds = _read_ds(path)
    ds.Rows = 4  # half the image: the data now holds two "frames"
    ds.save_as(path)
    with pytest.raises(CorruptFileError) as err:
        READER.read(path)
    assert err.value.field == "Rows" and "2 frames" in str(err.value)


def test_pixel_padding_shorter_than_a_frame_is_ignored_with_a_warning(tmp_path: Path) -> None:
    raw = np.arange(64, dtype=np.uint16).reshape(8, 8)
    path = _write(tmp_path / "pad.dcm", raw)
    ds = _read_ds(path)
    ds.PixelData = raw.tobytes() + bytes(16)
    ds.save_as(path)
    with pytest.warns(UserWarning, match="padding"):
        sample = READER.read(path)
    np.testing.assert_array_equal(sample.array, raw)


@pytest.mark.parametrize(
    ("tags", "field"),
    [
        ({"RescaleSlope": "NaN", "RescaleIntercept": "0"}, "RescaleSlope"),
        ({"RescaleSlope": "1", "RescaleIntercept": "inf"}, "RescaleIntercept"),
        ({"RescaleSlope": "1e38", "RescaleIntercept": "0"}, "RescaleSlope"),  # 65535 x 1e38 overflows float32
        ({"RescaleSlope": "abc", "RescaleIntercept": "0"}, "RescaleSlope"),
    ],
)
def test_unusable_rescale_is_an_error_not_an_all_nan_image(tmp_path: Path, tags: dict[str, str], field: str) -> None:
    placeholders = {"RescaleSlope": b"1.23456789", "RescaleIntercept": b"9.87654321"}
    path = _write(tmp_path / "rescale.dcm", np.arange(16, dtype=np.uint16).reshape(4, 4),
                  RescaleSlope=placeholders["RescaleSlope"].decode(),
                  RescaleIntercept=placeholders["RescaleIntercept"].decode())
    data = path.read_bytes()
    for keyword, value in tags.items():  # patch the bytes: pydicom will not write a malformed DS
        data = data.replace(placeholders[keyword], value.encode().ljust(10))
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid DS while reading it
        with pytest.raises((InvalidValueError, CorruptFileError)) as err:
            READER.read(path)
    assert err.value.field == field and "rescale.dcm" in str(err.value)


def test_encapsulated_declaration_beyond_the_limits_is_refused(tmp_path: Path) -> None:
    from meddx.data.readers.limits import LimitExceededError

    path, ds = _rle(tmp_path, "huge.dcm")
    ds.Rows = ds.Columns = 8192
    ds.NumberOfFrames = 10  # 1.3 GB of 16-bit pixels from a few hundred bytes
    ds.save_as(path)
    with pytest.raises(LimitExceededError) as err:
        READER.read(path)
    assert err.value.field == "NumberOfFrames" and "MEDDX_MAX_EXPANSION_RATIO" in str(err.value)


def test_open_dataset_is_the_guarded_open(tmp_path: Path) -> None:
    from meddx.data.readers.dicom import open_dataset

    path = _write(tmp_path / "plain.dcm", np.zeros((4, 4), np.uint16))
    assert open_dataset(path).Rows == 4
    (tmp_path / "not.dcm").write_bytes(b"hello")
    with pytest.raises(CorruptFileError):
        open_dataset(tmp_path / "not.dcm")
