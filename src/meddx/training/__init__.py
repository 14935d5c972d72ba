"""Training: configs, the loop, and run folders."""

from meddx.training.trainer import FitResult, TrainConfig, fit, train

__all__ = ["FitResult", "TrainConfig", "fit", "train"]
