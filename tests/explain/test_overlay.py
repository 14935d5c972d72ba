"""overlay / save_overlay: shapes, dtypes, colours the right way round, PNG on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meddx.exceptions import InvalidValueError
from meddx.explain import COLORMAPS, overlay, save_overlay

pytest.importorskip("cv2")


def _grey(h: int = 24, w: int = 32) -> np.ndarray:
    return (np.arange(h * w) % 256).astype(np.uint8).reshape(h, w)


@pytest.mark.parametrize("image", [_grey(), _grey()[:, :, None], np.stack([_grey()] * 3, axis=2)])
def test_output_is_rgb_uint8_of_the_image_size(image: np.ndarray) -> None:
    cam = np.random.default_rng(0).random((6, 8))  # a coarse map: resized to the image
    out = overlay(image, cam)
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8


def test_alpha_zero_is_the_image_and_grey_is_replicated() -> None:
    image = _grey()
    out = overlay(image, np.ones((3, 3)), alpha=0.0)
    assert np.array_equal(out, np.stack([image] * 3, axis=2))


def test_colours_are_rgb_not_bgr() -> None:
    image = np.zeros((8, 8), np.uint8)
    hot = overlay(image, np.ones((8, 8)), alpha=1.0)  # jet at 1: dark red
    cold = overlay(image, np.zeros((8, 8)), alpha=1.0)  # jet at 0: dark blue
    assert (hot[..., 0] > hot[..., 2]).all()
    assert (cold[..., 2] > cold[..., 0]).all()


def test_blend_weights_image_and_heat() -> None:
    image = np.full((4, 4, 3), 200, np.uint8)
    heat = overlay(image, np.ones((4, 4)), alpha=1.0).astype(float)
    half = overlay(image, np.ones((4, 4)), alpha=0.5).astype(float)
    assert np.allclose(half, (heat + 200) / 2, atol=1)


def test_cam_is_resized_to_the_image() -> None:
    cam = np.zeros((2, 2))
    cam[:, 1] = 1.0  # right half hot
    out = overlay(np.zeros((16, 16), np.uint8), cam, alpha=1.0)
    assert out[:, -1, 0].min() > out[:, 0, 0].max()  # more red on the right


@pytest.mark.parametrize("name", sorted(COLORMAPS))
def test_every_colormap_works(name: str) -> None:
    assert overlay(_grey(), np.random.default_rng(1).random((24, 32)), colormap=name).shape == (24, 32, 3)


@pytest.mark.parametrize(("image", "cam", "kwargs", "field"), [
    (_grey().astype(np.float32), np.ones((4, 4)), {}, "image"),
    (np.zeros((8, 8, 4), np.uint8), np.ones((4, 4)), {}, "image"),
    (_grey(), np.ones((2, 4, 4)), {}, "cam"),
    (_grey(), np.full((4, 4), np.nan), {}, "cam"),
    (_grey(), np.ones((4, 4)), {"alpha": 1.5}, "alpha"),
    (_grey(), np.ones((4, 4)), {"colormap": "rainbowish"}, "colormap"),
])
def test_bad_arguments_raise(image, cam, kwargs, field) -> None:
    with pytest.raises(InvalidValueError) as info:
        overlay(image, cam, **kwargs)
    assert info.value.field == field


def test_float_image_error_says_to_window_first() -> None:
    with pytest.raises(InvalidValueError, match="[Ww]indow"):
        overlay(np.zeros((4, 4), np.float32), np.ones((4, 4)))


def test_save_overlay_writes_the_png(tmp_path: Path) -> None:
    from PIL import Image

    image, cam = _grey(), np.random.default_rng(2).random((6, 8))
    path = save_overlay(tmp_path / "sub" / "cam.png", image, cam, alpha=0.3)
    assert isinstance(path, Path) and path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as png:
        assert png.mode == "RGB"
        assert np.array_equal(np.asarray(png), overlay(image, cam, alpha=0.3))
