"""`make_devices`: record exclusion (replay only what a model never saw) for honest alert timing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from meddx.exceptions import ConfigError
from meddx.stream import simulate as S


def _fake_cinc(labels: tuple[str, ...] | None = None, limit: int | None = None) -> list[S.Recording]:
    """Ten Normal and ten AF records of 12 s; each record's samples equal its number, so a stream tells its records."""
    out = []
    for i in range(20):
        label = "N" if i < 10 else "A"
        out.append(S.Recording(f"R{i:02d}", label, 300.0, np.full(3600, float(i), np.float32)))
    return [r for r in out if labels is None or r.label in labels]


@pytest.fixture()
def fake_cinc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "_cinc", _fake_cinc)


def _records_in(device: S.Device) -> set[str]:
    return {f"R{int(v):02d}" for v in np.unique(device.stream)}


def test_af_onset_devices_replay_only_unexcluded_records(fake_cinc: None, tmp_path: Path) -> None:
    seen = {f"R{i:02d}" for i in (0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16, 17)}
    pkg = tmp_path / "model"
    pkg.mkdir()
    (pkg / "package.json").write_text(json.dumps({
        "modality": "signal", "splits": {"train": sorted(seen)[:10], "val": sorted(seen)[10:],
                                         "test": ["R07", "R08", "R09", "R18", "R19"]}}))
    assert S.records_seen_by(pkg) == seen
    devices = S.make_devices(12, "af-onset", seed=3, exclude=S.records_seen_by(pkg))
    used = set().union(*(_records_in(d) for d in devices))
    assert used and not used & seen
    assert used <= {"R07", "R08", "R09", "R18", "R19"}
    for d in devices:  # Normal lead-in first, then AF from the onset on
        onset = int(round(d.onset_s * d.fs))
        assert onset >= 30 * 300 and np.all(d.stream[onset:] >= 10) and np.all(d.stream[:onset] < 10)
        assert set(d.records) == _records_in(d) and d.records[-1] == f"R{int(d.stream[-1]):02d}"
    everything = set().union(*(_records_in(d) for d in S.make_devices(12, "af-onset", seed=3)))
    assert everything & seen  # without the exclusion, seen records are replayed


def test_exclusions_that_leave_nothing_and_packages_without_splits_are_errors(fake_cinc: None,
                                                                             tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Normal or no AF record"):
        S.make_devices(2, "af-onset", exclude={f"R{i:02d}" for i in range(10, 20)})
    (tmp_path / "package.json").write_text(json.dumps({"modality": "signal"}))
    with pytest.raises(ConfigError) as err:
        S.records_seen_by(tmp_path)
    assert err.value.field == "splits"
