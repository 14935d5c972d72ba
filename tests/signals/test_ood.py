"""Signal OOD gate, quality referral, rejections in a batch, and the shift section of `evaluate`.

A features-only package is trained on the synthetic WFDB folder of ``test_package`` (seconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

wfdb = pytest.importorskip("wfdb")
pytest.importorskip("sklearn")

from meddx.signals import ood as SO  # noqa: E402
from meddx.signals import package as SP  # noqa: E402
from meddx.trust.decide import OOD_REASON  # noqa: E402
from tests.signals.test_package import FS, _record, _write, folder  # noqa: E402,F401 - the WFDB folder fixture


@pytest.fixture(scope="module")
def run(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("ood-runs") / "feat"
    return SP.train(str(folder), model="features", seed=0, epochs=None, out=out, progress=False)


def _pkg(run: Path) -> dict:
    return json.loads((run / "package.json").read_text())


def test_package_stores_gate_with_window_and_record_thresholds(run: Path) -> None:
    pkg = _pkg(run)
    block = pkg["ood"]
    assert block["file"] == "ood.npz" and (run / "ood.npz").is_file() and block["method"] == "mahalanobis"
    assert set(block["methods"]) == {"mahalanobis", "knn", "msp"}
    assert all("window_threshold" in m and "threshold" in m for m in block["methods"].values())
    assert block["window_s"] == SO.WINDOW_S and len(block["scaler"]["median"]) == len(block["scaler"]["scale"])
    assert block["reference"]["records"] and block["reference"]["windows"]
    gate = SP.SignalModel.load(run).ood_gate
    assert gate is not None and gate.method == "mahalanobis" and gate.window_thresholds["knn"] > 0


def test_a_trace_labelled_ecg_that_is_not_one_is_referred(run: Path, tmp_path: Path) -> None:
    t = np.arange(int(14 * FS)) / FS
    pulse = 0.8 * np.sin(2 * np.pi * 1.1 * t) + 0.3 * np.sin(2 * np.pi * 2.2 * t + 1)  # a PPG-like wave, in "mV"
    _write(tmp_path, "pulse", pulse)
    res = SP.predict(run, _pkg(run), [str(tmp_path / "pulse")])[0]
    assert res["input_check"]["passed"] is True  # its header says ECG in mV: only the gate can tell
    assert res["ood"]["flagged"] is True and res["ood"]["score"] > res["ood"]["threshold"]
    assert res["decision"]["decision"] == "refer" and res["decision"]["reason"].startswith(OOD_REASON)


def test_every_prediction_carries_ood_and_in_distribution_records_mostly_pass(
        run: Path, folder: Path) -> None:  # noqa: F811
    pkg = _pkg(run)
    test = [str(folder / n) for n in pkg["splits"]["test"]]
    res = SP.predict(run, pkg, test)
    assert all(r["ood"] is not None and r["ood"]["method"] == "mahalanobis" for r in res)
    assert sum(r["ood"]["flagged"] for r in res) <= len(res) // 2


def test_poor_quality_record_is_referred(run: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = _record("N", 14.0, rng)
    t = np.arange(x.size) / FS
    x = x + 0.8 * np.sin(2 * np.pi * 60 * t)  # strong mains interference over the whole record
    _write(tmp_path, "mains", x)
    sm = SP.SignalModel.load(run)
    sm.package = {**sm.package, "ood": None}  # the quality referral on its own (the gate would refer it first)
    screened = SP.screen_file(tmp_path / "mains", sm.package["intended_input"])
    assert screened.reasons == []
    pred = SP.predict_screened(sm, [screened])[0]
    assert pred.ood is None and pred.decision.decision == "refer"
    assert pred.decision.reason.startswith("poor signal quality") and "noise" in pred.decision.reason


def test_wrong_signals_are_rejected_and_the_batch_goes_on(
        run: Path, folder: Path, tmp_path: Path) -> None:  # noqa: F811
    t = np.arange(20 * 100) / 100
    wfdb.wrsamp("ppg", fs=100, units=["NU"], sig_name=["PLETH"], p_signal=(500 + 40 * np.sin(7 * t))[:, None],
                fmt=["16"], adc_gain=[10.0], baseline=[0], write_dir=str(tmp_path))
    counts = np.random.default_rng(0).poisson(200, 600).astype(float)
    wfdb.wrsamp("acti", fs=1 / 60, units=["counts"], sig_name=["activity"], p_signal=counts[:, None], fmt=["16"],
                adc_gain=[1.0], baseline=[0], write_dir=str(tmp_path))
    x = _record("A", 12.0, np.random.default_rng(1)) * 1000  # an ECG in µV: converted, not rejected
    wfdb.wrsamp("micro", fs=FS, units=["uV"], sig_name=["ECG"], p_signal=x[:, None], fmt=["16"], adc_gain=[1.0],
                baseline=[0], write_dir=str(tmp_path))
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    inputs = [tmp_path / "ppg", tmp_path / "acti", folder / "r001", tmp_path / "micro", tmp_path / "image.png"]
    res = SP.predict(run, _pkg(run), [str(p) for p in inputs])
    decisions = [r["decision"]["decision"] for r in res]
    assert decisions[0] == decisions[1] == decisions[4] == "rejected"
    assert "this record is a PPG channel ('PLETH') at 100 Hz" in res[0]["decision"]["reason"]
    assert "activity (actigraphy) channel" in res[1]["decision"]["reason"]
    assert res[0]["probabilities"] == {} and res[0]["uncertainty"] is None and res[0]["ood"] is None
    assert decisions[2] != "rejected" and decisions[3] != "rejected"
    assert any("converted to mV" in w for w in res[3]["warnings"])
    assert "image.png" in res[4]["decision"]["reason"] or "signal" in res[4]["decision"]["reason"]


def test_live_windows_get_a_verdict_each(run: Path) -> None:
    sm = SP.SignalModel.load(run)
    rng = np.random.default_rng(4)
    windows = np.stack([_record("N", 7.0, rng)[: 7 * FS] for _ in range(2)] + [rng.normal(0, 0.5, 7 * FS)])
    proba, verdicts = sm.predict_window_proba_ood(windows, float(FS))
    np.testing.assert_allclose(proba, sm.predict_window_proba(windows, float(FS)), atol=1e-9)
    assert len(verdicts) == 3 and verdicts[2]["flagged"] is True
    assert verdicts[0]["threshold"] == pytest.approx(sm.ood_gate.window_thresholds["mahalanobis"])


def test_evaluate_reports_shift_calibration_and_recommendation(run: Path, folder: Path) -> None:  # noqa: F811
    res = SP.evaluate(run, _pkg(run), str(folder), n_boot=20)
    shift = res["shift"]
    assert shift["n"] == 28 and shift["ood"]["method"] == "mahalanobis"
    share = shift["ood"]["share_flagged"]
    assert share["low"] <= share["value"] <= share["high"]
    assert 0 <= shift["ood"]["ks_vs_validation"]["p_value"] <= 1
    cal = shift["calibration"]
    assert set(cal["calibration_in_the_large"]) == {"N", "A", "O", "~"}
    assert 0 <= cal["ece"] <= 1 and cal["ece_noise_floor"]["n"] == 28 and cal["ece_noise_floor"]["p95"] > 0
    assert shift["recommendation"]["action"] in ("use as is", "recalibrate on local labelled cases",
                                                 "do not use here")


def test_refit_ood_rebuilds_the_gate_from_the_recorded_splits(run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    pkg = _pkg(copy)
    pkg.pop("ood")
    pkg.pop("intended_input")
    (copy / "package.json").write_text(json.dumps(pkg))
    from typer.testing import CliRunner

    from meddx.cli import app

    result = CliRunner().invoke(app, ["models", "fit-ood", str(copy), "--flag-rate", "0.1"])
    assert result.exit_code == 0, result.output
    assert "threshold" in result.output
    again = _pkg(copy)
    assert again["ood"]["flag_rate"] == 0.1 and again["intended_input"]["kind"] == "signal"
    block = SO.refit_ood(copy, flag_rate=0.05)
    assert block["sha256"] == _pkg(copy)["ood"]["sha256"] and block["flag_rate"] == 0.05


def test_helpers() -> None:
    x = np.arange(30 * 300, dtype=float)
    assert [w.size for w in SO.cut_windows(x, 300.0)] == [2100] * 4
    assert len(SO.cut_windows(x[:1800], 300.0)) == 1
    scaler = SO.FeatureScaler.fit(np.array([[1.0, np.nan], [2.0, 5.0], [3.0, 5.0]]))
    z = scaler.transform(np.array([[2.0, np.nan], [1e9, 5.0]]))
    assert z.shape == (2, 3) and z[0, 2] == 1 and z[1, 0] == SO.CLIP and np.all(np.isfinite(z))
    ci = SO.wilson(5, 20)
    assert ci["low"] < 0.25 < ci["high"] and SO.wilson(0, 0)["value"] is None
    p = np.full((200, 4), 0.25)
    floor = SO.ece_noise_floor(p, draws=50)
    assert 0 < floor["mean"] <= floor["p95"] < 0.2


def test_drift_monitor_thresholds_come_from_validation_record_replays(run: Path) -> None:
    gate = SP.SignalModel.load(run).ood_gate
    assert len(gate.reference["window_record"]) == len(gate.reference["windows"])
    assert gate.drift_monitor(draws=10, horizon=50).ks_limit is None  # 6 validation windows: too few for KS
    rng = np.random.default_rng(0)  # a larger validation set: 40 records of 5 windows, scores clustered by record
    level = np.repeat(rng.gamma(2.0, 20.0, 40), 5)
    gate.gate.info["reference"] = {"windows": list(level + rng.normal(0, 5, 200)),
                                   "window_record": list(np.repeat(np.arange(40), 5))}
    ref = gate.reference
    monitor = gate.drift_monitor(draws=40, horizon=200)
    assert monitor.p0 == gate.flag_rate and monitor.h > 0 and monitor.ks_limit is not None
    assert len(monitor.reference) == len(ref["windows"]) and monitor.horizon == 200
    assert monitor.update(False, float(np.median(ref["windows"])))["studies"] == 1
