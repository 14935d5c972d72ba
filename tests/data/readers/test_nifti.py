"""NIfTI reader: the mirror's volumes checked against nibabel, reorientation, dtypes and bad files."""

from __future__ import annotations

import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from meddx.data.readers._base import _BUILTIN_MODULES  # noqa: E402
from meddx.data.readers.nifti import NiftiReader  # noqa: E402
from meddx.data.sample import ImageSample  # noqa: E402
from meddx.exceptions import ConfigError, CorruptFileError, InvalidValueError  # noqa: E402

READER = NiftiReader()


def _all_readers_present() -> bool:
    return all(importlib.util.find_spec(f"meddx.data.readers.{m}") for m in _BUILTIN_MODULES)


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None, **header: float) -> Path:
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    for key, value in header.items():
        img.header[key] = value
    img.to_filename(path)
    return path


# -- the mirror's files -----------------------------------------------------------------

SAMPLES = [
    # name, shape, spacing, TR in seconds (4-D) or None
    ("anatomical.nii", (33, 41, 25), (2.0, 2.0, 2.0), None),
    ("functional.nii", (17, 21, 3, 20), (4.0, 4.0, 8.0), 2.0),
    ("example4d.nii.gz", (128, 96, 24, 2), (2.0, 2.0, 2.2), None),
]


@pytest.mark.mirror
@pytest.mark.parametrize(("name", "shape", "spacing", "tr_s"), SAMPLES)
def test_mirror_volumes_have_documented_shape_and_spacing(
    format_samples: Path, name: str, shape: tuple[int, ...], spacing: tuple[float, ...], tr_s: float | None
) -> None:
    path = format_samples / "nifti" / name
    sample = READER.read(path)
    assert isinstance(sample, ImageSample)
    assert sample.format == "nifti"
    assert sample.shape == shape
    assert sample.spacing == pytest.approx(spacing, abs=1e-5)
    assert sample.orientation == ("R", "A", "S")
    assert sample.meta["original_orientation"] == ["L", "A", "S"]
    assert sample.meta["reoriented"] is True
    assert sample.meta["dim"] == [len(shape), *shape]
    assert sample.affine is not None and sample.affine.shape == (4, 4)
    assert np.all(np.diag(sample.affine)[:3] > 0)  # RAS: every axis increases towards R, A, S
    if tr_s is not None:
        assert sample.meta["tr_s"] == pytest.approx(tr_s)
        assert sample.meta["zooms"][3] == pytest.approx(tr_s)
    assert READER.sniff(path, path.read_bytes()[:1024])


