"""Sleep/wake scoring from actigraphy: formulas, synthetic recovery, splits, agreement, Actiware CSV."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from meddx.exceptions import ConfigError, CorruptFileError
from meddx.signals.sleep import (
    LstmSvm,
    agreement,
    cole_kripke,
    cole_kripke_index,
    make_windows,
    minute_counts,
    read_actiware_csv,
    sadeh,
    sadeh_index,
    time_blocked_split,
    webster_rescore,
)


def synthetic(days: int = 3, epoch_s: float = 30.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Active days (gamma counts, mean ~250 per 30 s) and quiet nights 23:00-07:00 with rare twitches."""
    rng = np.random.default_rng(seed)
    per_day = int(86400 / epoch_s)
    hour = (np.arange(days * per_day) * epoch_s / 3600.0) % 24
    sleep = ((hour >= 23) | (hour < 7)).astype(int)
    activity = rng.gamma(2.0, 125.0, size=sleep.size)
    activity[rng.random(sleep.size) < 0.05] = 0.0  # still moments during the day
    night = sleep == 1
    activity[night] = np.where(rng.random(night.sum()) < 0.03, rng.integers(1, 15, night.sum()), 0)
    return np.round(activity), sleep


# ----------------------------------------------------------------------------- formulas by hand


def test_cole_kripke_hand_example_1min() -> None:
    a = np.zeros(12)
    a[5] = 1000.0
    d = cole_kripke_index(a, 60)
    # D(t) = 1e-5 (404 A-4 + 598 A-3 + 326 A-2 + 441 A-1 + 1408 A0 + 508 A+1 + 350 A+2)
    assert d[5] == pytest.approx(14.08)  # 1e-5 * 1408 * 1000
    assert d[6] == pytest.approx(4.41)  # A(t-1) weight 441
    assert d[9] == pytest.approx(4.04)  # A(t-4) weight 404
    assert d[4] == pytest.approx(5.08)  # A(t+1) weight 508
    assert d[3] == pytest.approx(3.50)  # A(t+2) weight 350
    assert d[2] == 0 and d[10] == 0
    a2 = np.zeros(12)
    a2[5] = 50.0  # D = 0.704 < 1 -> still sleep
    assert cole_kripke(a2, 60).tolist() == [1] * 12
    assert cole_kripke(a, 60)[[2, 3, 5, 9, 10]].tolist() == [1, 0, 0, 0, 1]


def test_cole_kripke_30s_epochs_are_summed_to_minutes() -> None:
    a = np.zeros(24)
    a[10], a[11] = 40.0, 60.0  # one minute of 100 counts split over two 30-s epochs
    assert minute_counts(a, 30)[10] == 100.0
    assert minute_counts(a, 30)[9] == 40.0
    d = cole_kripke_index(a, 30)
    assert d[10] == pytest.approx(1.408)  # same as 100 counts in a 1-min epoch
    assert d[12] == pytest.approx(0.00441 * 100)  # one minute (2 epochs) later: A(t-1) weight 441
    # at minute boundaries, 30-s scoring equals scoring the 1-minute series
    per_min = a.reshape(-1, 2).sum(axis=1)
    assert np.allclose(cole_kripke_index(per_min, 60), d[::2])


