"""MedMNIST npz reader: the mirror's BreastMNIST and PneumoniaMNIST, label shapes and bad archives."""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from meddx.data.readers._base import _BUILTIN_MODULES
from meddx.data.readers.npz import NpzReader
from meddx.data.sample import LabelledImagesSample
from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    InvalidValueError,
    LabelShapeError,
    MissingFieldError,
    UnsupportedFormatError,
)

READER = NpzReader()


def _all_readers_present() -> bool:
    return all(importlib.util.find_spec(f"meddx.data.readers.{m}") for m in _BUILTIN_MODULES)


def _npz(path: Path, **arrays: Any) -> Path:
    np.savez_compressed(path, **arrays)
    return path


def _images(n: int) -> np.ndarray:
    return np.arange(n * 4 * 4, dtype=np.uint8).reshape(n, 4, 4)


# -- the mirror's files -----------------------------------------------------------------


@pytest.mark.mirror
@pytest.mark.parametrize(
    ("relative", "counts", "raw_label_ndim"),
    [
        ("breastmnist/breastmnist.npz", {"train": 546, "val": 78, "test": 156}, 1),
        ("pneumoniamnist/pneumoniamnist_reconstructed.npz", {"train": 4708, "val": 524, "test": 624}, 2),
    ],
)
def test_medmnist_files_from_the_mirror(
    mirror: Path, relative: str, counts: dict[str, int], raw_label_ndim: int
) -> None:
    path = mirror / relative
    sample = READER.read(path)
    assert isinstance(sample, LabelledImagesSample) and sample.format == "npz"
    assert sample.counts() == counts
    assert list(sample.splits) == ["train", "val", "test"]
    assert sample.meta["multi_label"] is False and sample.meta["n_classes"] == 2
    with np.load(path) as raw:
        assert raw["train_labels"].ndim == raw_label_ndim
        for split, (images, labels) in sample.splits.items():
            assert images.shape == (counts[split], 28, 28) and images.dtype == np.uint8
            assert labels.shape == (counts[split],) and labels.dtype == np.int64
            np.testing.assert_array_equal(images, raw[f"{split}_images"])
            np.testing.assert_array_equal(labels, raw[f"{split}_labels"].reshape(-1))
    assert READER.sniff(path, path.read_bytes()[:1024])


@pytest.mark.mirror
def test_breastmnist_class_balance(mirror: Path) -> None:
    sample = READER.read(mirror / "breastmnist" / "breastmnist.npz")
    assert np.bincount(sample.splits["train"][1]).tolist() == [147, 399]
    assert np.bincount(sample.splits["test"][1]).tolist() == [42, 114]


@pytest.mark.mirror
@pytest.mark.skipif(not _all_readers_present(), reason="not every built-in reader module exists yet")
def test_read_entry_point_detects_npz(mirror: Path) -> None:
    from meddx.data import read

    assert read(mirror / "breastmnist" / "breastmnist.npz").format == "npz"


# -- generated files ----------------------------------------------------------------------


def test_multi_label_is_kept_two_dimensional(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 1], [1, 0, 0]], dtype=np.uint8)
    sample = READER.read(_npz(tmp_path / "chest.npz", train_images=_images(2), train_labels=labels))
    assert sample.meta["multi_label"] is True and sample.meta["n_classes"] == 3
    np.testing.assert_array_equal(sample.splits["train"][1], labels)
    assert sample.splits["train"][1].dtype == np.int64


def test_colour_images_and_extra_splits(tmp_path: Path) -> None:
    colour = np.zeros((3, 4, 4, 3), np.uint8)
    path = _npz(
        tmp_path / "c.npz",
        test_images=colour,
        test_labels=np.array([0, 1, 2]),
        extra_images=colour[:1],
        extra_labels=np.array([1]),
        train_images=colour,
        train_labels=np.array([[2], [1], [0]]),
        notes=np.array([1.0]),
    )
    sample = READER.read(path)
    assert list(sample.splits) == ["train", "test", "extra"]
    assert sample.splits["train"][0].shape == (3, 4, 4, 3)
    assert sample.meta["extra_keys"] == ["notes"]


def test_integral_float_labels_are_accepted(tmp_path: Path) -> None:
    sample = READER.read(_npz(tmp_path / "f.npz", train_images=_images(2), train_labels=np.array([1.0, 0.0])))
    np.testing.assert_array_equal(sample.splits["train"][1], [1, 0])


