"""Signal-quality checks run on each window before the model sees it.

A bedside monitor does not classify a rhythm from a lead that fell off: it says
"leads off". Windows that fail here get the label ``poor-signal`` with the
reason, are stored, and can raise a technical alert, but never reach the model.
Checks, in order (the first that fails is the reason):

- ``flat line``: the signal barely moves (standard deviation below ``flat_sd``,
  in the signal's units, e.g. 0.01 mV) - a detached electrode or a dead sensor;
- ``saturation``: more than ``max_clipped`` of the samples sit at the window's
  extreme values - the amplifier is clipping;
- ``noise``: the share of power above ``noise_hz`` (ECG content is mostly below
  40 Hz) exceeds ``max_noise_ratio`` - muscle artefact or mains interference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OK = "ok"


@dataclass(frozen=True)
class QualityPolicy:
    flat_sd: float = 0.01
    max_clipped: float = 0.10
    clip_tolerance: float = 1e-6
    noise_hz: float = 45.0
    max_noise_ratio: float = 0.5

    def check(self, windows: np.ndarray, fs: float) -> list[str]:
        """One verdict per window (rows of ``windows``): ``ok`` or the reason it failed."""
        x = np.asarray(windows, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        sd = x.std(axis=1)
        lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
        tol = self.clip_tolerance * np.maximum(1.0, np.abs(hi - lo))
        clipped = ((x <= lo + tol) | (x >= hi - tol)).mean(axis=1)
        centred = x - x.mean(axis=1, keepdims=True)
        power = np.abs(np.fft.rfft(centred, axis=1)) ** 2
        freqs = np.fft.rfftfreq(x.shape[1], d=1.0 / fs)
        total = power.sum(axis=1) + 1e-12
        high = power[:, freqs > self.noise_hz].sum(axis=1) / total if fs / 2 > self.noise_hz else np.zeros(len(x))
        verdicts = []
        for i in range(len(x)):
            if sd[i] < self.flat_sd:
                verdicts.append("flat line")
            elif clipped[i] > self.max_clipped:
                verdicts.append("saturation")
            elif high[i] > self.max_noise_ratio:
                verdicts.append("noise")
            else:
                verdicts.append(OK)
        return verdicts
