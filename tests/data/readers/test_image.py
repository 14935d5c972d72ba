"""Image file and image folder readers: PIL modes, decompression bombs, labels.csv and its errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.data.readers._base import _BUILTIN_MODULES
from meddx.data.readers.image import ImageFileReader, ImageFolderReader
from meddx.data.sample import ImageSample, LabelledImagesSample
from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    DataFileNotFoundError,
    EmptyDataError,
    InvalidValueError,
    MissingFieldError,
)

FILES = ImageFileReader()
FOLDERS = ImageFolderReader()


def _all_readers_present() -> bool:
    return all(importlib.util.find_spec(f"meddx.data.readers.{m}") for m in _BUILTIN_MODULES)


RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 256, size=(6, 7), dtype=np.uint8)
RGB = RNG.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)


# -- single files ---------------------------------------------------------------------------


def test_grey_png_is_uint8_hw(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.fromarray(GREY, "L").save(path)
    sample = FILES.read(path)
    assert isinstance(sample, ImageSample) and sample.format == "image"
    np.testing.assert_array_equal(sample.array, GREY)
    assert sample.photometric == "MONOCHROME2"
    assert sample.meta["mode"] == "L" and sample.meta["size"] == [7, 6]


def test_rgba_drops_alpha(tmp_path: Path) -> None:
    rgba = np.concatenate([RGB, np.full((6, 7, 1), 128, np.uint8)], axis=-1)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    sample = FILES.read(path)
    np.testing.assert_array_equal(sample.array, RGB)
    assert sample.photometric == "RGB" and sample.meta["mode"] == "RGBA"


def test_la_drops_alpha(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    Image.fromarray(np.stack([GREY, GREY], axis=-1), "LA").save(path)
    np.testing.assert_array_equal(FILES.read(path).array, GREY)


def test_palette_grey_becomes_l_and_palette_colour_becomes_rgb(tmp_path: Path) -> None:
    grey_p = Image.fromarray(GREY, "L").convert("P")
    grey_p.save(tmp_path / "p_grey.png")
    sample = FILES.read(tmp_path / "p_grey.png")
    assert sample.array.ndim == 2
    np.testing.assert_array_equal(sample.array, np.asarray(grey_p.convert("L")))
    colour = Image.fromarray(RGB, "RGB").quantize(colors=8)
    colour.save(tmp_path / "p_rgb.png")
    sample = FILES.read(tmp_path / "p_rgb.png")
    assert sample.shape == (6, 7, 3) and sample.photometric == "RGB"
    np.testing.assert_array_equal(sample.array, np.asarray(colour.convert("RGB")))


def test_one_bit_mask_is_0_or_255(tmp_path: Path) -> None:
    mask = GREY > 128
    Image.fromarray(mask).save(tmp_path / "mask.png")
    sample = FILES.read(tmp_path / "mask.png")
    assert sample.array.dtype == np.uint8 and sample.meta["mode"] == "1"
    np.testing.assert_array_equal(sample.array, mask.astype(np.uint8) * 255)


def test_sixteen_bit_png_is_uint16(tmp_path: Path) -> None:
    data = RNG.integers(0, 65536, size=(5, 4)).astype(np.uint16)
    Image.fromarray(data).save(tmp_path / "xray16.png")
    sample = FILES.read(tmp_path / "xray16.png")
    assert sample.array.dtype == np.uint16 and sample.array.dtype.isnative
    np.testing.assert_array_equal(sample.array, data)


def test_float_tiff_is_float32_and_multipage_tiff_is_stacked(tmp_path: Path) -> None:
    data = RNG.random((4, 5)).astype(np.float32)
    Image.fromarray(data, "F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(FILES.read(tmp_path / "f.tif").array, data)
    pages = [Image.fromarray(GREY), Image.fromarray(255 - GREY)]
    pages[0].save(tmp_path / "stack.tiff", save_all=True, append_images=pages[1:])
    sample = FILES.read(tmp_path / "stack.tiff")
    assert sample.shape == (2, 6, 7) and sample.meta["n_frames"] == 2
    np.testing.assert_array_equal(sample.array[1], 255 - GREY)


def test_jpeg_and_bmp(tmp_path: Path) -> None:
    Image.fromarray(RGB).save(tmp_path / "photo.jpg", quality=95)
    jpeg = FILES.read(tmp_path / "photo.jpg")
    assert jpeg.shape == (6, 7, 3) and jpeg.array.dtype == np.uint8
    Image.fromarray(RGB).save(tmp_path / "x.bmp")
    np.testing.assert_array_equal(FILES.read(tmp_path / "x.bmp").array, RGB)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.fromarray(RGB)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    sample = FILES.read(tmp_path / "phone.jpg")
    assert sample.shape == (7, 6, 3) and sample.meta["exif_transposed"] is True


def test_sniff_png_and_jpeg(tmp_path: Path) -> None:
    Image.fromarray(GREY).save(tmp_path / "a.png")
    Image.fromarray(GREY).save(tmp_path / "b.jpg")
    assert FILES.sniff(tmp_path / "a.png", (tmp_path / "a.png").read_bytes()[:64])
    assert FILES.sniff(tmp_path / "b.jpg", (tmp_path / "b.jpg").read_bytes()[:64])
    assert not FILES.sniff(tmp_path / "c.png", b"hello")


@pytest.mark.skipif(not _all_readers_present(), reason="not every built-in reader module exists yet")
def test_png_named_jpg_is_read_by_content(tmp_path: Path) -> None:
    from meddx.data import read

    Image.fromarray(GREY).save(tmp_path / "real.png")
    wrong = tmp_path / "wrong.jpg"
    wrong.write_bytes((tmp_path / "real.png").read_bytes())
    sample = read(wrong)
    assert sample.format == "image" and sample.meta["pil_format"] == "PNG"


# -- bad files -------------------------------------------------------------------------------


def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "bomb.png")
    with pytest.raises(InvalidValueError) as err:
        FILES.read(tmp_path / "bomb.png", max_pixels=1000)
    assert "bomb.png" in str(err.value) and err.value.field == "size"
    # PIL's own limit: a warning above MAX_IMAGE_PIXELS (made an error here), an error above twice it
    for limit in (6000, 2000):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(InvalidValueError) as err:
            FILES.read(tmp_path / "bomb.png")
        assert "bomb.png" in str(err.value)


def test_truncated_png_is_corrupt(tmp_path: Path) -> None:
    Image.fromarray(RNG.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError) as err:
        FILES.read(tmp_path / "cut.png")
    assert "cut.png" in str(err.value)


def test_not_an_image_is_corrupt(tmp_path: Path) -> None:
    (tmp_path / "text.png").write_text("just text")
    with pytest.raises(CorruptFileError) as err:
        FILES.read(tmp_path / "text.png")
    assert "text.png" in str(err.value)


def test_other_pillow_formats_are_not_decoded(tmp_path: Path) -> None:
    path = tmp_path / "script.png"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(CorruptFileError) as err:
        FILES.read(path)  # EPS would run Ghostscript; only PNG/JPEG/BMP/TIFF decoders are allowed
    assert "script.png" in str(err.value)


def test_bad_options(tmp_path: Path) -> None:
    Image.fromarray(GREY).save(tmp_path / "o.png")
    with pytest.raises(ConfigError):
        FILES.read(tmp_path / "o.png", size=(2, 2))
    with pytest.raises(ConfigError):
        FILES.read(tmp_path / "o.png", max_pixels=-1)


# -- image folders ----------------------------------------------------------------------------


def _folder(tmp_path: Path, rows: list[str], header: str = "file,label,split,patient_id") -> Path:
    folder = tmp_path / "images"
    (folder / "a").mkdir(parents=True, exist_ok=True)
    Image.fromarray(GREY).save(folder / "a" / "g1.png")  # 6x7 grey
    Image.fromarray(RGB).save(folder / "a" / "c1.png")  # 6x7 colour
    Image.fromarray(RNG.integers(0, 256, size=(10, 12), dtype=np.uint8)).save(folder / "big.png")
    Image.fromarray(255 - GREY).save(folder / "g2.png")
    (folder / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder


ROWS = [
    "a/g1.png,benign,train,P1",
    "a/c1.png,malignant,train,P2",
    "big.png,benign,test,P3",
    "g2.png,malignant,val,P1",
]


def test_folder_with_size_and_channels(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ROWS)
    assert FOLDERS.accepts_directory(folder)
    sample = FOLDERS.read(folder, size=(8, 9), channels=1)
    assert isinstance(sample, LabelledImagesSample)
    assert sample.class_names == ["benign", "malignant"]
    assert sample.counts() == {"train": 2, "test": 1, "val": 1}
    images, labels = sample.splits["train"]
    assert images.shape == (2, 8, 9) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, [0, 1])
    assert labels.dtype == np.int64
    assert sample.files["train"] == ["a/g1.png", "a/c1.png"]
    assert sample.meta["groups"]["val"] == ["P1"]
    expected = np.asarray(Image.fromarray(GREY).resize((9, 8), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(images[0], expected)
    rgb = FOLDERS.read(folder, size=(8, 9), channels=3)
    assert rgb.splits["test"][0].shape == (1, 8, 9, 3)


def test_folder_without_split_column_is_one_split(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a/g1.png,1", "g2.png,0"], header="file,label")
    sample = FOLDERS.read(folder)
    assert list(sample.splits) == ["all"]
    np.testing.assert_array_equal(sample.splits["all"][1], [1, 0])
    np.testing.assert_array_equal(sample.splits["all"][0][0], GREY)  # same size: no resize needed


def test_numeric_labels_sort_as_numbers(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a/g1.png,10", "g2.png,2"], header="file,label")
    sample = FOLDERS.read(folder)
    assert sample.class_names == ["2", "10"]
    np.testing.assert_array_equal(sample.splits["all"][1], [1, 0])


def test_folder_of_different_sizes_needs_size(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ROWS)
    with pytest.raises(InvalidValueError) as err:
        FOLDERS.read(folder)
    assert "labels.csv" in str(err.value) and "size=(H, W)" in str(err.value)


def test_missing_image_names_labels_csv_and_row(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [*ROWS, "gone.png,benign,train,P9"])
    with pytest.raises(DataFileNotFoundError) as err:
        FOLDERS.read(folder, size=(8, 8))
    message = str(err.value)
    assert "labels.csv" in message and "row 6" in message and "gone.png" in message


def test_empty_labels_csv(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [])
    (folder / "labels.csv").write_text("")
    with pytest.raises(EmptyDataError) as err:
        FOLDERS.read(folder)
    assert "labels.csv" in str(err.value)
    (folder / "labels.csv").write_text("file,label\n")
    with pytest.raises(EmptyDataError) as err:
        FOLDERS.read(folder)
    assert "labels.csv" in str(err.value)


def test_missing_label_column(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a/g1.png,x"], header="file,diagnosis")
    with pytest.raises(MissingFieldError) as err:
        FOLDERS.read(folder)
    assert "labels.csv" in str(err.value) and err.value.field == "label"


def test_paths_outside_the_folder_are_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["../secret.png,x"], header="file,label")
    (tmp_path / "secret.png").write_bytes(b"")
    with pytest.raises(InvalidValueError) as err:
        FOLDERS.read(folder)
    assert "labels.csv" in str(err.value) and "outside" in str(err.value)


def test_duplicate_rows_and_empty_labels_are_invalid(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a/g1.png,x", "a/g1.png,y"], header="file,label")
    with pytest.raises(InvalidValueError) as err:
        FOLDERS.read(folder)
    assert "labels.csv" in str(err.value) and "row 3" in str(err.value)
    (folder / "labels.csv").write_text("file,label\na/g1.png,\n")
    with pytest.raises(InvalidValueError) as err:
        FOLDERS.read(folder)
    assert "labels.csv" in str(err.value) and err.value.field == "label"


def test_corrupt_image_in_folder_names_image_and_row(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a/g1.png,x", "broken.png,y"], header="file,label")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(CorruptFileError) as err:
        FOLDERS.read(folder)
    assert "broken.png" in str(err.value) and "row 3" in str(err.value)


def test_folder_option_errors(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ROWS)
    with pytest.raises(ConfigError):
        FOLDERS.read(folder, size=(0, 5))
    with pytest.raises(ConfigError):
        FOLDERS.read(folder, channels=2)
    assert not FOLDERS.accepts_directory(tmp_path)


@pytest.mark.mirror
def test_brain_tumor_folder_from_the_mirror(mirror: Path) -> None:
    folder = mirror / "brain-tumor-mri-navoneel"
    sample = FOLDERS.read(folder, size=(32, 32), channels=3)
    assert sample.class_names == ["no", "yes"]
    images, labels = sample.splits["all"]
    assert images.shape == (253, 32, 32, 3)
    assert int((labels == 1).sum()) == 155 and int((labels == 0).sum()) == 98
    with pytest.raises(InvalidValueError) as err:
        FOLDERS.read(folder)  # sizes and modes differ
    assert "labels.csv" in str(err.value)


# -- issue 18: decompression and header defects -------------------------------------------------

_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _interlaced_png(grey: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit grey PNG (Pillow reads them but cannot write them)."""
    import struct
    import zlib

    raw = bytearray()
    for x0, y0, dx, dy in _ADAM7:
        sub = grey[y0::dy, x0::dx]
        if sub.size:
            for row in sub:
                raw += b"\0" + row.tobytes()
    height, width = grey.shape
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 1))
            + _chunk(b"IDAT", zlib.compress(bytes(raw))) + _chunk(b"IEND", b""))


