"""WFDB reader: PhysioNet records of the mirror, checked against wfdb/scipy directly, and bad records."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

wfdb = pytest.importorskip("wfdb")

from meddx.data.readers._base import _BUILTIN_MODULES  # noqa: E402
from meddx.data.readers.wfdb import WfdbReader, looks_like_wfdb_header  # noqa: E402
from meddx.data.sample import SignalSample  # noqa: E402
from meddx.exceptions import (  # noqa: E402
    ConfigError,
    CorruptFileError,
    DataFileNotFoundError,
    InvalidValueError,
)

READER = WfdbReader()

# wfdb 4.3 itself calls pandas with inplace=, deprecated in pandas 3 (the reader silences it).
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning")


def _all_readers_present() -> bool:
    return all(importlib.util.find_spec(f"meddx.data.readers.{m}") for m in _BUILTIN_MODULES)


def _write_record(folder: Path, name: str = "rec", n: int = 1000, nan_at: tuple[int, ...] = ()) -> Path:
    """A small 2-channel fmt-16 record written by wfdb itself; NaN becomes WFDB's invalid sample."""
    t = np.arange(n) / 100.0
    signal = np.stack([np.sin(2 * np.pi * t), 0.5 * np.cos(2 * np.pi * t)], axis=1)
    for i in nan_at:
        signal[i, 1] = np.nan
    wfdb.wrsamp(
        name,
        fs=100,
        units=["mV", "mV"],
        sig_name=["I", "II"],
        p_signal=signal,
        fmt=["16", "16"],
        adc_gain=[1000, 1000],
        baseline=[0, 0],
        comments=["made by a test"],
        write_dir=str(folder),
    )
    return folder / f"{name}.hea"


# -- the mirror's records -----------------------------------------------------------


def test_a103l_three_channels_250hz_with_alarm_comments(format_samples: Path) -> None:
    path = format_samples / "wfdb" / "a103l.hea"
    sample = READER.read(path)
    expected = wfdb.rdrecord(str(path.with_suffix("")))
    assert isinstance(sample, SignalSample)
    assert sample.format == "wfdb"
    assert sample.channel_names == ["II", "V", "PLETH"]
    assert sample.fs == 250.0
    assert sample.units == ["mV", "mV", "NU"]
    assert sample.data.shape == (82500, 3)
    assert sample.study_id == "a103l"
    comments = " ".join(sample.meta["comments"])
    assert "Asystole" in comments and "False alarm" in comments
    np.testing.assert_array_equal(sample.data, expected.p_signal)
    assert sample.meta["fmt"] == ["16", "16", "16"]
    assert sample.meta["adc_gain"] == pytest.approx([7247.0, 10520.0, 12530.0])
    assert sample.meta["n_sig"] == 3 and sample.meta["sig_len"] == 82500


def test_a103l_read_through_its_mat_file(format_samples: Path) -> None:
    mat = format_samples / "wfdb" / "a103l.mat"
    assert READER.sniff(mat, mat.read_bytes()[:1024])
    sample = READER.read(mat)
    assert sample.channel_names == ["II", "V", "PLETH"]
    assert sample.n_samples == 82500


def test_v102s_invalid_samples_are_an_error_by_default(format_samples: Path) -> None:
    path = format_samples / "wfdb" / "v102s.hea"
    with pytest.raises(InvalidValueError) as info:
        READER.read(path)
    text = str(info.value)
    assert "v102s.dat" in text
    assert info.value.field == "II"
    assert "PLETH (17)" in text and "allow_nan=True" in text


def test_v102s_with_allow_nan_keeps_nan_and_counts_them(format_samples: Path) -> None:
    path = format_samples / "wfdb" / "v102s.hea"
    sample = READER.read(path, allow_nan=True)
    expected = wfdb.rdrecord(str(path.with_suffix("")))
    assert sample.fs == 250.0
    assert sample.channel_names == ["II", "V", "PLETH", "RESP"]
    assert "Ventricular_Tachycardia" in sample.meta["comments"]
    assert "False alarm" in sample.meta["comments"]
    counts = np.isnan(expected.p_signal).sum(axis=0)
    assert sample.meta["nan_counts"] == {
        name: int(c) for name, c in zip(expected.sig_name, counts, strict=True) if c
    }
    np.testing.assert_array_equal(sample.data, expected.p_signal)  # NaN in the same places


