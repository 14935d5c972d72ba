"""Alert hysteresis/de-duplication and the signal-quality gate."""

from __future__ import annotations

import numpy as np

from meddx.stream.alerts import AlertRule, AlertTracker
from meddx.stream.quality import QualityPolicy


def _feed(tracker: AlertTracker, probs: list[float], quality: str = "ok") -> list[tuple[int, str]]:
    out = []
    for i, p in enumerate(probs):
        for e in tracker.update("d", "ecg", float(i), float(i + 10), {"A": p, "N": 1 - p}, quality):
            out.append((i, e.kind))
    return out


def test_needs_consecutive_windows_and_deduplicates() -> None:
    tracker = AlertTracker([AlertRule(consecutive=2, clear_windows=3)])
    events = _feed(tracker, [0.9, 0.1, 0.9, 0.9, 0.9, 0.9, 0.9])
    assert events == [(3, "raised")]  # one isolated window is not enough; one alert for the whole run


def test_hysteresis_and_clearing() -> None:
    tracker = AlertTracker([AlertRule(on=0.5, off=0.35, consecutive=2, clear_windows=3)])
    # hovering between off and on neither clears nor re-raises
    events = _feed(tracker, [0.9, 0.9, 0.45, 0.4, 0.45, 0.4, 0.1, 0.1, 0.1, 0.9, 0.9])
    assert events == [(1, "raised"), (8, "cleared"), (10, "raised")]


def test_quality_rule_and_poor_windows_do_not_break_a_run() -> None:
    tracker = AlertTracker([AlertRule(consecutive=2), AlertRule(name="poor-signal", consecutive=3, quality=True)])
    ev = []
    for i, (p, q) in enumerate([(0.9, "ok"), (0.0, "flat line"), (0.9, "ok"), (0, "flat line"), (0, "flat line"),
                                      (0, "flat line")]):
        ev += [(i, e.rule) for e in tracker.update("d", "ecg", i, i + 10, {"A": p}, q)]
    assert ev == [(2, "atrial-fibrillation"), (5, "poor-signal")]


def test_quality_checks() -> None:
    fs = 300.0
    t = np.arange(3000) / fs
    ecg = np.sin(2 * np.pi * 1.2 * t) + 0.02 * np.sin(2 * np.pi * 10 * t)
    flat = np.full_like(t, 0.2) + 1e-4 * np.sin(t)
    clipped = np.clip(3 * ecg, -1, 1)
    noisy = ecg + 2.0 * np.random.default_rng(0).standard_normal(t.size)
    assert QualityPolicy().check(np.stack([ecg, flat, clipped, noisy]), fs) == ["ok", "flat line", "saturation",
                                                                                  "noise"]
