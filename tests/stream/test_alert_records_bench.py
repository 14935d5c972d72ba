"""The model-free RR measures that ``bench.stream_alerts_records`` reports beside each AF record."""

from __future__ import annotations

import numpy as np
import pytest

from bench.stream_alerts_records import first_irregular, irregularity, parse_rule

FS = 300.0


def _peaks(rr: list[float]) -> np.ndarray:
    return np.round(np.cumsum([0.2, *rr]) * FS).astype(int)


def test_irregularity_counts_beat_to_beat_changes_over_ten_percent() -> None:
    regular = _peaks([0.89] * 12)
    beats, share = irregularity(regular, FS, 0, 10)
    assert beats == 12 and share == 0.0  # 12 beats start in [0, 10) s; no RR change
    alternating = _peaks([0.6, 0.9] * 8)
    assert irregularity(alternating, FS, 0, 10)[1] == 1.0  # every change is 50 % or 33 %
    assert np.isnan(irregularity(_peaks([1.0, 1.0]), FS, 0, 10)[1])  # too few intervals to judge


def test_first_irregular_finds_where_a_regular_start_turns_irregular() -> None:
    rng = np.random.default_rng(0)
    rr = [0.8] * 25 + list(rng.uniform(0.4, 1.2, 40))  # 20 s regular, then AF-like
    peaks = _peaks(rr)
    seconds = peaks[-1] / FS
    onset = first_irregular(peaks, FS, seconds, cut=0.4)
    assert onset is not None and 20 < onset < 30  # a 10-s stretch must be mostly irregular
    assert first_irregular(_peaks([0.8] * 60), FS, 48.0, cut=0.4) is None


def test_parse_rule() -> None:
    assert parse_rule("0.4x2") == (0.4, 2)
    with pytest.raises(ValueError):
        parse_rule("0.4")