def test_s0010_re_ptb_15_leads_1khz_with_clinical_comments(format_samples: Path) -> None:
    path = format_samples / "wfdb" / "s0010_re.hea"
    sample = READER.read(path)
    assert sample.n_channels == 15
    assert sample.fs == 1000.0
    assert sample.channel_names[:3] == ["i", "ii", "iii"]
    assert sample.channel_names[-3:] == ["vx", "vy", "vz"]
    assert sample.n_samples == 38400
    assert "age: 81" in sample.meta["comments"]
    assert "sex: female" in sample.meta["comments"]
    assert any("Myocardial infarction" in c for c in sample.meta["comments"])
    assert sample.meta["file_name"].count("s0010_re.xyz") == 3
    xyz = path.with_suffix(".xyz")  # the Frank leads' signal file is recognised too
    assert READER.sniff(xyz, xyz.read_bytes()[:1024])
    atr = format_samples / "wfdb" / "a103l.hea"
    assert not READER.sniff(atr.with_suffix(".atr"), b"")
    np.testing.assert_array_equal(sample.data, wfdb.rdrecord(str(path.with_suffix(""))).p_signal)


def test_mitbih_100_signals_and_annotations(mirror: Path) -> None:
    folder = mirror / "ecg-mitbih-arrhythmia" / "wfdb_record_100"
    sample = READER.read(folder / "100.hea")
    assert sample.channel_names == ["MLII", "V5"]
    assert sample.fs == 360.0
    assert sample.data.shape == (650000, 2)
    assert sample.units == ["mV", "mV"]
    symbols = Counter(label for _, _, label in sample.annotations)
    assert symbols == {"N": 2239, "A": 33, "V": 1, "+": 1}
    ann = wfdb.rdann(str(folder / "100"), "atr")
    np.testing.assert_allclose([a[0] for a in sample.annotations], ann.sample / 360.0)
    assert len(sample.meta["annotation_aux"]) == len(sample.annotations)
    # An independent copy of the MLII signal (tpcp, read without wfdb) agrees.
    tpcp = np.load(mirror / "ecg-mitbih-arrhythmia" / "tpcp_subset" / "100.npz")
    np.testing.assert_allclose(sample.data[:, 0], tpcp["ecg_mlii_mv"], atol=1e-6)


def test_mitbih_100_without_annotations(mirror: Path) -> None:
    sample = READER.read(mirror / "ecg-mitbih-arrhythmia" / "wfdb_record_100" / "100.hea", annotations=None)
    assert sample.annotations == []
    assert "annotation_file" not in sample.meta


def test_cinc2017_records_single_lead_300hz_match_the_mat_files(mirror: Path) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    folder = mirror / "ecg-cinc2017-af"
    reference = pd.read_csv(folder / "REFERENCE-v3-subset.csv").head(3)
    for row in reference.itertuples():
        sample = READER.read(folder / "records" / f"{row.record}.hea")
        assert sample.fs == 300.0
        assert sample.n_channels == 1
        assert sample.units == ["mV"]
        assert sample.n_samples == row.n_samples
        assert sample.duration_s == pytest.approx(row.seconds)
        raw = scipy_io.loadmat(folder / "records" / f"{row.record}.mat")["val"]  # (1, n) ADC, 1000/mV
        np.testing.assert_allclose(sample.data[:, 0], raw[0] / 1000.0, atol=1e-9)


def test_sniff_accepts_headers_and_rejects_other_text(format_samples: Path, tmp_path: Path) -> None:
    header = format_samples / "wfdb" / "s0010_re.hea"
    assert READER.sniff(header, header.read_bytes()[:1024])
    assert looks_like_wfdb_header(b"# a comment first\n100 2 360 650000\n")
    assert looks_like_wfdb_header(b"A00005 1 300 18000 08:12:08 1/12/2000 \n")
    assert not looks_like_wfdb_header(b"age,sex,weight\n1,2,3\n")
    assert not looks_like_wfdb_header(b"\x00\x01binary")
    lone_dat = tmp_path / "lone.dat"
    lone_dat.write_bytes(b"\x00" * 16)
    assert not READER.sniff(lone_dat, b"\x00" * 16)
    assert not READER.accepts_suffix(lone_dat)


@pytest.mark.skipif(not _all_readers_present(), reason="other built-in reader modules are not there yet")
def test_read_dispatches_to_wfdb(format_samples: Path) -> None:
    from meddx.data import read

    sample = read(format_samples / "wfdb" / "a103l.hea")
    assert sample.format == "wfdb"
    assert sample.channel_names == ["II", "V", "PLETH"]


# -- generated bad records ---------------------------------------------------------


def test_generated_record_round_trips(tmp_path: Path) -> None:
    sample = READER.read(_write_record(tmp_path))
    assert sample.channel_names == ["I", "II"]
    assert sample.fs == 100.0
    assert sample.meta["comments"] == ["made by a test"]
    np.testing.assert_allclose(sample.data[:, 0], np.sin(2 * np.pi * np.arange(1000) / 100), atol=1e-3)