@pytest.mark.mirror
@pytest.mark.parametrize("name", [s[0] for s in SAMPLES])
def test_mirror_values_match_nibabel_canonical(format_samples: Path, name: str) -> None:
    path = format_samples / "nifti" / name
    expected_img = nib.as_closest_canonical(nib.load(path))
    sample = READER.read(path)
    np.testing.assert_allclose(sample.array, expected_img.get_fdata(), rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(sample.affine, expected_img.affine)


@pytest.mark.mirror
def test_dtype_policy_on_mirror_files(format_samples: Path) -> None:
    anatomical = READER.read(format_samples / "nifti" / "anatomical.nii")  # big-endian int16, unscaled
    assert anatomical.array.dtype == np.dtype("int16") and anatomical.array.dtype.isnative
    functional = READER.read(format_samples / "nifti" / "functional.nii")  # int16 with scl_slope
    assert functional.array.dtype == np.float32
    assert functional.meta["scl_slope"] == pytest.approx(0.0754069)
    forced = READER.read(format_samples / "nifti" / "anatomical.nii", as_float=True)
    assert forced.array.dtype == np.float32
    np.testing.assert_array_equal(forced.array, anatomical.array.astype(np.float32))


@pytest.mark.mirror
@pytest.mark.skipif(not _all_readers_present(), reason="not every built-in reader module exists yet")
def test_read_entry_point_detects_nifti(format_samples: Path) -> None:
    from meddx.data import read

    assert read(format_samples / "nifti" / "example4d.nii.gz").format == "nifti"


# -- generated files ----------------------------------------------------------------------


def test_las_volume_is_flipped_to_ras(tmp_path: Path) -> None:
    data = np.arange(4 * 3 * 2, dtype=np.int16).reshape(4, 3, 2)
    affine = np.diag([-2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [10.0, -5.0, 0.0]
    path = _save(tmp_path / "las.nii", data, affine)
    sample = READER.read(path)
    np.testing.assert_array_equal(sample.array, data[::-1])
    assert sample.orientation == ("R", "A", "S")
    assert sample.meta["original_orientation"] == ["L", "A", "S"]
    assert sample.spacing == (2.0, 3.0, 4.0)
    # voxel 0 of the flipped array is the old voxel 3: x = 10 - 2 * 3 = 4
    np.testing.assert_allclose(sample.affine @ [0, 0, 0, 1], [4.0, -5.0, 0.0, 1.0])
    kept = READER.read(path, canonical=False)
    np.testing.assert_array_equal(kept.array, data)


def test_permuted_axes_are_reordered(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 100, size=(2, 3, 4)).astype(np.uint8)
    affine = np.array([[0, 0, 1.5, 0], [1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 1]])  # i->A, j->S, k->R
    sample = READER.read(_save(tmp_path / "perm.nii.gz", data, affine))
    assert sample.shape == (4, 2, 3)
    np.testing.assert_array_equal(sample.array, np.transpose(data, (2, 0, 1)))
    assert sample.spacing == (1.5, 1.0, 2.0)
    assert sample.array.dtype == np.uint8


def test_scaled_integers_become_float32(tmp_path: Path) -> None:
    data = np.array([[[0, 1], [2, 3]]], dtype=np.int16)
    path = _save(tmp_path / "scaled.nii", data, scl_slope=0.5, scl_inter=10.0)
    sample = READER.read(path)
    assert sample.array.dtype == np.float32
    np.testing.assert_allclose(sample.array, data * 0.5 + 10.0)


def test_float64_data_is_float32_and_nonfinite_counted(tmp_path: Path) -> None:
    data = np.zeros((2, 2, 2))
    data[0, 0, 0] = np.nan
    sample = READER.read(_save(tmp_path / "f.nii", data))
    assert sample.array.dtype == np.float32
    assert sample.meta["n_nonfinite"] == 1


def test_4d_time_unit_in_milliseconds(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.int16), np.eye(4))
    img.header.set_zooms((1.0, 1.0, 1.0, 1500.0))
    img.header.set_xyzt_units("mm", "msec")
    img.to_filename(tmp_path / "ms.nii")
    sample = READER.read(tmp_path / "ms.nii")
    assert sample.meta["tr"] == 1500.0 and sample.meta["tr_s"] == pytest.approx(1.5)


def test_2d_image_is_not_reoriented(tmp_path: Path) -> None:
    data = np.arange(6, dtype=np.int16).reshape(2, 3)
    sample = READER.read(_save(tmp_path / "flat.nii", data))
    np.testing.assert_array_equal(sample.array, data)
    assert sample.meta["reoriented"] is False and len(sample.spacing or ()) == 2


def test_sniff_and_suffixes(tmp_path: Path) -> None:
    path = _save(tmp_path / "x.nii", np.zeros((2, 2, 2), np.uint8))
    assert READER.sniff(path, path.read_bytes()[:1024])
    gz = _save(tmp_path / "x.nii.gz", np.zeros((2, 2, 2), np.uint8))
    assert READER.sniff(gz, gz.read_bytes()[:1024])
    assert not READER.sniff(tmp_path / "x.gz", gz.read_bytes()[:1024])
    assert READER.accepts_suffix(Path("brain.NII.GZ"))


def test_nifti_with_unusual_name_is_read_from_its_content(tmp_path: Path) -> None:
    data = np.arange(8, dtype=np.int16).reshape(2, 2, 2)
    odd = tmp_path / "volume.bin"
    odd.write_bytes(_save(tmp_path / "v.nii", data).read_bytes())
    np.testing.assert_array_equal(READER.read(odd).array, data)


# -- bad files ---------------------------------------------------------------------------


def test_truncated_nii_is_corrupt(tmp_path: Path) -> None:
    whole = _save(tmp_path / "whole.nii", np.ones((10, 10, 10), np.float32)).read_bytes()
    path = tmp_path / "cut.nii"
    path.write_bytes(whole[: len(whole) - 100])
    with pytest.raises(CorruptFileError) as err:
        READER.read(path)
    assert "cut.nii" in str(err.value) and err.value.field == "dim"


def test_truncated_nii_gz_is_corrupt(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    whole = _save(tmp_path / "whole.nii.gz", rng.random((16, 16, 16)).astype(np.float32)).read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CorruptFileError) as err:
        READER.read(path)
    assert "cut.nii.gz" in str(err.value)


def _with_dims(data: bytes, dims: tuple[int, ...]) -> bytes:
    """Overwrite dim[0..] (int16 at byte 40) of a little-endian NIfTI-1 header."""
    header = bytearray(data)
    header[40 : 40 + 2 * (len(dims) + 1)] = struct.pack(f"<{len(dims) + 1}h", len(dims), *dims)
    return bytes(header)


def test_absurd_dims_are_refused_without_allocating(tmp_path: Path) -> None:
    plain = _save(tmp_path / "small.nii", np.zeros((2, 2, 2), np.float32)).read_bytes()
    path = tmp_path / "huge.nii"
    path.write_bytes(_with_dims(plain, (32000, 32000, 32000)))
    with pytest.raises(CorruptFileError) as err:
        READER.read(path)
    assert "huge.nii" in str(err.value) and "32000" in str(err.value)


def test_absurd_dims_in_gzip_are_refused(tmp_path: Path) -> None:
    plain = _save(tmp_path / "small.nii", np.zeros((2, 2, 2), np.float32)).read_bytes()
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(_with_dims(plain, (4000, 4000, 4000))))
    with pytest.raises(CorruptFileError) as err:
        READER.read(path)
    assert "huge.nii.gz" in str(err.value)


def test_multi_member_gzip_with_small_isize_still_reads(tmp_path: Path) -> None:
    data = np.arange(1000, dtype=np.int32).reshape(10, 10, 10)
    raw = _save(tmp_path / "v.nii", data).read_bytes()
    path = tmp_path / "multi.nii.gz"
    path.write_bytes(gzip.compress(raw[:600]) + gzip.compress(raw[600:]))  # ISIZE = last member only
    np.testing.assert_array_equal(READER.read(path).array, data)


def test_not_nifti_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "fake.nii"
    path.write_bytes(b"not a nifti header at all" * 40)
    with pytest.raises(CorruptFileError) as err:
        READER.read(path)
    assert "fake.nii" in str(err.value)


def test_degenerate_affine_is_invalid(tmp_path: Path) -> None:
    header = bytearray(_save(tmp_path / "ok.nii", np.zeros((2, 2, 2), np.int16)).read_bytes())
    header[252:256] = struct.pack("<hh", 0, 1)  # qform_code 0, sform_code 1 (scanner)
    header[296:312] = struct.pack("<4f", 0.0, 0.0, 0.0, 0.0)  # srow_y: the j axis has no direction
    path = tmp_path / "flat_axis.nii"
    path.write_bytes(bytes(header))
    with pytest.raises(InvalidValueError) as err:
        READER.read(path)
    assert "flat_axis.nii" in str(err.value) and err.value.field == "sform/qform"


def test_unknown_option(tmp_path: Path) -> None:
    path = _save(tmp_path / "o.nii", np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ConfigError) as err:
        READER.read(path, voi=True)
    assert "o.nii" in str(err.value)


def test_gzipped_nifti_with_unusual_name_is_read_from_its_content(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    odd = tmp_path / "export.dat"
    odd.write_bytes(_save(tmp_path / "v.nii.gz", data).read_bytes())
    np.testing.assert_array_equal(READER.read(odd).array, data)
    cut = tmp_path / "cut.dat"
    header = _save(tmp_path / "w.nii", data).read_bytes()
    cut.write_bytes(gzip.compress(_with_dims(header, (900, 900, 900))))
    with pytest.raises(CorruptFileError) as err:
        READER.read(cut)
    assert "cut.dat" in str(err.value)


# -- issue 18: decompression and header defects -------------------------------------------------


@pytest.mark.parametrize(("dims", "field"), [((4, 0, 3), "dim[2]"), ((4, 3, 0), "dim[3]")])
def test_zero_dimension_is_an_error_not_an_empty_array(tmp_path: Path, dims: tuple[int, ...], field: str) -> None:
    from meddx.exceptions import EmptyDataError

    plain = _save(tmp_path / "small.nii", np.zeros((4, 3, 3), np.int16)).read_bytes()
    path = tmp_path / "zero.nii"
    path.write_bytes(_with_dims(plain, dims))
    with pytest.raises(EmptyDataError) as err:
        READER.read(path)
    assert err.value.field == field and "zero.nii" in str(err.value)


def test_no_dimension_is_an_error_not_a_0d_array(tmp_path: Path) -> None:
    plain = bytearray(_save(tmp_path / "small.nii", np.zeros((2, 2, 2), np.int16)).read_bytes())
    plain[40:42] = struct.pack("<h", 0)  # dim[0] = 0
    path = tmp_path / "nodim.nii"
    path.write_bytes(bytes(plain))
    from meddx.exceptions import MeddxError

    with pytest.raises(MeddxError) as err:
        READER.read(path)
    assert err.value.field is not None and err.value.field.startswith("dim")


def test_nifti2_with_a_zero_dimension_that_needs_reorienting(tmp_path: Path) -> None:
    """nibabel's reorientation used to end in a raw OrientationError."""
    from meddx.exceptions import MeddxError

    path = tmp_path / "z2.nii"
    nib.save(nib.Nifti2Image(np.zeros((2, 0, 3), np.int16), np.diag([-1.0, 1.0, 1.0, 1.0])), path)
    with pytest.raises(MeddxError) as err:
        READER.read(path)
    assert err.value.field == "dim[2]"


def test_single_file_with_vox_offset_0_does_not_read_its_header_as_voxels(tmp_path: Path) -> None:
    data = bytearray(_save(tmp_path / "a.nii", np.arange(24, dtype=np.int16).reshape(2, 3, 4)).read_bytes())
    data[108:112] = struct.pack("<f", 0.0)
    path = tmp_path / "v0.nii"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError) as err:
        READER.read(path)
    assert err.value.field == "vox_offset"


@pytest.mark.parametrize("slope", [1e38, -3e38])
def test_scaling_beyond_float32_is_an_error_not_inf(tmp_path: Path, slope: float) -> None:
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    path = _save(tmp_path / "scl.nii", data)
    raw = bytearray(path.read_bytes())
    raw[112:116] = struct.pack("<f", slope)  # scl_slope
    path.write_bytes(bytes(raw))
    with pytest.raises(InvalidValueError) as err:
        READER.read(path)
    assert err.value.field == "scl_slope"


def test_nan_or_inf_slope_means_unscaled(tmp_path: Path) -> None:
    """NIfTI: scl_slope 0 (nibabel: also NaN/inf) means no scaling; never an all-NaN volume."""
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    for value in (float("nan"), float("inf")):
        path = _save(tmp_path / "s.nii", data)
        raw = bytearray(path.read_bytes())
        raw[112:116] = struct.pack("<f", value)
        path.write_bytes(bytes(raw))
        sample = READER.read(path, canonical=False)
        np.testing.assert_array_equal(sample.array, data)


def test_scaled_volume_still_reads(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    path = _save(tmp_path / "ok.nii", data)
    raw = bytearray(path.read_bytes())
    raw[112:120] = struct.pack("<ff", 2.0, -5.0)  # scl_slope, scl_inter
    gz = tmp_path / "ok.nii.gz"
    gz.write_bytes(gzip.compress(bytes(raw)))
    sample = READER.read(gz, canonical=False)
    np.testing.assert_allclose(sample.array, data * 2.0 - 5.0)
    assert sample.array.dtype == np.float32 and sample.meta["scl_slope"] == 2.0


def test_cifti2_is_unsupported_not_corrupt(tmp_path: Path) -> None:
    from nibabel import cifti2

    from meddx.exceptions import UnsupportedFormatError

    scalar = cifti2.cifti2_axes.ScalarAxis(["thickness"])
    brain = cifti2.cifti2_axes.BrainModelAxis.from_mask(np.ones(5, bool), name="CIFTI_STRUCTURE_CORTEX_LEFT")
    img = cifti2.Cifti2Image(np.zeros((1, 5), np.float32), header=(scalar, brain))
    img.nifti_header.set_intent("ConnDenseScalar")
    path = tmp_path / "thickness.dscalar.nii"
    nib.save(img, path)
    with pytest.raises(UnsupportedFormatError) as err:
        READER.read(path)
    assert err.value.field == "intent_code" and "CIFTI-2" in str(err.value)


def test_gzip_volume_beyond_the_limits_is_refused_before_decompressing(tmp_path: Path) -> None:
    from meddx.data.readers.limits import LimitExceededError

    header = nib.Nifti1Header()
    header.set_data_shape((256, 256, 1100))  # 72 M int16 voxels = 144 MB > 64 MiB from a few KB
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    path = tmp_path / "zeros.nii.gz"
    with gzip.open(path, "wb") as out:
        out.write(header.binaryblock + bytes(4))
        for _ in range(144):
            out.write(bytes(1 << 20))
    import os

    os.environ["MEDDX_FREE_DECODED_MB"] = "64"
    try:
        with pytest.raises(LimitExceededError) as err:
            READER.read(path)
    finally:
        del os.environ["MEDDX_FREE_DECODED_MB"]
    assert err.value.field == "dim" and "zeros.nii.gz" in str(err.value)


def test_gzip_volume_is_streamed_into_one_array(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(-1000, 3000, (40, 30, 20)).astype(np.int16)
    path = _save(tmp_path / "v.nii.gz", data)
    np.testing.assert_array_equal(READER.read(path, canonical=False).array, data)


def test_damaged_gzip_volume_is_corrupt_not_changed_voxels(tmp_path: Path) -> None:
    """nibabel stopped before the gzip trailer, so a damaged stream read with changed voxels."""
    data = np.arange(4000, dtype=np.int16).reshape(20, 20, 10)
    raw = _save(tmp_path / "v.nii", data).read_bytes()
    packed = bytearray(gzip.compress(raw, compresslevel=0))  # stored blocks: a flipped byte stays decodable
    packed[len(packed) // 2] ^= 0x01
    path = tmp_path / "flipped.nii.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(CorruptFileError) as err:
        READER.read(path)
    assert err.value.field == "gzip" and "flipped.nii.gz" in str(err.value)


def test_one_dimensional_nifti_is_not_read_as_an_image(tmp_path: Path) -> None:
    from meddx.exceptions import UnsupportedFormatError

    plain = bytearray(_save(tmp_path / "small.nii", np.zeros((2, 2, 2), np.int16)).read_bytes())
    plain[40:42] = struct.pack("<h", 1)  # dim[0] = 1: a vector of dim[1] values
    path = tmp_path / "vector.nii"
    path.write_bytes(bytes(plain))
    with pytest.raises(UnsupportedFormatError) as err:
        READER.read(path)
    assert err.value.field == "dim[0]"
