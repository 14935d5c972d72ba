"""External ECG collections: the MIT-BIH segmenter labels and leaves out segments as documented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("wfdb")

from meddx.signals import external as SE  # noqa: E402


def test_segments_are_labelled_from_rhythms_and_changes_left_out() -> None:
    fs = 100.0
    n = int(300 * fs)  # ten 30-s segments
    marks = [(0.5, "(N"), (65, "(AFIB"), (120, "(AFL"), (150, "(B"), (200, "(N")]
    segs = SE.segment_record(n, fs, [int(t * fs) for t, _ in marks], [c for _, c in marks], seconds=30)
    assert [s.label for s in segs] == ["N", "N", None, "A", None, "O", None, "N", "N", "N"]
    assert segs[2].reason == "straddles a rhythm change"      # 60-90 s: N then AFIB at 65 s
    assert segs[3].rhythm == "(AFIB"                          # 90-120 s: all AF (65-120 s)
    assert segs[4].reason == "rhythm (AFL left out"           # 120-150 s: atrial flutter
    assert segs[5].rhythm == "(B"                             # bigeminy is another rhythm: O
    assert segs[6].reason == "straddles a rhythm change"      # 180-210 s: B then N at 200 s
    assert all(s.stop - s.start == 3000 for s in segs)


def test_afib_segment_and_late_first_annotation() -> None:
    fs = 250.0
    n = int(90 * fs)
    segs = SE.segment_record(n, fs, [int(5 * fs), int(30 * fs)], ["(N", "(AFIB\x00"], seconds=30)
    assert segs[0].label is None and segs[0].reason == "before the first rhythm annotation"
    assert [s.label for s in segs[1:]] == ["A", "A"]
    assert SE.rhythm_class("(SVTA") == "O" and SE.rhythm_class("(AFL") is None


def test_lead_closest_to_lead_i() -> None:
    assert SE.pick_lead(["MLII", "V5"]) == 0
    assert SE.pick_lead(["V1", "MLII"]) == 1
    assert SE.pick_lead(["V1", "II", "I"]) == 2
    assert SE.pick_lead(["V1", "V2"]) == 0


def test_mitbih_record_100_from_the_mirror(mirror: Path) -> None:
    out = SE.load_mitbih(mirror / "ecg-mitbih-arrhythmia")
    # record 100 (30:05 at 360 Hz) is all normal sinus rhythm ("(N" at sample 18): 60 whole segments
    assert len(out.signals) == 60 and set(out.labels) == {"N"} and set(out.groups) == {"100"}
    assert out.leads == {"100": "MLII"}
    assert all(x.size == 9000 for x in out.signals)  # 30 s resampled to 300 Hz
    assert out.excluded == {}
    assert set(out.skipped) == {"102", "104", "105", "106", "108", "114", "116", "119", "121", "123", "200"}
    assert "ecg-mitbih-arrhythmia" in [c.name for c in SE.collections_for("ecg-cinc2017-af")]
    assert SE.collections_for(None) == []
