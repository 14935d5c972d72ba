"""Inference: load a run folder / model package and predict."""

from meddx.inference.pipeline import Pipeline

__all__ = ["Pipeline"]
