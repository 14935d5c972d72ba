"""EDF reader: mirror files checked against pyedflib directly, pure-Python header checks, bad files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pyedflib = pytest.importorskip("pyedflib")

from meddx.data.readers._base import _BUILTIN_MODULES  # noqa: E402
from meddx.data.readers.edf import EdfReader, parse_edf_header  # noqa: E402
from meddx.exceptions import ConfigError, CorruptFileError, MissingFieldError  # noqa: E402

READER = EdfReader()


def _all_readers_present() -> bool:
    return all(importlib.util.find_spec(f"meddx.data.readers.{m}") for m in _BUILTIN_MODULES)


@pytest.fixture
def synthetic(format_samples: Path) -> Path:
    return format_samples / "edf" / "pyedflib_test_generator_SYNTHETIC.edf"


@pytest.fixture
def annotations_only(format_samples: Path) -> Path:
    return format_samples / "edf" / "test_edfann.edf"


@pytest.fixture
def no_pyedflib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any call into pyedflib fail: corrupt files must be stopped before it."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pyedflib must not be called on a corrupt header")

    monkeypatch.setattr(pyedflib, "EdfReader", refuse)


def _mixed_rate_edf(path: Path) -> Path:
    """An EDF with two 256 Hz channels and one 128 Hz channel, 10 s long."""
    from pyedflib import highlevel

    t_fast = np.arange(2560) / 256.0
    t_slow = np.arange(1280) / 128.0
    signals = [np.sin(2 * np.pi * 2 * t_fast) * 100, np.cos(2 * np.pi * 2 * t_fast) * 100, np.sin(2 * np.pi * t_slow) * 50]
    headers = highlevel.make_signal_headers(["EEG Fz", "EEG Cz", "Resp"], dimension="uV", sample_frequency=256)
    headers[2]["sample_frequency"] = 128
    headers[2]["dimension"] = "mV"
    for header in headers:
        header["physical_min"], header["physical_max"] = -200.0, 200.0
    highlevel.write_edf(str(path), signals, headers, header=highlevel.make_header(patientcode="P-042"))
    return path


# -- the mirror's files ------------------------------------------------------------


def test_annotations_only_edfplus(annotations_only: Path) -> None:
    sample = READER.read(annotations_only)
    assert sample.format == "edf"
    assert sample.data.shape == (0, 0)
    assert sample.channel_names == []
    assert len(sample.annotations) == 856
    assert sample.meta["n_annotations"] == 856
    assert sample.meta["edf_type"] == "EDF+C"
    assert sample.patient_id == "SN001"
    with pyedflib.EdfReader(str(annotations_only)) as raw:
        onsets, durations, texts = raw.readAnnotations()
    assert [a[0] for a in sample.annotations] == pytest.approx(list(onsets))
    assert [a[2] for a in sample.annotations] == list(texts)
    assert sample.annotations[0] == (0.0, 30.0, "Sleep stage W")
    assert all(d >= 0 for _, d, _ in sample.annotations)


def test_synthetic_edf_11_signals_600s(synthetic: Path) -> None:
    sample = READER.read(synthetic)
    with pyedflib.EdfReader(str(synthetic)) as raw:
        rates = list(raw.getSampleFrequencies())
        labels = raw.getSignalLabels()
        expected = np.stack([raw.readSignal(i) for i in range(raw.signals_in_file)], axis=1)
        duration = raw.getFileDuration()
    assert rates == [200.0] * 11  # the rates the file really has
    assert sample.n_channels == 11
    assert sample.fs == 200.0
    assert sample.channel_names == labels
    assert sample.channel_names[0] == "squarewave" and sample.channel_names[-1] == "sine 50 Hz"
    assert sample.units == ["uV"] * 11
    assert sample.duration_s == pytest.approx(600.0) == pytest.approx(duration)
    assert sample.data.shape == (120000, 11)
    np.testing.assert_array_equal(sample.data, expected)
    assert sample.meta["channel_fs"] == dict.fromkeys(labels, 200.0)
    assert sample.meta["dropped_channels"] == {}
    assert sample.meta["start_datetime"] == "2011-04-04T12:57:02"
    assert [a[2] for a in sample.annotations] == ["Recording starts", "Recording ends"]
    assert sample.patient_id is None  # "X" = not known, per EDF+


def test_header_parser_matches_the_raw_bytes(synthetic: Path) -> None:
    header = parse_edf_header(synthetic)
    raw = synthetic.read_bytes()
    assert header.header_bytes == int(raw[184:192]) == 256 * 13
    assert header.n_records == 600 and header.record_duration == 1.0
    assert len(header.signals) == 12 and len(header.ordinary) == 11
    assert header.signals[-1].is_annotation
    record_bytes = sum(s.n_samples for s in header.signals) * 2
    assert header.header_bytes + header.n_records * record_bytes == synthetic.stat().st_size
    assert header.trailing_bytes == 0


def test_sniff(synthetic: Path, tmp_path: Path) -> None:
    assert READER.sniff(synthetic, synthetic.read_bytes()[:1024])
    text = tmp_path / "notes.edf"
    text.write_bytes(b"hello world" * 40)
    assert not READER.sniff(text, text.read_bytes()[:1024])


@pytest.mark.skipif(not _all_readers_present(), reason="other built-in reader modules are not there yet")
def test_read_dispatches_to_edf(synthetic: Path) -> None:
    from meddx.data import read

    assert read(synthetic).format == "edf"


# -- sampling rates ------------------------------------------------------------------


def test_mixed_rates_default_keeps_the_highest_rate(tmp_path: Path) -> None:
    path = _mixed_rate_edf(tmp_path / "mixed.edf")
    sample = READER.read(path)
    assert sample.fs == 256.0
    assert sample.channel_names == ["EEG Fz", "EEG Cz"]
    assert sample.meta["channel_fs"] == {"EEG Fz": 256.0, "EEG Cz": 256.0, "Resp": 128.0}
    assert sample.meta["dropped_channels"] == {"Resp": 128.0}
    assert sample.patient_id == "P-042"
    assert sample.duration_s == pytest.approx(10.0)


def test_mixed_rates_choose_fs(tmp_path: Path) -> None:
    path = _mixed_rate_edf(tmp_path / "mixed.edf")
    sample = READER.read(path, fs=128)
    assert sample.channel_names == ["Resp"]
    assert sample.units == ["mV"]
    assert sample.data.shape == (1280, 1)
    with pytest.raises(ConfigError) as info:
        READER.read(path, fs=100)
    assert "mixed.edf" in str(info.value) and "128" in str(info.value)


def test_mixed_rates_resample(tmp_path: Path) -> None:
    path = _mixed_rate_edf(tmp_path / "mixed.edf")
    sample = READER.read(path, resample=True)
    assert sample.fs == 256.0
    assert sample.channel_names == ["EEG Fz", "EEG Cz", "Resp"]
    assert sample.data.shape == (2560, 3)
    assert sample.meta["resampled"] is True
    t = np.arange(2560) / 256.0
    inner = slice(256, -256)  # away from the filter's edge effects
    np.testing.assert_allclose(sample.data[inner, 2], 50 * np.sin(2 * np.pi * t)[inner], atol=1.0)


def test_select_channels(tmp_path: Path) -> None:
    path = _mixed_rate_edf(tmp_path / "mixed.edf")
    assert READER.read(path, channels=["EEG Cz"]).channel_names == ["EEG Cz"]
    with pytest.raises(MissingFieldError) as info:
        READER.read(path, channels=["ECG"])
    assert "mixed.edf" in str(info.value) and "ECG" in str(info.value)


# -- corrupt files: stopped in Python, before pyedflib ---------------------------------


def test_truncated_data_is_corrupt(synthetic: Path, tmp_path: Path, no_pyedflib: None) -> None:
    cut = tmp_path / "cut.edf"
    cut.write_bytes(synthetic.read_bytes()[:1_000_000])
    with pytest.raises(CorruptFileError) as info:
        READER.read(cut)
    assert "cut.edf" in str(info.value)
    assert "truncated" in str(info.value)
    assert info.value.field == "n_records"


def test_truncated_fixed_header_is_corrupt(synthetic: Path, tmp_path: Path, no_pyedflib: None) -> None:
    cut = tmp_path / "stub.edf"
    cut.write_bytes(synthetic.read_bytes()[:100])
    with pytest.raises(CorruptFileError) as info:
        READER.read(cut)
    assert "stub.edf" in str(info.value) and "256 bytes" in str(info.value)


def test_truncated_signal_headers_are_corrupt(synthetic: Path, tmp_path: Path, no_pyedflib: None) -> None:
    cut = tmp_path / "halfheader.edf"
    cut.write_bytes(synthetic.read_bytes()[:2000])
    with pytest.raises(CorruptFileError) as info:
        READER.read(cut)
    assert "halfheader.edf" in str(info.value)


def _patched(source: Path, target: Path, offset: int, value: bytes) -> Path:
    data = bytearray(source.read_bytes())
    data[offset : offset + len(value)] = value
    target.write_bytes(bytes(data))
    return target


def test_non_numeric_signal_count_is_corrupt(synthetic: Path, tmp_path: Path, no_pyedflib: None) -> None:
    path = _patched(synthetic, tmp_path / "nsig.edf", 252, b"ab  ")
    with pytest.raises(CorruptFileError) as info:
        READER.read(path)
    assert "nsig.edf" in str(info.value) and info.value.field == "n_signals"


def test_header_size_must_match_signal_count(synthetic: Path, tmp_path: Path, no_pyedflib: None) -> None:
    path = _patched(synthetic, tmp_path / "hsize.edf", 184, b"9999    ")
    with pytest.raises(CorruptFileError) as info:
        READER.read(path)
    assert "hsize.edf" in str(info.value) and info.value.field == "header_bytes"


def test_absurd_record_count_is_corrupt(synthetic: Path, tmp_path: Path, no_pyedflib: None) -> None:
    path = _patched(synthetic, tmp_path / "many.edf", 236, b"99999999")
    with pytest.raises(CorruptFileError) as info:
        READER.read(path)
    assert "many.edf" in str(info.value) and "99999999" in str(info.value)


def test_bad_digital_range_is_corrupt(synthetic: Path, tmp_path: Path, no_pyedflib: None) -> None:
    # digital_min of signal 1 sits after label, transducer, dimension, pmin, pmax (12 signals).
    offset = 256 + 12 * (16 + 80 + 8 + 8 + 8)
    path = _patched(synthetic, tmp_path / "digital.edf", offset, b"40000   ")
    with pytest.raises(CorruptFileError) as info:
        READER.read(path)
    assert "digital.edf" in str(info.value) and "squarewave" in str(info.value)


def test_wrong_magic_is_corrupt(tmp_path: Path, no_pyedflib: None) -> None:
    path = tmp_path / "text.edf"
    path.write_bytes(b"x" * 600)
    with pytest.raises(CorruptFileError) as info:
        READER.read(path)
    assert "text.edf" in str(info.value)


def test_unknown_option(synthetic: Path) -> None:
    with pytest.raises(ConfigError) as info:
        READER.read(synthetic, rate=100)
    assert "rate" in str(info.value)


def test_plain_edf_with_a_signal_labelled_edf_annotations_reads_it_as_a_signal(tmp_path: Path) -> None:
    """Issue 18: only EDF+ gives "EDF Annotations" a meaning; in plain EDF it is an ordinary signal."""
    path = tmp_path / "plain.edf"
    writer = pyedflib.EdfWriter(str(path), 2, file_type=pyedflib.FILETYPE_EDF)
    writer.setSignalHeaders([
        {"label": label, "dimension": "uV", "sample_frequency": 100, "physical_max": 100.0,
         "physical_min": -100.0, "digital_max": 32767, "digital_min": -32768}
        for label in ("EEG", "EDF Annotations")
    ])
    signals = np.clip(np.random.default_rng(0).normal(size=(2, 1000)) * 20, -100, 100)
    writer.writeSamples(list(signals))
    writer.close()
    sample = READER.read(path)
    assert sample.meta["edf_type"] == "EDF"
    assert sample.channel_names == ["EEG", "EDF Annotations"]
    lib = pyedflib.EdfReader(str(path))
    try:
        expected = np.stack([lib.readSignal(i) for i in range(2)], axis=1)
    finally:
        lib.close()
    np.testing.assert_array_equal(sample.data, expected)
