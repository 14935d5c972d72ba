"""energy_in_boxes / pointing_game / rescale_boxes on hand-made maps."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from meddx.exceptions import InvalidValueError
from meddx.explain import boxes_mask, energy_in_boxes, pointing_game, rescale_boxes

BOX = (4, 4, 10, 10)  # rows and columns 4..9


def test_uniform_map_scores_the_area_share() -> None:
    assert energy_in_boxes(np.ones((24, 24)), BOX) == pytest.approx(36 / 576)


def test_map_inside_the_box_scores_one_and_outside_zero() -> None:
    cam = np.zeros((24, 24))
    cam[5:9, 5:9] = 1.0
    assert energy_in_boxes(cam, BOX) == pytest.approx(1.0)
    assert energy_in_boxes(cam, [(12, 12, 20, 20)]) == 0.0


def test_x1_y1_are_exclusive() -> None:
    cam = np.zeros((24, 24))
    cam[10, 5] = 1.0  # row 10: just below the box
    assert energy_in_boxes(cam, BOX) == 0.0
    assert not pointing_game(cam, BOX)
    cam[10, 5], cam[9, 9] = 0.0, 1.0  # the box's last row and column
    assert energy_in_boxes(cam, BOX) == 1.0
    assert pointing_game(cam, BOX)


def test_overlapping_boxes_count_once() -> None:
    boxes = [(0, 0, 4, 4), (2, 2, 6, 6)]  # union: 16 + 16 - 4 = 28 pixels
    assert boxes_mask(boxes, (8, 8)).sum() == 28
    assert energy_in_boxes(np.ones((8, 8)), boxes) == pytest.approx(28 / 64)


def test_energy_weights_by_value() -> None:
    cam = np.zeros((10, 10))
    cam[0, 0], cam[9, 9] = 3.0, 1.0
    assert energy_in_boxes(cam, (0, 0, 2, 2)) == pytest.approx(0.75)


def test_zero_map_has_no_energy_and_negative_maps_raise() -> None:
    assert energy_in_boxes(np.zeros((8, 8)), BOX) == 0.0
    with pytest.raises(InvalidValueError, match="non-negative"):
        energy_in_boxes(-np.ones((8, 8)), BOX)


def test_boxes_beyond_the_image_are_clipped_and_fractions_cover_touched_pixels() -> None:
    assert boxes_mask((20, 20, 40, 40), (24, 24)).sum() == 16
    mask = boxes_mask((1.5, 2.2, 3.1, 4.0), (8, 8))  # columns 1..3, rows 2..3
    assert mask.sum() == 6 and mask[2:4, 1:4].all()


def test_pointing_game_with_tolerance() -> None:
    cam = np.zeros((24, 24))
    cam[6, 13] = 1.0  # 4 columns right of the box's last column (9)
    assert not pointing_game(cam, BOX)
    assert not pointing_game(cam, BOX, tolerance=3.9)
    assert pointing_game(cam, BOX, tolerance=4)
    cam[6, 13], cam[13, 13] = 0.0, 1.0  # diagonal: distance hypot(4, 4) = 5.66
    assert not pointing_game(cam, BOX, tolerance=5.5)
    assert pointing_game(cam, BOX, tolerance=5.7)


def test_pointing_game_hits_any_box() -> None:
    cam = np.zeros((24, 24))
    cam[20, 20] = 1.0
    assert pointing_game(cam, [BOX, (18, 18, 22, 22)])


def test_rescale_boxes_uses_height_width_order() -> None:
    boxes = rescale_boxes([(100, 40, 200, 80)], from_size=(100, 400), to_size=(50, 100))
    assert np.allclose(boxes, [[25, 20, 50, 40]])  # x by 100/400, y by 50/100
    square = rescale_boxes((256, 256, 512, 512), (1024, 1024), (24, 24))
    assert np.allclose(square, [[6, 6, 12, 12]])


@pytest.mark.parametrize("boxes", [[], [(5, 5, 5, 8)], [(6, 0, 2, 4)], [(0, 0, 1)], [(0, 0, np.nan, 2)]])
def test_bad_boxes_raise(boxes) -> None:
    with pytest.raises(InvalidValueError) as info:
        energy_in_boxes(np.ones((8, 8)), boxes)
    assert info.value.field == "boxes"


@pytest.mark.parametrize("cam", [np.ones(8), np.ones((2, 4, 4)), np.full((4, 4), np.inf)])
def test_bad_maps_raise(cam) -> None:
    with pytest.raises(InvalidValueError):
        pointing_game(cam, BOX)
    with pytest.raises(InvalidValueError):
        pointing_game(np.ones((4, 4)), BOX, tolerance=-1)


def test_localisation_and_overlay_need_no_torch() -> None:
    """The lazy package namespace keeps the array-only helpers cheap to import."""
    code = (
        "import sys, meddx.explain as e; e.energy_in_boxes; e.pointing_game; e.overlay; "
        "assert 'torch' not in sys.modules and 'pytorch_grad_cam' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