def test_nan_in_generated_record_names_file_and_channel(tmp_path: Path) -> None:
    header = _write_record(tmp_path, "nanrec", nan_at=(10, 20, 30))
    with pytest.raises(InvalidValueError) as info:
        READER.read(header)
    text = str(info.value)
    assert "nanrec.dat" in text
    assert "channel II has 3 NaN/inf samples" in text
    assert "first at sample 10" in text
    assert info.value.field == "II"
    kept = READER.read(header, allow_nan=True)
    assert kept.meta["nan_counts"] == {"II": 3}
    assert np.isnan(kept.data[[10, 20, 30], 1]).all()


def test_missing_dat_file_is_named(tmp_path: Path) -> None:
    header = _write_record(tmp_path, "nodat")
    (tmp_path / "nodat.dat").unlink()
    with pytest.raises(DataFileNotFoundError) as info:
        READER.read(header)
    assert "nodat.dat" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_header_claiming_more_samples_than_the_file_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header = _write_record(tmp_path, "longrec", n=1000)
    text = header.read_text().replace("longrec 2 100 1000", "longrec 2 100 900000000", 1)
    header.write_text(text)

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("rdrecord must not run on an inconsistent header")

    monkeypatch.setattr(wfdb, "rdrecord", never)
    with pytest.raises(CorruptFileError) as info:
        READER.read(header)
    assert "longrec.hea" in str(info.value)
    assert "900000000" in str(info.value)
    assert info.value.field == "sig_len"


def test_truncated_dat_file_is_corrupt(tmp_path: Path) -> None:
    header = _write_record(tmp_path, "cut", n=1000)
    dat = tmp_path / "cut.dat"
    dat.write_bytes(dat.read_bytes()[:1000])
    with pytest.raises(CorruptFileError) as info:
        READER.read(header)
    assert "cut.hea" in str(info.value) and "cut.dat" in str(info.value)


def test_garbage_header_is_corrupt(tmp_path: Path) -> None:
    header = tmp_path / "junk.hea"
    header.write_text("this is not a header at all\n")
    with pytest.raises(CorruptFileError) as info:
        READER.read(header)
    assert "junk.hea" in str(info.value)


def test_bad_signal_line_is_corrupt(tmp_path: Path) -> None:
    header = tmp_path / "badsig.hea"
    header.write_text("badsig 1 100 10\nbadsig.dat notaformat x/mV\n")
    (tmp_path / "badsig.dat").write_bytes(b"\x00" * 20)
    with pytest.raises(CorruptFileError) as info:
        READER.read(header)
    assert "badsig.hea" in str(info.value)


def test_explicit_annotation_file_must_exist(tmp_path: Path) -> None:
    header = _write_record(tmp_path, "noann")
    assert READER.read(header).annotations == []  # the default "atr" is optional
    with pytest.raises(DataFileNotFoundError) as info:
        READER.read(header, annotations="atr")
    assert "noann.atr" in str(info.value)


def test_unknown_option_is_a_config_error(tmp_path: Path) -> None:
    header = _write_record(tmp_path, "opt")
    with pytest.raises(ConfigError) as info:
        READER.read(header, allow_nans=True)
    assert "allow_nans" in str(info.value) and "opt.hea" in str(info.value)


# -- issue 18: the reader contract on damaged and unusual headers ----------------------


def _variant(folder: Path, edit_header=None, edit_data=None, encoding: str = "utf-8") -> Path:
    """A copy of a written record as x.hea/x.dat, with the header text and/or data bytes edited."""
    src = _write_record(folder, "src", n=317)  # not whole periods: the checksums are not 0
    text = src.read_text(encoding="ascii").replace("src.dat", "x.dat").replace("src ", "x ", 1)
    data = (folder / "src.dat").read_bytes()
    (folder / "x.hea").write_bytes((edit_header(text) if edit_header else text).encode(encoding))
    (folder / "x.dat").write_bytes(edit_data(data) if edit_data else data)
    return folder / "x.hea"


def test_zero_samples_per_frame_is_a_named_error_not_zero_division(tmp_path: Path) -> None:
    path = _variant(tmp_path, lambda t: t.replace(" 16 ", " 16x0 ", 1))
    with pytest.raises(CorruptFileError, match="samples per frame") as info:
        READER.read(path)
    assert info.value.field == "samples per frame of signal 1"


