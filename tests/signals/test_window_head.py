"""The live-window head: RR-window features, fitting on validation windows, and its use by the runner."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from meddx.exceptions import ConfigError, InvalidValueError
from meddx.signals import package as SP
from meddx.signals.window_head import HEAD_FILE, RR_WINDOW_FEATURES, fit_window_head, rr_window_features
from meddx.stream.alerts import af_rules
from meddx.stream.runner import DEFAULT_WINDOW_S, StreamRunner, live_window_s
from tests.signals.test_package import _ecg, _run, features_run, folder  # noqa: F401 - fixtures

FS = 300.0


def _windows(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        rr = 0.8 + rng.normal(0, 0.01, 12) if kind == "regular" else rng.uniform(0.4, 1.2, 16)
        out.append(_ecg(rr, FS, rng)[: int(7 * FS)])
    return np.stack(out)


def test_rr_window_features_see_rate_and_irregularity() -> None:
    regular, irregular = rr_window_features(_windows("regular", 4, 0), FS), rr_window_features(_windows("af", 4, 1), FS)
    assert regular.shape == (4, len(RR_WINDOW_FEATURES))
    hr = RR_WINDOW_FEATURES.index("heart_rate_bpm")
    irr = RR_WINDOW_FEATURES.index("median_abs_drr_over_rr")
    np.testing.assert_allclose(regular[:, hr], 75, atol=4)  # RR 0.8 s
    assert regular[:, irr].max() < 0.05 < irregular[:, irr].min()
    flat = rr_window_features(np.zeros((1, int(7 * FS))), FS)
    assert flat[0, RR_WINDOW_FEATURES.index("frac_rr_off_median_15pct")] == 1.0  # no beats: no regularity claimed
    with pytest.raises(InvalidValueError):
        rr_window_features(np.zeros(100), FS)


def test_fit_head_adds_a_checked_file_and_live_probabilities(features_run: Path, folder: Path,  # noqa: F811
                                                              tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "pkg"
    shutil.copytree(features_run, run)
    assert SP.SignalModel.load(run).live_window_s is None  # no head yet: the runner's default applies
    out = _run(["stream", "fit-head", run, "--window-s", "6", "--hop-s", "3"])
    entry = json.loads(out)
    package = json.loads((run / "package.json").read_text())
    assert package["window_head"] == entry and HEAD_FILE in package["extra_files"]
    assert set(entry["classes_absent"]) == {"O", "~"}  # the synthetic records are Normal or AF only
    assert "validation split" in entry["fitted_on"]
    model = SP.SignalModel.load(run)
    assert model.window_head is not None
    assert model.live_window_s == 6.0 and live_window_s(model) == 6.0  # the runner uses what the head was fitted on
    x = np.concatenate([_windows("regular", 3, 5), _windows("af", 3, 6)])
    p = model.predict_window_proba(x, FS)
    assert p.shape == (6, 4) and np.allclose(p.sum(axis=1), 1.0)
    a = model.class_names.index("A")
    assert p[3:, a].min() > p[:3, a].max()
    assert np.all(p[:, [model.class_names.index("O"), model.class_names.index("~")]] == 0)
    # a tampered head is refused once the package is registered (its sha256 is recorded)
    from meddx.packaging.registry import register

    home = tmp_path / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDDX_HOME", str(home))
        reg = register(run, name="rhythm-live", version="1")
        (reg / HEAD_FILE).write_bytes(b"not a model")
        with pytest.raises(Exception, match="sha256"):
            SP.SignalModel.load(reg)


def test_fit_head_needs_validation_records(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text(json.dumps({"modality": "signal", "splits": {"train": ["a"]}}))
    with pytest.raises(ConfigError) as err:
        fit_window_head(tmp_path)
    assert err.value.field == "splits"


def test_runner_classifies_with_the_window_head_when_there_is_one() -> None:
    class Plain:
        class_names = ["N", "A"]

        def predict_proba(self, windows: np.ndarray, fs: float) -> np.ndarray:
            return np.tile([0.9, 0.1], (len(windows), 1))

    class WithHead(Plain):
        def predict_window_proba(self, windows: np.ndarray, fs: float) -> np.ndarray:
            return np.tile([0.2, 0.8], (len(windows), 1))

    x = np.zeros((2, 700))
    assert StreamRunner._window_proba(SimpleNamespace(model=Plain()), x, 100.0)[0, 1] == pytest.approx(0.1)
    assert StreamRunner._window_proba(SimpleNamespace(model=WithHead()), x, 100.0)[0, 1] == pytest.approx(0.8)


def test_live_window_length_follows_the_head_unless_asked(caplog: pytest.LogCaptureFixture) -> None:
    plain, fitted = SimpleNamespace(live_window_s=None), SimpleNamespace(live_window_s=5.0)
    assert live_window_s(plain) == DEFAULT_WINDOW_S and live_window_s(plain, 9.0) == 9.0
    assert live_window_s(fitted) == 5.0
    with caplog.at_level("WARNING", logger="meddx.stream"):
        assert live_window_s(fitted, 5.0) == 5.0
        assert not caplog.records
        assert live_window_s(fitted, 7.0) == 7.0  # the user's choice stands, with a warning naming the fix
    assert "fitted on 5-s windows" in caplog.text and "--window-s 7" in caplog.text


def test_af_rules_set_threshold_and_windows() -> None:
    af, poor = af_rules(0.4, 3)
    assert (af.on, af.off, af.consecutive, af.label) == (0.4, 0.25, 3, "A") and poor.quality
    assert af_rules()[0].on == 0.5 and af_rules()[0].off == 0.35
    for bad in ((1.2, 2), (0.5, 0)):
        with pytest.raises(ConfigError):
            af_rules(*bad)
