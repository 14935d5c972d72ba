"""Batched augmentation: whole-pixel shifts keep pixel values (no interpolation blur) and stay in bounds."""

from __future__ import annotations

import pytest
import torch

from meddx.exceptions import ConfigError
from meddx.preprocess.augment import BatchAugment, _shift_pixels
from meddx.training import TrainConfig


def test_shift_pixels_moves_whole_pixels_with_edge_padding() -> None:
    x = torch.rand(64, 1, 28, 28)
    y = _shift_pixels(x, 3, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    values = set(x.flatten().tolist())
    assert set(y.flatten().tolist()) <= values  # only existing pixel values: nothing interpolated
    for i in range(64):  # each output is a shifted copy: an interior 22x22 block appears in the input
        block = y[i, 0, 3:25, 3:25]
        hits = [(dy, dx) for dy in range(7) for dx in range(7) if torch.equal(x[i, 0, dy:dy + 22, dx:dx + 22], block)]
        assert hits, i
    shifts = {tuple(torch.nonzero(torch.eq(y[i, 0], x[i, 0])).shape) for i in range(64)}
    assert len(shifts) > 1  # samples draw their own shifts


def test_batch_augment_applies_the_shift() -> None:
    aug = BatchAugment(hflip=0.0, degrees=0.0, translate=0.0, scale=(1.0, 1.0), brightness=0.0, contrast=0.0,
                       shift_px=2)
    x = torch.rand(8, 1, 28, 28)
    y = aug(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and not torch.allclose(y, x, atol=1e-4)
    still = BatchAugment(hflip=0.0, degrees=0.0, translate=0.0, scale=(1.0, 1.0), brightness=0.0, contrast=0.0)
    assert torch.allclose(still(x, torch.Generator().manual_seed(1)), x, atol=1e-4)


def test_shift_px_is_validated() -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig(data="x", shift_px=40).validate()
    assert err.value.field == "shift_px"