def _double_height(data: bytes) -> bytes:
    import struct
    import zlib

    out = bytearray(data)
    height = struct.unpack(">I", out[20:24])[0]
    out[20:24] = struct.pack(">I", 2 * height)
    out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    return bytes(out)


def _png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


PNG_IMAGES = {
    "1": lambda: Image.fromarray(GREY > 128).convert("1"),
    "L": lambda: Image.fromarray(GREY, "L"),
    "LA": lambda: Image.fromarray(np.stack([GREY, GREY], -1), "LA"),
    "P": lambda: Image.fromarray(RGB, "RGB").convert("P"),
    "RGB": lambda: Image.fromarray(RGB, "RGB"),
    "RGBA": lambda: Image.fromarray(np.concatenate([RGB, RGB[..., :1]], -1), "RGBA"),
    "I;16": lambda: Image.fromarray(GREY.astype(np.uint16) * 257),
}


@pytest.mark.parametrize("mode", list(PNG_IMAGES))
def test_png_with_doubled_header_height_is_truncated_not_zero_filled(tmp_path: Path, mode: str) -> None:
    data = _png(PNG_IMAGES[mode]())
    whole, doubled = tmp_path / "whole.png", tmp_path / "doubled.png"
    whole.write_bytes(data)
    doubled.write_bytes(_double_height(data))
    assert FILES.read(whole).array.shape[:2] == GREY.shape  # the row count matches for every colour type
    with pytest.raises(CorruptFileError) as err:
        FILES.read(doubled)
    assert err.value.field == "IHDR height" and "doubled.png" in str(err.value)


def test_interlaced_png_reads_and_its_rows_are_counted(tmp_path: Path) -> None:
    grey = RNG.integers(0, 256, size=(13, 11), dtype=np.uint8)
    path = tmp_path / "adam7.png"
    path.write_bytes(_interlaced_png(grey))
    np.testing.assert_array_equal(FILES.read(path).array, grey)
    path.write_bytes(_double_height(_interlaced_png(grey)))
    with pytest.raises(CorruptFileError):
        FILES.read(path)


def test_cmyk_jpeg_reads_as_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(path, format="JPEG", quality=100)
    sample = FILES.read(path)
    assert sample.array.shape == (6, 8, 3) and sample.photometric == "RGB"
    assert sample.array[..., 0].mean() > 200 and sample.array[..., 1].mean() < 60  # red


def test_jpeg_declaring_more_than_the_limits_is_refused_before_decoding(tmp_path: Path) -> None:
    from meddx.data.readers.limits import LimitExceededError
    from tests.security._bombs import jpeg_bomb

    with pytest.raises(LimitExceededError) as err:
        FILES.read(jpeg_bomb(tmp_path / "bomb.jpg"))
    assert err.value.field == "size" and "bomb.jpg" in str(err.value)
