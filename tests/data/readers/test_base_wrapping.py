"""Issue 18: errors that wrap a library's exception name the field (tag, chunk, key) they concern."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from meddx.data.readers._base import decoding, decoding_field, field_of
from meddx.exceptions import CorruptFileError


def test_decoding_field_marks_the_innermost_field() -> None:
    with pytest.raises(ValueError) as info:
        with decoding_field("outer"), decoding_field("inner"):
            raise ValueError("bad")
    assert field_of(info.value) == "inner"


def test_decoding_names_the_marked_field_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    with pytest.raises(CorruptFileError) as info:
        with decoding(path, (struct.error,), what="as X", hint="fix it"), decoding_field("header length"):
            struct.unpack("<I", b"\x00")
    assert info.value.field == "header length"
    assert "(header length)" in str(info.value) and "f.bin" in str(info.value)


def test_decoding_falls_back_to_the_given_field_then_to_what(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    with pytest.raises(CorruptFileError) as info:
        with decoding(path, (ValueError,), what="as X", hint="h", field="frame table"):
            raise ValueError("no")
    assert info.value.field == "frame table"
    with pytest.raises(CorruptFileError) as info:
        with decoding(path, (ValueError,), what="as X", hint="h"):
            raise ValueError("no")
    assert info.value.field == "X"


def test_key_error_names_its_key() -> None:
    assert field_of(KeyError("n_sig")) == "key 'n_sig'"


def _raise_in(module: str, **local: object) -> BaseException:
    """An exception raised from a frame of ``module`` with the given local variables."""
    namespace: dict[str, object] = {"__name__": module}
    args = ", ".join(local)
    exec(f"def fail({args}):\n    raise ValueError('library detail')\n", namespace)  # noqa: S102
    try:
        namespace["fail"](**local)  # type: ignore[operator]
    except ValueError as exc:
        return exc
    raise AssertionError("not raised")


def test_a_pydicom_frame_names_the_tag_being_parsed() -> None:
    pytest.importorskip("pydicom")
    import pydicom.datadict  # noqa: F401 - loads the keyword table field_of uses

    exc = _raise_in("pydicom.filereader", tag=0x00280010)
    assert field_of(exc) == "tag (0028,0010) Rows"


def test_a_pil_frame_names_the_png_chunk() -> None:
    assert field_of(_raise_in("PIL.PngImagePlugin", cid=b"IHDR")) == "IHDR chunk"


def test_read_wraps_with_a_default_field_per_reader(tmp_path: Path) -> None:
    """A wrapped library error from read() always carries a field."""
    from meddx.data.readers import read

    path = tmp_path / "x.npz"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(CorruptFileError) as info:
        read(path)
    assert info.value.field
