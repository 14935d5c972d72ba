"""Preprocess: turning read samples into model inputs, and training-time augmentation."""

from meddx.preprocess.arrays import prepare_arrays
from meddx.preprocess.augment import BatchAugment, shift_augment
from meddx.preprocess.foreground import ForegroundCrop, dark_background

__all__ = ["BatchAugment", "ForegroundCrop", "dark_background", "prepare_arrays", "shift_augment"]
