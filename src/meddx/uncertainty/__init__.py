"""Predictive uncertainty: sampling methods (MC-dropout, Bayesian last layer, TTA, deep
ensembles) and the measures computed from their samples (predictive entropy, mutual
information, expected entropy). Conformal sets and abstention live in
:mod:`meddx.calibration`."""

from meddx.uncertainty.measures import decompose, entropy
from meddx.uncertainty.methods import METHODS, MethodOutput, list_methods, register_method, run_method

__all__ = ["METHODS", "MethodOutput", "decompose", "entropy", "list_methods", "register_method", "run_method"]
