"""Tests for meddx.signals.rhythm (CinC 2017 rhythm classification)."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.exceptions import InvalidValueError
from meddx.signals import rhythm as R


def _rr(kind: str, n: int = 60, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "regular":
        return 0.8 + rng.normal(0, 0.01, n)
    return rng.uniform(0.4, 1.2, n)


def _feat(rr: np.ndarray) -> dict[str, float]:
    return dict(zip(R._RR_NAMES, R.rr_features(rr), strict=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rr_irregularity_features_separate_regular_from_irregular(seed: int) -> None:
    reg, irr = _feat(_rr("regular", seed=seed)), _feat(_rr("irregular", seed=seed))
    for key in ("rmssd", "nrmssd", "pnn50", "frac_drr_gt50ms", "rr_cv", "sd1", "local_cv_med", "local_irr_med",
                "frac_irregular", "cosen", "rr_hist_entropy"):
        assert irr[key] > reg[key], key
    assert reg["pnn50"] < 0.05 < 0.5 < irr["pnn50"]
    assert reg["hr_mean"] == pytest.approx(75, abs=1)


def test_rr_features_too_few_intervals_are_nan() -> None:
    f = _feat(np.array([0.8]))
    assert f["n_beats"] == 2 and np.isnan(f["rmssd"])


def _synthetic_ecg(rr: np.ndarray, fs: float = 300.0) -> np.ndarray:
    t_peaks = np.cumsum(np.concatenate([[0.5], rr]))
    n = int((t_peaks[-1] + 0.5) * fs)
    t = np.arange(n) / fs
    x = np.zeros(n)
    for tp in t_peaks:
        x += 1.2 * np.exp(-0.5 * ((t - tp) / 0.012) ** 2) - 0.2 * np.exp(-0.5 * ((t - tp - 0.03) / 0.01) ** 2)
        x += 0.25 * np.exp(-0.5 * ((t - tp - 0.25) / 0.04) ** 2)
    return x + np.random.default_rng(0).normal(0, 0.01, n)


def test_rhythm_features_on_synthetic_ecg() -> None:
    reg = R.rhythm_features(_synthetic_ecg(_rr("regular", 30)))
    irr = R.rhythm_features(_synthetic_ecg(_rr("irregular", 30)))
    names = R.rhythm_feature_names()
    assert reg.shape == irr.shape == (len(names),)
    f_reg, f_irr = dict(zip(names, reg, strict=True)), dict(zip(names, irr, strict=True))
    assert f_reg["n_beats"] > 20
    assert f_irr["rmssd"] > 3 * f_reg["rmssd"]
    with pytest.raises(InvalidValueError):
        R.rhythm_features(np.array([np.nan, 1.0]))


def test_challenge_score_hand_cases() -> None:
    perfect = R.challenge_score(list("NNAAOO~"), list("NNAAOO~"), n_boot=0)
    assert perfect["score"] == 1.0 and perfect["f1_~"] == 1.0
    # N: tp 1, |true| 2, |pred| 1 -> 2/3; A: tp 2, 2+3 -> 0.8; O: tp 1, 2+1 -> 2/3
    s = R.challenge_score(list("NNAAOO"), list("NAAAO~"), n_boot=0)
    assert s["f1_N"] == pytest.approx(2 / 3)
    assert s["f1_A"] == pytest.approx(0.8)
    assert s["f1_O"] == pytest.approx(2 / 3)
    assert s["score"] == pytest.approx((2 / 3 + 0.8 + 2 / 3) / 3)
    # noise mistakes only count through N/A/O
    assert R.challenge_score(list("NAO~"), list("NAOA"), n_boot=0)["f1_A"] == pytest.approx(2 / 3)


def test_challenge_score_auc_and_ci() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    proba = np.eye(4)[y] * 0.6 + rng.uniform(0, 0.1, (200, 4))
    s = R.challenge_score(y, proba.argmax(1), proba, n_boot=50)
    assert s["score"] == 1.0 and s["auc_A"] == 1.0
    lo, hi = s["ci"]["score"]
    assert lo <= s["score"] <= hi
    with pytest.raises(InvalidValueError):
        R.challenge_score(["N", "X"], ["N", "N"])


def test_stratified_folds_cover_every_record_once() -> None:
    labels = np.array(list("N" * 50 + "A" * 25 + "O" * 25 + "~" * 7))
    fold = R.stratified_folds(labels, folds=5, seed=0)
    assert fold.shape == labels.shape and set(fold) == set(range(5))
    tested = np.concatenate([np.flatnonzero(fold == k) for k in range(5)])
    assert np.array_equal(np.sort(tested), np.arange(labels.size))
    for k in range(5):
        assert np.sum(labels[fold == k] == "A") == 5
    assert np.array_equal(fold, R.stratified_folds(labels, folds=5, seed=0))


def test_cnn_forward_backward_shapes() -> None:
    import torch

    torch.manual_seed(0)
    cfg = R.CNNConfig(fs=100.0, window_s=10.0, channels=(8, 8, 16, 16))
    model = R.make_rhythm_cnn(4, cfg)
    x = torch.randn(3, 1, 1000)
    out = model(x)
    assert out.shape == (3, 4)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_fit_and_predict_cnn_tiny() -> None:
    cfg = R.CNNConfig(fs=50.0, window_s=8.0, channels=(4, 4, 8, 8), epochs=1, batch_size=4)
    rng = np.random.default_rng(0)
    signals = [rng.normal(0, 1, int(300 * s)) for s in (5, 9, 12, 20, 7, 10)]
    model = R.fit_cnn(signals, np.array([0, 1, 2, 3, 0, 1]), config=cfg)
    p = R.predict_cnn(model, signals[:3])
    assert p.shape == (3, 4)
    assert np.allclose(p.sum(1), 1, atol=1e-5)


def test_onset_mix_opens_crops_with_normal_rhythm_and_keeps_the_rest() -> None:
    import dataclasses

    import torch

    n, b = 100, 400
    data = torch.stack([torch.full((150,), float(v)) for v in (1.0, 2.0, 3.0)])  # record 0 is the Normal one
    lens = torch.tensor([150, 150, 150])
    seg = torch.full((b, n), 7.0)
    cfg = dataclasses.replace(R.CNNConfig(), onset_mix=0.5, onset_max_frac=0.4)
    out = R._onset_mix(seg, data, lens, torch.tensor([0]), cfg, torch.Generator().manual_seed(0))
    head = (out == 1.0).sum(dim=1)
    assert set(out.unique().tolist()) <= {1.0, 7.0}  # only the Normal donor is mixed in
    assert 0.35 < float((head > 0).float().mean()) < 0.65  # about onset_mix of the crops
    assert int(head.max()) < 0.4 * n  # never more than onset_max_frac of a crop
    for row, k in zip(out, head.tolist(), strict=True):  # the donor stretch opens the crop, the rest is untouched
        assert torch.all(row[:k] == 1.0) and torch.all(row[k:] == 7.0)


def test_fit_cnn_with_onset_mix_needs_normal_records() -> None:
    cfg = R.CNNConfig(fs=50.0, window_s=8.0, min_window_s=6.0, channels=(4, 4, 8, 8), epochs=1, batch_size=4,
                      onset_mix=0.5)
    rng = np.random.default_rng(0)
    signals = [rng.normal(0, 1, int(300 * s)) for s in (5, 9, 12, 20, 7, 10)]
    model = R.fit_cnn(signals, np.array([0, 1, 2, 3, 0, 1]), config=cfg)
    assert R.predict_cnn(model, signals[:2]).shape == (2, 4)
    with pytest.raises(InvalidValueError, match="Normal"):
        R.fit_cnn(signals, np.array([1, 1, 2, 3, 2, 1]), config=cfg)


@pytest.mark.mirror
def test_load_cinc_twenty_records(mirror) -> None:
    signals, labels, names = R.load_cinc(mirror / "ecg-cinc2017-af", limit=20)
    assert len(signals) == len(labels) == len(names) == 20
    assert set(labels) <= set(R.CLASSES)
    for s in signals:
        assert s.ndim == 1 and 9.0 * 300 <= s.size <= 61 * 300 and np.all(np.isfinite(s))
    f = R.rhythm_features(signals[0])
    assert f.shape == (len(R.rhythm_feature_names()),)