def test_negative_byte_offset_is_refused_not_misaligned(tmp_path: Path) -> None:
    path = _variant(tmp_path, lambda t: t.replace(" 16 ", " 16+-4 ", 1))
    with pytest.raises(CorruptFileError, match="format field") as info:
        READER.read(path)
    assert info.value.field == "format of signal 1"
    path = _variant(tmp_path, lambda t: t.replace(" 16 ", " 16-4 ", 1))
    with pytest.raises(CorruptFileError, match="format field"):
        READER.read(path)


@pytest.mark.parametrize(
    ("edit", "encoding", "units", "comment"),
    [
        (lambda t: t.replace("/mV", "/µV"), "utf-8", "µV", "made by a test"),
        (lambda t: t + "# patient café\n", "latin-1", "mV", "patient café"),
        (lambda t: t + "# patient café\n", "utf-8", "mV", "patient café"),
        (lambda t: "\ufeff" + t, "utf-8", "mV", "made by a test"),
    ],
    ids=["micro-volt-units", "latin1-comment", "utf8-comment", "bom"],
)
def test_non_ascii_headers_read_as_wfdb_reads_them(tmp_path: Path, edit, encoding: str, units: str,
                                                   comment: str) -> None:
    path = _variant(tmp_path, edit, encoding=encoding)
    sample = READER.read(path)
    record = wfdb.rdrecord(str(path.with_suffix("")), physical=True)
    np.testing.assert_array_equal(sample.data, record.p_signal)
    assert sample.units[0] == units
    assert comment in sample.meta["comments"]
    assert sample.meta["checksum_verified"] is True


def test_checksum_mismatch_is_an_error_naming_signal_and_file(tmp_path: Path) -> None:
    path = _variant(tmp_path, edit_data=lambda d: d[:100] + bytes([d[100] ^ 4]) + d[101:])
    with pytest.raises(CorruptFileError, match="checksum") as info:
        READER.read(path)
    assert info.value.field.startswith("checksum of signal")
    assert info.value.path.endswith("x.dat")
    assert "verify_checksum=False" in str(info.value)


def test_checksum_opt_out_warns_and_says_so_in_meta(tmp_path: Path) -> None:
    path = _variant(tmp_path, edit_data=lambda d: d[:100] + bytes([d[100] ^ 4]) + d[101:])
    with pytest.warns(UserWarning, match="checksums not verified"):
        sample = READER.read(path, verify_checksum=False)
    assert sample.meta["checksum_verified"] is False


def test_intact_record_is_checksum_verified(tmp_path: Path, format_samples: Path) -> None:
    assert READER.read(_variant(tmp_path)).meta["checksum_verified"] is True
    assert READER.read(format_samples / "wfdb" / "a103l.hea").meta["checksum_verified"] is True


def test_checksums_cover_signals_with_several_samples_per_frame(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    record = wfdb.Record(record_name="mf", n_sig=2, fs=100, sig_len=200, file_name=["mf.dat", "mf.dat"],
                         fmt=["16", "16"], samps_per_frame=[2, 1], units=["mV", "mV"], sig_name=["A", "B"],
                         adc_gain=[1000.0, 1000.0], baseline=[0, 0],
                         e_p_signal=[rng.normal(size=400), rng.normal(size=200)])
    record.set_d_features(expanded=True, do_adc=True)
    record.set_defaults()
    record.wrsamp(expanded=True, write_dir=str(tmp_path))
    assert READER.read(tmp_path / "mf.hea").meta["checksum_verified"] is True
    data = bytearray((tmp_path / "mf.dat").read_bytes())
    data[40] ^= 1
    (tmp_path / "mf.dat").write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="checksum"):
        READER.read(tmp_path / "mf.hea")


def test_description_after_fewer_numeric_fields_reads_as_wfdb_reads_it(tmp_path: Path) -> None:
    """The spec wants all numeric fields before a description; wfdb accepts fewer, and so do we."""
    path = _variant(tmp_path, lambda t: "\n".join(
        " ".join(line.split()[:3] + line.split()[-1:]) if line.startswith("x.dat") else line
        for line in t.splitlines()) + "\n")
    sample = READER.read(path)
    assert sample.channel_names == [str(n) for n in wfdb.rdheader(str(path.with_suffix(""))).sig_name]
    assert sample.meta["checksum_verified"] is False  # no checksum field left


def test_a_damaged_number_in_a_numeric_field_is_refused(tmp_path: Path) -> None:
    path = _variant(tmp_path, lambda t: t.replace(" 16 0 ", " 16 0. ", 1))
    with pytest.raises(CorruptFileError, match="adc_zero") as info:
        READER.read(path)
    assert info.value.field == "adc_zero of signal 1"
