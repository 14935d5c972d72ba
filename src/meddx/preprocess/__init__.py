"""Preprocess: turning read samples into model inputs, and training-time augmentation."""

from meddx.preprocess.augment import BatchAugment

__all__ = ["BatchAugment"]
