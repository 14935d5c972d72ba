"""build_checklist: TRIPOD+AI and CLAIM 2024 items, unique ids, coverage rules."""

from __future__ import annotations

import re
from typing import Any

from meddx.report import build_checklist
from meddx.report.checklist import ITEMS, SECTION_IDS, section_present

TRIPOD_AI_ITEMS = {  # the 2024 checklist's numbering
    "1", "2", "3a", "3b", "3c", "4", "5a", "5b", "6a", "6b", "6c", "7", "8a", "8b", "8c", "9a", "9b", "9c", "10", "11",
    "12a", "12b", "12c", "12d", "12e", "12f", "12g", "13", "14", "15", "16", "17", "18a", "18b", "18c", "18d", "18e",
    "18f", "19", "20a", "20b", "20c", "21", "22", "23a", "23b", "24", "25", "26", "27a", "27b", "27c",
}
KEYS = {"guideline", "item", "text", "section", "sections", "status", "scope", "note"}


def _by_id(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["guideline"], r["item"]): r for r in rows}


def test_items_are_unique_valid_and_a_reasonable_number() -> None:
    ids = [(i.guideline, i.item) for i in ITEMS]
    assert len(ids) == len(set(ids))
    assert 25 <= len(ids) <= 40
    for guideline, item in ids:
        if guideline == "TRIPOD+AI":
            assert item in TRIPOD_AI_ITEMS, item
        else:
            assert guideline == "CLAIM 2024" and re.fullmatch(r"\d+", item) and 1 <= int(item) <= 44, item
    assert {g for g, _ in ids} == {"TRIPOD+AI", "CLAIM 2024"}
    for item in ITEMS:
        assert set(item.sections) <= set(SECTION_IDS), item
        assert (item.rule is None) == (not item.sections), item  # authors-only items point nowhere


def test_full_report_covers_every_item_it_can(full: dict[str, Any]) -> None:
    rows = build_checklist(full)
    assert len(rows) == len(ITEMS) and all(set(r) == KEYS for r in rows)
    for row in rows:
        if row["scope"] == "report":
            assert row["status"] == "covered", row
        else:
            assert row["status"] == "not covered" and row["note"] == "for the authors to report", row
            assert row["section"] is None
    authors = {r["text"].split(" ")[0] for r in rows if r["scope"] == "authors"}
    assert {"Funding", "Study", "Patient", "Ethics"} <= authors  # funding, registration, PPI, ethics


def test_minimal_report_marks_missing_sections_not_covered(minimal: dict[str, Any]) -> None:
    rows = build_checklist(minimal)
    absent = {"calibration", "operating-points", "subgroups", "uncertainty", "explanations", "model-card"}
    assert not any(section_present(minimal, sid) for sid in absent)
    only_absent = [r for r in rows if r["sections"] and set(r["sections"]) <= absent]
    assert len(only_absent) >= 8
    assert all(r["status"] == "not covered" for r in only_absent), only_absent
    ids = _by_id(rows)
    assert ids[("TRIPOD+AI", "12f")]["status"] == "not covered"  # no recalibration
    assert ids[("TRIPOD+AI", "12e")]["note"].startswith("Missing: calibration")
    assert ids[("CLAIM 2024", "29")]["status"] == "covered"  # the two metrics have CIs
    assert ids[("CLAIM 2024", "20")]["status"] == "not covered"  # grouped not stated
    assert ids[("CLAIM 2024", "31")]["status"] == "not covered"


def test_rules_follow_the_content(full: dict[str, Any]) -> None:
    full["data"]["grouped"] = True
    full["evaluation"]["metrics"]["auc"] = {"value": 0.9, "low": None, "high": None}
    full["evaluation"]["metrics"]["npv"] = {"value": None, "low": None, "high": None}  # undefined: not counted
    for e in full["explanations"]:
        e.pop("sanity_spearman")
        e.pop("deletion_auc")
    ids = _by_id(build_checklist(full))
    assert "disjoint by patient" in ids[("CLAIM 2024", "20")]["note"]
    assert ids[("CLAIM 2024", "29")]["status"] == "not covered" and "auc" in ids[("CLAIM 2024", "29")]["note"]
    assert "npv" not in ids[("CLAIM 2024", "29")]["note"]
    assert ids[("CLAIM 2024", "31")]["status"] == "not covered"


def test_malformed_sections_do_not_crash(minimal: dict[str, Any]) -> None:
    minimal.update(subgroups="oops", operating_points=[1, 2], explanations=[None], calibration=["x"],
                   data={"splits": "bad"})
    rows = build_checklist(minimal)
    assert len(rows) == len(ITEMS)
    assert all(r["status"] in ("covered", "not covered") for r in rows)
