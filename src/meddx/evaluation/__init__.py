"""Evaluation: diagnostic metrics with bootstrap confidence intervals, and plots."""

from meddx.evaluation.metrics import METRICS, bootstrap_metrics, compute_metrics

__all__ = ["METRICS", "bootstrap_metrics", "compute_metrics"]
