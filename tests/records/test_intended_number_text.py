"""Issue 18: record values given as text must be plain decimals (``1_000``, ``0x10`` are refused by name)."""

from __future__ import annotations

import math

import pytest

from meddx.records.intended import parse

SPEC = {"kind": "numeric", "min": 0, "max": 10_000}


@pytest.mark.parametrize("text", ["1_000", "0x10", "1,000", "12abc"])
def test_number_text_that_is_not_a_decimal_is_refused_naming_the_feature(text: str) -> None:
    value, reason = parse("glucose", SPEC, text)
    assert value is None and reason is not None and reason.startswith("glucose=") and "not a number" in reason


@pytest.mark.parametrize("text", ["inf", "-Infinity"])
def test_non_finite_text_is_refused_naming_the_feature(text: str) -> None:
    value, reason = parse("glucose", SPEC, text)
    assert value is None and reason is not None and "finite" in reason


@pytest.mark.parametrize(("text", "expected"), [("5.5", 5.5), (" 12 ", 12.0), ("-.5", -0.5), ("1e3", 1000.0)])
def test_decimal_text_reads(text: str, expected: float) -> None:
    value, reason = parse("glucose", SPEC, text)
    assert reason is None and math.isclose(value, expected)


def test_nan_text_means_missing_not_a_number() -> None:
    value, reason = parse("glucose", SPEC, "nan")
    assert reason is None and math.isnan(value)
