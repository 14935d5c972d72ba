"""R-peak detection, beat features, PVC classification and leave-one-record-out (meddx.signals.beats)."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.exceptions import ConfigError, InvalidValueError
from meddx.signals import beats as beats_mod
from meddx.signals.beats import (
    BeatRecord,
    beat_feature_names,
    beat_features,
    choose_threshold,
    detect_r_peaks,
    leave_one_record_out,
    load_mitbih_records,
    loro_splits,
    match_peaks,
)

FS = 360.0


def synthetic_ecg(duration_s: float = 60.0, bpm: float = 75.0, pvc_every: int = 7, seed: int = 0,
                  fs: float = FS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian QRS train at a known rate with premature, wide, inverted beats every ``pvc_every`` beats."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * fs)
    t = np.arange(n) / fs
    rr = 60.0 / bpm
    peaks, pvc = [], []
    tb, k = 0.8, 0
    while tb < duration_s - 0.8:
        is_pvc = pvc_every > 0 and k % pvc_every == pvc_every - 1
        if is_pvc:
            tb -= 0.35 * rr  # premature
        peaks.append(tb)
        pvc.append(is_pvc)
        tb += rr * (1.35 if is_pvc else 1.0)  # compensatory pause
        k += 1
    x = np.zeros(n)
    for p, v in zip(peaks, pvc, strict=True):
        if v:
            x += -2.0 * np.exp(-0.5 * ((t - p) / 0.025) ** 2) + 0.4 * np.exp(-0.5 * ((t - p - 0.2) / 0.06) ** 2)
        else:
            x += 1.0 * np.exp(-0.5 * ((t - p) / 0.012) ** 2) + 0.2 * np.exp(-0.5 * ((t - p - 0.25) / 0.05) ** 2)
            x += 0.1 * np.exp(-0.5 * ((t - p + 0.16) / 0.03) ** 2)
    x += 0.1 * np.sin(2 * np.pi * 0.2 * t) + 0.01 * rng.standard_normal(n)
    idx = np.round(np.asarray(peaks) * fs).astype(np.int64)
    return x, idx, np.asarray(pvc)


@pytest.fixture(scope="module")
def ecg() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return synthetic_ecg()


def test_detects_synthetic_beats(ecg):
    x, ref, _ = ecg
    det = detect_r_peaks(x, FS)
    m = match_peaks(det, ref, FS)
    assert m.sensitivity >= 0.98 and m.ppv >= 0.98
    # corrected to the local extremum: within 10 ms of the true peak
    err = np.abs(det[m.pairs[:, 0]] - ref[m.pairs[:, 1]])
    assert np.median(err) <= 0.01 * FS


def test_match_peaks_counts():
    ref = np.array([100, 500, 900, 1300])
    det = np.array([110, 480, 505, 2000])  # two near 500: one matches, one is FP; 900/1300 missed
    m = match_peaks(det, ref, 100.0, tolerance_s=0.15)
    assert (m.tp, m.fp, m.fn) == (2, 2, 2)
    assert m.sensitivity == pytest.approx(0.5) and m.ppv == pytest.approx(0.5)
    assert {tuple(p) for p in m.pairs.tolist()} == {(0, 0), (2, 1)}  # 505 is closer to 500 than 480
    empty = match_peaks([], ref, 100.0)
    assert (empty.tp, empty.fp, empty.fn) == (0, 0, 4)


def test_beat_features_separate_premature_wide_beats(ecg):
    x, ref, pvc = ecg
    f = beat_features(x, FS, ref)
    names = beat_feature_names()
    assert f.shape == (ref.size, len(names)) and np.all(np.isfinite(f))
    col = {n: i for i, n in enumerate(names)}
    inner = np.arange(ref.size) > 0
    assert np.all(f[pvc & inner, col["rr_pre_ratio"]] < 0.8)
    assert np.median(f[~pvc, col["rr_pre_ratio"]]) == pytest.approx(1.0, abs=0.15)
    assert np.median(f[pvc, col["qrs_width_s"]]) > 1.5 * np.median(f[~pvc, col["qrs_width_s"]])
    assert np.median(f[pvc, col["template_corr"]]) < np.median(f[~pvc, col["template_corr"]])
    assert beat_features(x, FS, []).shape == (0, len(names))


def test_loro_splits_never_mix_records():
    groups = np.repeat(["a", "b", "c", "d"], [5, 3, 7, 2])
    seen = []
    for held, train, test in loro_splits(groups):
        assert set(groups[test]) == {held}
        assert held not in set(groups[train])
        assert np.intersect1d(train, test).size == 0
        assert train.size + test.size == groups.size
        seen.append(held)
    assert seen == ["a", "b", "c", "d"]
    with pytest.raises(InvalidValueError):
        list(loro_splits(["a", "a"]))


def test_leave_one_record_out_on_synthetic_records():
    records = []
    for i, (bpm, every) in enumerate([(70, 6), (85, 5), (60, 8)]):
        x, ref, pvc = synthetic_ecg(duration_s=40.0, bpm=bpm, pvc_every=every, seed=i)
        records.append(BeatRecord(f"s{i}", x, FS, ref, pvc))
    result = leave_one_record_out(records)
    assert [r["record"] for r in result["per_record"]] == ["s0", "s1", "s2"]
    assert result["gross"]["sensitivity"] > 0.9 and result["gross"]["ppv"] > 0.9
    assert result["detection"]["sensitivity"] > 0.97
    total_pvc = sum(int(r.is_pvc.sum()) for r in records)
    assert result["gross"]["tp"] + result["gross"]["fn"] == total_pvc  # every reference PVC is counted


def test_threshold_is_chosen_without_the_held_out_record(monkeypatch):
    records = []
    for i, (bpm, every) in enumerate([(70, 6), (85, 5), (60, 8)]):
        x, ref, pvc = synthetic_ecg(duration_s=30.0, bpm=bpm, pvc_every=every, seed=i)
        records.append(BeatRecord(f"s{i}", x, FS, ref, pvc))
    seen = []
    real = beats_mod.choose_classifier

    def spy(X, y, groups, missed=None, **kw):
        seen.append((set(np.unique(groups).tolist()), set((missed or {}).keys()), X.shape[0]))
        return real(X, y, groups, missed, **kw)

    monkeypatch.setattr(beats_mod, "choose_classifier", spy)
    result = beats_mod.leave_one_record_out(records)
    assert len(seen) == 3
    for held, (grp, miss, _) in enumerate(seen):
        assert held not in grp and held not in miss  # the fold never sees the held-out record
        assert grp == set(range(3)) - {held}
    assert all(0 < r["threshold"] < 1 for r in result["per_record"])
    # held-out labels cannot move the threshold: flip the PVC labels of record s0 and re-run
    flipped = [BeatRecord("s0", records[0].signal, FS, records[0].r_peaks, ~records[0].is_pvc), *records[1:]]
    result2 = beats_mod.leave_one_record_out(flipped)
    assert result2["per_record"][0]["threshold"] == result["per_record"][0]["threshold"]
    assert result2["per_record"][0]["classifier"] == result["per_record"][0]["classifier"]
    assert all(r["classifier"] in beats_mod.PVC_CLASSIFIERS for r in result["per_record"])


def test_choose_threshold_uses_grouped_inner_folds():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 3))
    y = (X[:, 0] > 1.0).astype(np.int64)
    groups = np.repeat([0, 1, 2], 100)
    thr = choose_threshold(X, y, groups)
    assert 0.05 <= thr <= 0.95
    assert choose_threshold(X, y, np.zeros(300)) == 0.5  # one record: no inner CV possible


def test_choose_classifier_prefers_the_candidate_that_separates_in_inner_cv():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 3))
    y = (X[:, 0] > 1.0).astype(np.int64)
    groups = np.repeat([0, 1, 2, 3], 100)

    class Blind:  # ignores the features: a constant probability
        def fit(self, X, y):
            self.p = float(np.mean(y))
            return self

        def predict_proba(self, X):
            return np.column_stack([np.full(len(X), 1 - self.p), np.full(len(X), self.p)])

    name, thr, scores = beats_mod.choose_classifier(
        X, y, groups, candidates={"blind": Blind, "gbm": beats_mod.make_pvc_classifier})
    assert name == "gbm" and 0.05 <= thr <= 0.95
    assert scores["gbm"][1] > scores["blind"][1]
    with pytest.raises(ConfigError):
        beats_mod.make_pvc_classifier(name="svm")


def test_errors_name_the_field():
    with pytest.raises(InvalidValueError) as err:
        detect_r_peaks(np.full(2000, np.nan), FS)
    assert err.value.field == "signal"
    with pytest.raises(InvalidValueError) as err:
        detect_r_peaks(np.zeros(2000), -1)
    assert err.value.field == "fs"
    with pytest.raises(InvalidValueError) as err:
        beat_features(np.zeros(2000), FS, [10, 5000])
    assert err.value.field == "peaks"
    with pytest.raises(ConfigError) as err:
        match_peaks([1], [1], FS, tolerance_s=0)
    assert err.value.field == "tolerance_s"
    with pytest.raises(InvalidValueError) as err:
        BeatRecord("r", np.zeros(2000), FS, [10, 20], [True])
    assert err.value.field == "is_pvc"


@pytest.mark.mirror
def test_mitbih_detection_sensitivity(mirror):
    records = load_mitbih_records(records=["100", "119"], max_seconds=300)
    for rec in records:
        m = match_peaks(detect_r_peaks(rec.signal, rec.fs), rec.r_peaks, rec.fs)
        assert m.sensitivity > 0.95, rec.name
        assert m.ppv > 0.95, rec.name
