"""Training: configs, the loop, and run folders."""

from meddx.training.trainer import TrainConfig, train

__all__ = ["TrainConfig", "train"]
