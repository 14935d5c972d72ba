"""The pseudonym key: loading and keeping it apart, keyed pseudonyms, UIDs and date shifts."""

from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path

import pytest

from meddx.exceptions import ConfigError, InvalidValueError
from meddx.privacy import PseudonymKey, shift_date, shift_datetime
from meddx.privacy.pseudonyms import ENV_KEY, default_key_path

UID = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))+$")


def test_pseudonym_is_stable_keyed_and_typed(key: PseudonymKey, other_key: PseudonymKey) -> None:
    value = key.pseudonym("MRN-0001")
    assert re.fullmatch(r"P-[A-Z2-7]{16}", value)
    assert key.pseudonym("MRN-0001") == value == key.pseudonym("  MRN-0001 ")
    assert PseudonymKey(bytes(range(32))).pseudonym("MRN-0001") == value
    assert key.pseudonym("MRN-0002") != value
    assert other_key.pseudonym("MRN-0001") != value
    assert key.pseudonym("MRN-0001", "identifier").startswith("ID-")
    assert key.pseudonym("MRN-0001", "identifier")[3:] != value[2:]  # separate HMAC domains
    with pytest.raises(ConfigError, match="kind"):
        key.pseudonym("x", "nonsense")


def test_remap_uid_is_a_valid_deterministic_dicom_uid(key: PseudonymKey, other_key: PseudonymKey) -> None:
    from pydicom.uid import UID as PydicomUID

    uids = {f"1.2.840.113619.2.55.3.{i}" for i in range(200)}
    new = {key.remap_uid(u) for u in uids}
    assert len(new) == len(uids)
    for uid in new:
        assert uid.startswith("2.25.") and len(uid) <= 64 and UID.match(uid)
        assert PydicomUID(uid).is_valid
    assert key.remap_uid("1.2.3") == key.remap_uid("1.2.3\x00") == PseudonymKey(bytes(range(32))).remap_uid("1.2.3")
    assert key.remap_uid("1.2.3") != other_key.remap_uid("1.2.3")


def test_date_shift_is_per_patient_and_in_range(key: PseudonymKey) -> None:
    shifts = [key.date_shift_days(f"patient-{i}") for i in range(300)]
    assert all(-365 <= s <= -1 for s in shifts)
    assert len(set(shifts)) > 100
    assert key.date_shift_days("patient-7") == shifts[7]
    narrow = PseudonymKey(bytes(range(32)), shift_range=(-10, -5))
    assert {narrow.date_shift_days(f"p{i}") for i in range(200)} == set(range(-10, -4))
    with pytest.raises(ConfigError, match="shift"):
        PseudonymKey(bytes(range(32)), shift_range=(5, -5))


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20240301", -1, "20240229"),  # leap year
        ("2024-03-01", -366, "2023-03-01"),
        ("2024.03.01", -1, "2024.02.29"),
        ("20230101", -365, "20220101"),
    ],
)
def test_shift_date(value: str, days: int, expected: str) -> None:
    assert shift_date(value, days) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240301101530.123456+0100", "20240229101530.123456+0100"),  # DICOM DT
        ("202402210152-0500", "202402200152-0500"),  # HL7 TS
        ("2024-03-01T10:15:30Z", "2024-02-29T10:15:30Z"),  # FHIR dateTime
        ("2024-03-01T10:15:30.5+02:00", "2024-02-29T10:15:30.5+02:00"),
        ("2024-03", "2024-02"),  # precision kept
        ("2024", "2023"),
        ("202403", "202402"),
    ],
)
def test_shift_datetime_keeps_precision_time_and_zone(value: str, expected: str) -> None:
    assert shift_datetime(value, -1) == expected


@pytest.mark.parametrize("value", ["", "DOB", "2024-13-01", "20241", "20240230", "12:00"])
def test_bad_dates_raise(value: str) -> None:
    with pytest.raises(InvalidValueError):
        shift_datetime(value, -1)
    with pytest.raises(InvalidValueError):
        shift_date(value, -1)


def test_secret_is_not_in_repr(key: PseudonymKey) -> None:
    assert bytes(range(32)).hex() not in repr(key) and "secret" not in repr(key)
    with pytest.raises(ConfigError):
        PseudonymKey(b"short")


def test_key_from_environment_hex_and_base64(monkeypatch: pytest.MonkeyPatch, key: PseudonymKey) -> None:
    monkeypatch.setenv(ENV_KEY, bytes(range(32)).hex())
    loaded = PseudonymKey.load()
    assert loaded.secret == key.secret and loaded.source == "env"
    monkeypatch.setenv(ENV_KEY, base64.b64encode(bytes(range(32))).decode())
    assert PseudonymKey.load().secret == key.secret
    assert not default_key_path().exists()  # nothing written when the environment holds the key
    monkeypatch.setenv(ENV_KEY, "not a key")
    with pytest.raises(ConfigError) as info:
        PseudonymKey.load()
    assert info.value.field == ENV_KEY and "not a key" not in str(info.value)


def test_default_key_file_is_created_private_and_reused() -> None:
    path = default_key_path()
    assert not path.exists()
    first = PseudonymKey.load()
    assert first.created and first.source == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = PseudonymKey.load()
    assert again.secret == first.secret and not again.created
    assert re.fullmatch(r"[0-9a-f]{64}\n", path.read_text())


def test_explicit_key_file_wins_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, bytes(range(32)).hex())
    key_file = tmp_path / "keys" / "study.key"
    created = PseudonymKey.load(key_file)
    assert created.created and key_file.exists() and created.secret != bytes(range(32))
    assert PseudonymKey.load(key_file).secret == created.secret


def test_key_file_is_refused_inside_the_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConfigError, match="kept apart") as info:
        PseudonymKey.load(out / "keys" / "pseudonym.key", forbid_inside=[out])
    assert info.value.field == "key_file"
    assert not (out / "keys").exists()
    existing = tmp_path / "elsewhere.key"
    PseudonymKey.load(existing)  # created outside: fine ...
    with pytest.raises(ConfigError):  # ... but not when the output is its folder
        PseudonymKey.load(existing, forbid_inside=[tmp_path])
    home_output = default_key_path().parent.parent  # writing into MEDDX_HOME itself
    with pytest.raises(ConfigError):
        PseudonymKey.load(forbid_inside=[home_output])
    assert not default_key_path().exists()


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loose.key"
    path.write_text(os.urandom(32).hex())
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        PseudonymKey.load(path)
    path.chmod(0o600)
    assert len(PseudonymKey.load(path).secret) == 32
    path.write_text("too short")
    with pytest.raises(ConfigError, match="32 bytes"):
        PseudonymKey.load(path)