def test_sadeh_hand_example() -> None:
    a = np.zeros(30)
    a[10] = 100.0
    ps = sadeh_index(a, 60)
    assert ps[0] == pytest.approx(7.601)  # all-zero neighbourhood
    mean = 100 / 11
    sd = math.sqrt(((100 - 100 / 6) ** 2 + 5 * (100 / 6) ** 2) / 5)  # n-1 over current + 5 previous
    assert sd == pytest.approx(40.8248, abs=1e-3)
    expected = 7.601 - 0.065 * mean - 1.08 * 0 - 0.056 * sd - 0.703 * math.log(101)
    assert ps[10] == pytest.approx(expected)
    assert ps[10] == pytest.approx(1.4794, abs=1e-3)
    # NAT counts minutes with 50 <= count < 100 in the ±5-minute window
    b = np.zeros(30)
    b[10] = 75.0
    b[12] = 60.0
    ps_b = sadeh_index(b, 60)
    mean_b = 135 / 11
    sd_b = np.std([0, 0, 0, 0, 0, 75.0], ddof=1)
    exp_b = 7.601 - 0.065 * mean_b - 1.08 * 2 - 0.056 * sd_b - 0.703 * math.log(76)
    assert ps_b[10] == pytest.approx(exp_b)
    # cap at 300: 1000 counts behave as 300
    c1, c2 = np.zeros(30), np.zeros(30)
    c1[10], c2[10] = 1000.0, 300.0
    assert np.allclose(sadeh_index(c1, 60), sadeh_index(c2, 60))
    assert sadeh(c1, 60)[10] == 0 and sadeh(a, 60)[0] == 1


def test_webster_rules() -> None:
    # rule a: >= 4 min wake, then the first sleep minute becomes wake
    s = np.array([0] * 4 + [1] * 30)
    out = webster_rescore(s, 60)
    assert out[:5].tolist() == [0] * 5 and out[5:].all()
    # rule c: >= 15 min wake -> 4 min rescored
    s = np.array([0] * 15 + [1] * 30)
    assert webster_rescore(s, 60)[:19].sum() == 0 and webster_rescore(s, 60)[19:].all()
    # rule d: 6 min of sleep between 10-min wake runs becomes wake
    s = np.array([0] * 10 + [1] * 6 + [0] * 10)
    assert webster_rescore(s, 60).sum() == 0
    # in 30-s epochs, minutes double
    s = np.array([0] * 8 + [1] * 30)
    out = webster_rescore(s, 30)
    assert out[:10].sum() == 0 and out[10:].all()


def test_epoch_length_must_divide_a_minute() -> None:
    with pytest.raises(ConfigError):
        cole_kripke(np.zeros(10), 45)


# ----------------------------------------------------------------------------- synthetic recovery


@pytest.mark.parametrize("scorer", [cole_kripke, sadeh])
@pytest.mark.parametrize("rescore", [False, True])
def test_scorers_recover_synthetic_nights(scorer, rescore) -> None:
    activity, truth = synthetic()
    pred = scorer(activity, 30, rescore=rescore)
    assert pred.shape == truth.shape and set(np.unique(pred)) <= {0, 1}
    assert (pred == truth).mean() > 0.9
    res = agreement(pred, truth, n_boot=200)
    assert res["accuracy"] > 0.9 and res["kappa"] > 0.8


def test_time_blocked_split_is_ordered_and_disjoint() -> None:
    split = time_blocked_split(20160, 30, train_fraction=0.6, gap=20)
    assert split.train_days == 4 and split.test_days == 3
    assert split.train.max() < split.test.min()
    assert split.test.min() - split.train.max() == 21  # gap of 20 epochs dropped
    assert np.intersect1d(split.train, split.test).size == 0
    assert np.array_equal(split.train, np.arange(4 * 2880))
    assert split.test.max() == 20159
    with pytest.raises(ConfigError):
        time_blocked_split(1000, 30)