# -- bad files ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 2, 2), (4, 0), ()])
def test_wrong_label_shape_names_the_key(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = _npz(tmp_path / "bad_labels.npz", train_images=_images(4), train_labels=np.zeros(shape, np.uint8))
    with pytest.raises(LabelShapeError) as err:
        READER.read(path)
    assert "bad_labels.npz" in str(err.value) and "train_labels" in str(err.value)


def test_label_count_mismatch(tmp_path: Path) -> None:
    path = _npz(tmp_path / "count.npz", train_images=_images(5), train_labels=np.zeros(4, np.uint8))
    with pytest.raises(LabelShapeError) as err:
        READER.read(path)
    assert "count.npz" in str(err.value) and "4 labels for 5 images" in str(err.value)


def test_splits_with_different_label_layouts(tmp_path: Path) -> None:
    path = _npz(
        tmp_path / "mixed.npz",
        train_images=_images(2),
        train_labels=np.zeros((2, 3)),
        test_images=_images(2),
        test_labels=np.zeros(2),
    )
    with pytest.raises(LabelShapeError) as err:
        READER.read(path)
    assert "mixed.npz" in str(err.value) and err.value.field == "test_labels"


def test_no_images_key(tmp_path: Path) -> None:
    path = _npz(tmp_path / "signal.npz", ecg=np.zeros(10), fs=np.array(360))
    with pytest.raises(MissingFieldError) as err:
        READER.read(path)
    assert "signal.npz" in str(err.value) and "ecg" in str(err.value)


def test_images_without_labels(tmp_path: Path) -> None:
    path = _npz(tmp_path / "nolabels.npz", val_images=_images(2))
    with pytest.raises(MissingFieldError) as err:
        READER.read(path)
    assert "nolabels.npz" in str(err.value) and err.value.field == "val_labels"


def test_pickled_object_arrays_are_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "pickled.npz"
    np.savez(path, train_images=_images(2), train_labels=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(UnsupportedFormatError) as err:
        READER.read(path)
    assert "pickled.npz" in str(err.value) and "train_labels" in str(err.value)


def test_fractional_and_negative_labels(tmp_path: Path) -> None:
    path = _npz(tmp_path / "frac.npz", train_images=_images(2), train_labels=np.array([0.5, 1.0]))
    with pytest.raises(InvalidValueError) as err:
        READER.read(path)
    assert "frac.npz" in str(err.value)
    path = _npz(tmp_path / "neg.npz", train_images=_images(2), train_labels=np.array([-1, 1]))
    with pytest.raises(InvalidValueError) as err:
        READER.read(path)
    assert "neg.npz" in str(err.value)


def test_bad_image_shape(tmp_path: Path) -> None:
    path = _npz(tmp_path / "flat.npz", train_images=np.zeros((3, 16)), train_labels=np.zeros(3))
    with pytest.raises(InvalidValueError) as err:
        READER.read(path)
    assert "flat.npz" in str(err.value) and err.value.field == "train_images"


def test_truncated_archive_is_corrupt(tmp_path: Path) -> None:
    whole = _npz(tmp_path / "whole.npz", train_images=_images(50), train_labels=np.zeros(50)).read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CorruptFileError) as err:
        READER.read(path)
    assert "cut.npz" in str(err.value)


def test_header_declaring_a_huge_array_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "|u1", "fortran_order": False, "shape": (10**9, 28, 28)}
    )
    buffer.write(b"\x00" * 100)
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train_images.npy", buffer.getvalue())
        labels = io.BytesIO()
        np.save(labels, np.zeros(1, np.uint8))
        archive.writestr("train_labels.npy", labels.getvalue())
    with pytest.raises(CorruptFileError) as err:
        READER.read(path)
    assert "liar.npz" in str(err.value) and "train_images" in str(err.value)


def test_not_a_zip_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(CorruptFileError) as err:
        READER.read(path)
    assert "plain.npz" in str(err.value)
    assert not READER.sniff(path, path.read_bytes())


def test_options_are_refused(tmp_path: Path) -> None:
    path = _npz(tmp_path / "o.npz", train_images=_images(1), train_labels=np.zeros(1))
    with pytest.raises(ConfigError) as err:
        READER.read(path, size=(2, 2))
    assert "o.npz" in str(err.value)


def test_damaged_member_is_corrupt_not_changed_data(tmp_path: Path) -> None:
    """zipfile checks a member's CRC-32 only when it is read to its end, which numpy may not do."""
    import zipfile

    from meddx.exceptions import CorruptFileError

    path = tmp_path / "stored.npz"
    images = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, value in (("train_images", images), ("train_labels", np.arange(4))):
            buffer = io.BytesIO()
            np.save(buffer, value)
            archive.writestr(f"{key}.npy", buffer.getvalue())
    data = bytearray(path.read_bytes())
    data[data.index(images.tobytes()) + 10] ^= 0xFF  # one pixel, inside the stored member
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError) as err:
        NpzReader().read(path)
    assert err.value.field == "train_images"


def test_member_inflating_beyond_the_limits_is_refused(tmp_path: Path) -> None:
    from meddx.data.readers.limits import LimitExceededError
    from tests.security._bombs import npz_bomb

    with pytest.raises(LimitExceededError) as err:
        NpzReader().read(npz_bomb(tmp_path / "bomb.npz", 300 * 2**20))
    assert err.value.field == "train_images"


def test_member_name_damaged_in_the_directory_is_corrupt_not_a_missing_split(tmp_path: Path) -> None:
    """The split of a member whose name was damaged used to vanish from the sample without an error."""
    from meddx.exceptions import CorruptFileError

    path = tmp_path / "named.npz"
    np.savez(path, train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.arange(2),
             val_images=np.ones((2, 4, 4), np.uint8), val_labels=np.arange(2))
    data = bytearray(path.read_bytes())
    central = data.rindex(b"val_images.npy")  # the central directory's copy of the name
    data[central + 5] = ord("l")
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError) as err:
        NpzReader().read(path)
    assert err.value.field == "val_ilages"
