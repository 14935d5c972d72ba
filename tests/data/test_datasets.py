"""Labelled image sets from the catalogue: the COVID chest X-ray loader (patient split, boxes, attributes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meddx.data.datasets import load_images


@pytest.mark.mirror
def test_covid_set_is_split_by_patient_with_boxes_and_attributes(mirror: Path) -> None:
    sample = load_images("covid-cxr-ieee8023-lungbbox", size=48)
    counts = sample.counts()
    assert sum(counts.values()) == 609 - sum(sample.meta["excluded"].values()) == 520
    assert sample.meta["excluded"] == {"todo": 84, "missing metadata": 4, "Unknown": 1}
    patients = {k: set(v) for k, v in sample.meta["groups"].items()}
    assert not patients["train"] & patients["test"] and not patients["val"] & patients["test"]
    assert not patients["train"] & patients["val"]
    assert sample.class_names == ["other finding", "COVID-19"]
    for split, (images, labels) in sample.splits.items():
        assert images.shape[1:] == (48, 48) and images.dtype == np.uint8
        assert set(np.unique(labels)) == {0, 1}, split
        boxes = sample.meta["boxes"][split]
        assert len(boxes) == len(labels) == len(sample.meta["attributes"][split]["sex"])
        for image_boxes in boxes:
            for x0, y0, x1, y1 in image_boxes:
                assert -0.5 <= x0 < x1 <= 48.5 and -0.5 <= y0 < y1 <= 48.5
    assert sum(len(b) == 2 for b in sample.meta["boxes"]["train"]) > 0.9 * counts["train"]
    assert {"M", "F"} <= set(sample.meta["attributes"]["test"]["sex"])