def test_lstm_svm_learns_on_early_days_and_predicts_later_ones() -> None:
    activity, truth = synthetic(days=3, epoch_s=60.0, seed=1)
    width = 21
    windows = make_windows(activity, width)
    assert windows.shape == (activity.size, width)
    assert windows[100, width // 2] == activity[100]
    split = time_blocked_split(activity.size, 60, train_fraction=0.6, gap=width // 2)
    model = LstmSvm(hidden=8, epochs=2, max_svm_samples=1000).fit(windows[split.train], truth[split.train])
    pred = model.predict(windows[split.test])
    assert pred.shape == split.test.shape and set(np.unique(pred)) <= {0, 1}
    assert (pred == truth[split.test]).mean() > 0.9
    with pytest.raises(ConfigError):
        LstmSvm().predict(windows)


# ----------------------------------------------------------------------------- agreement


def test_agreement_matches_sklearn_and_has_block_cis() -> None:
    from sklearn.metrics import accuracy_score, cohen_kappa_score

    rng = np.random.default_rng(3)
    ref = (np.sin(np.arange(5000) / 300) > 0).astype(int)
    pred = np.where(rng.random(5000) < 0.1, 1 - ref, ref)
    res = agreement(pred, ref, epoch_s=30, block_s=3600, n_boot=300)
    assert res["accuracy"] == pytest.approx(accuracy_score(ref, pred))
    assert res["kappa"] == pytest.approx(cohen_kappa_score(ref, pred))
    assert res["sensitivity"] == pytest.approx(((pred == 1) & (ref == 1)).sum() / (ref == 1).sum())
    assert res["specificity"] == pytest.approx(((pred == 0) & (ref == 0)).sum() / (ref == 0).sum())
    assert res["n_blocks"] == math.ceil(5000 / 120)
    for name in ("accuracy", "kappa", "sensitivity", "specificity"):
        lo, hi = res[f"{name}_ci"]
        assert lo <= res[name] <= hi and hi - lo > 0
    # missing reference epochs are left out
    ref_nan = ref.astype(float)
    ref_nan[:10] = np.nan
    assert agreement(pred, ref_nan, n_boot=10)["n"] == 4990


# ----------------------------------------------------------------------------- Actiware CSV


def test_actiware_without_table_raises_corrupt(tmp_path: Path) -> None:
    bad = tmp_path / "export.csv"
    bad.write_text('"Actiware Export File"\n"Epoch Length:","30","seconds"\n"Line","Date","Time","Marker"\n')
    with pytest.raises(CorruptFileError) as info:
        read_actiware_csv(bad)
    assert "export.csv" in str(info.value) and "Sleep/Wake" in str(info.value)


def test_actiware_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_actiware_csv(tmp_path / "absent.csv")


def test_actiware_small_table(tmp_path: Path) -> None:
    f = tmp_path / "mini.csv"
    f.write_text(
        '\ufeff"Actiware Export File"\r\n"Epoch Length:","30","seconds",""\r\n\r\n'
        '"Line","Date","Time","Activity","Marker","White Light","Sleep/Wake","Interval Status",\r\n\r\n'
        '"1","04/07/2015","09:45:00","12","0","0.01","NaN","ACTIVE",\r\n'
        '"2","04/07/2015","09:45:30","0","0","0.01","0","REST",\r\n'
        '"3","04/07/2015","09:46:00","300","0","0.01","1","ACTIVE"\r\n',
        encoding="utf-8",
    )
    rec = read_actiware_csv(f)
    assert rec.epoch_s == 30 and len(rec) == 3
    assert rec.activity.tolist() == [12, 0, 300]
    assert np.isnan(rec.sleep[0]) and rec.sleep[1:].tolist() == [1.0, 0.0]  # file: 0 = Sleep, 1 = Wake


@pytest.mark.mirror
def test_actiware_mirror_counts(mirror: Path) -> None:
    rec = read_actiware_csv(mirror / "actigraphy-pyactigraphy-samples" / "test_sample_rpx_eng.csv")
    assert len(rec) == 20160 and rec.epoch_s == 30
    raw = rec.sleep_wake_raw
    # README: Sleep/Wake 1 = 11,716, 0 = 8,440 epochs; the file's legend says 0 = Sleep, 1 = Wake
    assert int((raw == 1).sum()) == 11716
    assert int((raw == 0).sum()) == 8440
    assert int(np.isnan(raw).sum()) == 4
    assert int(np.nansum(rec.sleep)) == 8440
    assert set(np.unique(rec.interval)) >= {"ACTIVE", "REST", "REST-S"}
    # the wake code really is the active one
    assert np.nanmean(rec.activity[raw == 1]) > 100 > np.nanmean(rec.activity[raw == 0])
