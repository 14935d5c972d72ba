"""`meddx stream run --simulate` in one command (embedded broker), then `status`, `alerts` and `ack`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meddx.stream.broker import free_port

pytest.importorskip("wfdb")
from tests.signals.test_package import folder  # noqa: E402,F401 - the synthetic WFDB folder fixture

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def signal_model(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A small rhythm package (feature model) trained on the synthetic regular / irregular RR records."""
    from meddx.signals import package as SP

    return SP.train(str(folder), model="features", seed=0, out=tmp_path_factory.mktemp("run") / "m", progress=False)


def _cli(args: list[str]) -> str:
    from typer.testing import CliRunner

    from meddx.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_one_command_runs_broker_runner_and_devices(signal_model: Path, tmp_path: Path, mirror: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDDX_DATA_MIRROR", str(mirror))
    store = tmp_path / "stream.db"
    _cli(["stream", "run", "--model", signal_model, "--port", free_port(), "--store", store, "--simulate", 3,
          "--speed", 4, "--duration", 8, "--window-s", 6, "--hop-s", 2])
    status = json.loads(_cli(["stream", "status", "--store", store]))
    counts = status["counts"]
    assert counts["chunks"] >= 3 * 20  # 3 devices, 4x real time for about 8 s
    assert counts["predictions"] >= 3 * 5 and counts["dead_letters"] == 0 and counts["gaps"] == 0


def test_alerts_and_ack_from_the_cli(tmp_path: Path) -> None:
    from meddx.stream.alerts import AlertEvent
    from meddx.stream.store import StreamStore

    store_path = tmp_path / "stream.db"
    store = StreamStore(store_path)
    with store.transaction():
        alert_id = store.raise_alert(AlertEvent("raised", "bed-9", "ecg", "atrial-fibrillation", "high", 0.0, 10.0,
                                                0.9))
    store.close()
    listed = json.loads(_cli(["stream", "alerts", "--store", store_path, "--state", "open"]))
    assert [a["id"] for a in listed] == [alert_id]
    assert "acknowledged" in _cli(["stream", "ack", alert_id, "--by", "nurse", "--store", store_path])
    from typer.testing import CliRunner

    from meddx.cli import app

    again = CliRunner().invoke(app, ["stream", "ack", str(alert_id), "--by", "nurse", "--store", str(store_path)])
    assert again.exit_code != 0
