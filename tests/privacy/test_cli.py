"""``meddx deidentify IN OUT``: the command function in a Typer app of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from meddx.cli.deidentify import deidentify
from meddx.exceptions import ConfigError
from meddx.privacy import PseudonymKey
from meddx.privacy.pseudonyms import ENV_KEY, default_key_path
from tests.privacy._dicom import SECRETS, write_identified_dicom
from tests.privacy._records import HL7, MRN, make_bundle

app = typer.Typer()
app.command()(deidentify)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    root = tmp_path / "Doe_Jane_MRN-0001"  # an identifying folder name: never printed
    (root / "ct").mkdir(parents=True)
    write_identified_dicom(root / "ct" / "a.dcm")
    (root / "adt.hl7").write_text(HL7)
    (root / "bundle.json").write_text(json.dumps(make_bundle()))
    (root / "readme.txt").write_text("Jane Doe's scans")
    return root


def _run(*args: str) -> tuple[int, dict, object]:
    result = CliRunner().invoke(app, list(args))
    try:
        payload = json.loads(result.stdout)
    except json.JSONDecodeError:
        payload = {}
    return result.exit_code, payload, result


def test_cli_writes_and_summarises_without_identifiers(inbox: Path, tmp_path: Path) -> None:
    code, summary, result = _run(str(inbox), str(tmp_path / "out"))
    assert code == 0, result.output
    key = PseudonymKey.load()
    assert summary["files_written"] == 3
    assert sorted(summary["written"]) == ["adt.hl7", "bundle.json", "ct/a.dcm"]
    assert summary["skipped"] == [{"file": "readme.txt", "reason": "not a DICOM, FHIR JSON or HL7 v2 file"}]
    assert summary["failed"] == [] and summary["patients"] == {key.pseudonym(MRN): 3}
    assert summary["key"]["fingerprint"] == key.fingerprint and summary["key"]["created"] is True
    assert default_key_path().exists() and not list((tmp_path / "out").rglob("*.key"))
    printed = result.stdout
    assert [s for s in (*SECRETS, MRN, "Doe", "Jane", str(inbox)) if s in printed] == []
    assert "date_shift" not in printed  # offsets would undo the shifted dates
    written = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert [s for s in ("Doe^Jane", MRN, "1 Main Street", "Springfield") if s.encode() in written] == []


def test_cli_same_key_same_output_and_env_key(inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, bytes(range(32)).hex())
    _, first, _ = _run(str(inbox), str(tmp_path / "one"))
    _, second, _ = _run(str(inbox), str(tmp_path / "two"))
    assert first["key"]["source"] == "env" and not default_key_path().exists()
    assert first["patients"] == second["patients"] == {PseudonymKey(bytes(range(32))).pseudonym(MRN): 3}
    for rel in first["written"]:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()


def test_cli_refuses_a_key_file_inside_the_output(inbox: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _, result = _run(str(inbox), str(out), "--key-file", str(out / "k.key"))
    assert code != 0 and isinstance(result.exception, ConfigError)
    assert "kept apart" in str(result.exception) and not out.exists()


def test_cli_burned_in_fails_unless_allowed(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    write_identified_dicom(root / "us.dcm", burned_in="YES", modality="US")
    code, summary, _ = _run(str(root), str(tmp_path / "out"), "--key-file", str(tmp_path / "k.key"))
    assert code == 1 and summary["files_written"] == 0
    assert "BurnedInAnnotation" in summary["failed"][0]["reason"]
    code, summary, _ = _run(str(root), str(tmp_path / "out"), "--key-file", str(tmp_path / "k.key"),
                            "--allow-burned-in")
    assert code == 0 and summary["written"] == ["us.dcm"]


def test_cli_help() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0 and "--allow-burned-in" in result.output and "--key-file" in result.output
