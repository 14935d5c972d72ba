"""Test doubles for the stream suite: a window model keyed on amplitude, and synthetic devices."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from meddx.stream.simulate import Device

CLASSES = ["N", "A", "O", "~"]


class AmplitudeModel:
    """'A' when a window's standard deviation exceeds 1.5 (the synthetic 'AF' stretch has amplitude 3)."""

    class_names = CLASSES

    def __init__(self) -> None:
        self.calls = 0
        self.windows = 0

    def predict_proba(self, windows: np.ndarray, fs: float) -> np.ndarray:
        self.calls += 1
        self.windows += len(windows)
        af = (np.asarray(windows).std(axis=1) > 1.5).astype(float)
        p = np.zeros((len(windows), 4))
        p[:, 1] = 0.05 + 0.9 * af
        p[:, 0] = 1 - p[:, 1] - 0.02
        p[:, 2] = p[:, 3] = 0.01
        return p


def synthetic_devices(n: int, fs: float = 100.0, seconds: float = 60.0, af_from_s: float | None = None,
                      seed: int = 0) -> list[Device]:
    """Sine-like 'ECG' with noise; amplitude 3 from ``af_from_s`` on (the model calls that AF)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    devices = []
    for i in range(n):
        x = np.sin(2 * np.pi * 1.2 * t + i) + 0.05 * rng.standard_normal(t.size)
        if af_from_s is not None:
            x[t >= af_from_s] *= 3
        devices.append(Device(f"dev-{i:03d}", fs, x.astype(np.float32), onset_s=af_from_s))
    return devices


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: Callable[[], Any] = lambda: "") -> None:
    """Poll ``condition`` until true; on timeout fail with ``what()`` (the state worth seeing)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in {timeout:g} s {what()}")
        time.sleep(0.05)
