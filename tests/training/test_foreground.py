"""Foreground crop (brain MRI: crop to the head, standardise) and the shift augmentation."""

from __future__ import annotations

import numpy as np
import torch

from meddx.preprocess import ForegroundCrop, dark_background, shift_augment


def test_crop_fills_the_frame_with_the_foreground() -> None:
    x = torch.zeros(2, 1, 64, 64)
    x[0, 0, 40:60, 4:24] = 1.0  # a small bright object in a corner
    x[1, 0, 8:56, 8:56] = torch.linspace(0.2, 1.0, 48)  # a large one
    out = ForegroundCrop()(x)
    assert out.shape == x.shape
    centre = out[0, 0, 16:48, 16:48]
    assert float(centre.std()) < 0.1 and float(centre.mean()) > 0  # the object now fills the middle
    assert abs(float(out[0].mean())) < 1e-4 and abs(float(out[0].std()) - 1) < 0.05  # standardised


def test_crop_is_invariant_to_brightness_and_contrast() -> None:
    x = torch.zeros(1, 1, 32, 32)
    x[0, 0, 10:30, 5:25] = torch.rand(20, 20) * 0.5 + 0.5
    crop = ForegroundCrop()
    assert torch.allclose(crop(x), crop(x * 0.4 + 0.1), atol=0.02)  # up to the SD epsilon


def test_blank_images_pass_through() -> None:
    out = ForegroundCrop()(torch.zeros(1, 1, 16, 16))
    assert out.shape == (1, 1, 16, 16) and torch.isfinite(out).all()


def test_dark_background_rule() -> None:
    rng = np.random.default_rng(0)
    dark = np.zeros((10, 64, 64), np.uint8)
    dark[:, 16:48, 16:48] = rng.integers(50, 255, (10, 32, 32))
    assert dark_background(dark)
    assert not dark_background(rng.integers(40, 255, (10, 64, 64), dtype=np.uint8))
    assert not dark_background(np.zeros((3, 4, 4), np.uint8))  # too small to tell


def test_shift_augment_is_seeded_bounded_and_scaled_to_size() -> None:
    x = torch.rand(6, 1, 64, 64)
    a = shift_augment(64)
    one = a(x, torch.Generator().manual_seed(3))
    two = a(x, torch.Generator().manual_seed(3))
    assert torch.equal(one, two) and one.shape == x.shape
    assert float(one.min()) >= 0 and float(one.max()) <= 1
    assert shift_augment(28).blur_sigma == 0 and shift_augment(28).low_res == 1.0
    assert shift_augment(64).blur_sigma > 0 and shift_augment(64).low_res < 1.0
