"""Site shift on a batch, and drift over time, judged against the model's own validation data.

Two questions a hospital asks of a model it did not train:

* **Is this batch like the training data?** :func:`batch_shift` compares a folder's
  features and scores with the package's reference (validation) sample: the share of
  inputs the OOD gate flags (with a binomial test against the gate's flag rate), a
  two-sample Kolmogorov-Smirnov test of the OOD scores and of the model's scores, and
  ends with a plain recommendation (:func:`recommend`).
* **Has the stream of studies changed?** :class:`DriftMonitor` watches studies one by one:
  a Bernoulli CUSUM on the OOD flag (the feature distribution: in-distribution inputs are
  flagged at the gate's rate, shifted ones far more often) raises the drift **alarm**; a
  windowed KS test of the model's scores raises a **score-shift warning** (case mix or
  calibration changed: recalibrate), not an alarm, because a prevalence change alone moves
  it (PneumoniaMNIST's test split, 62.5% pneumonia against validation's 74%, set it off in
  15 of 100 in-distribution replays). Each threshold is set by simulation so that a replay
  of ``horizon`` in-distribution studies passes it with probability at least ``1 - false_alarm``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError

DEFAULT_HORIZON = 1000
DEFAULT_FALSE_ALARM = 0.05
DEFAULT_SHIFTED_FLAG_RATE = 0.3
"""The flag rate the CUSUM is tuned to detect quickly (in-distribution: the gate's, ~5%)."""
KS_WINDOW = 100
KS_STEP = 10


def cusum_threshold(p0: float, p1: float, *, horizon: int = DEFAULT_HORIZON, false_alarm: float = 0.025,
                    draws: int = 2000, seed: int = 0) -> float:
    """The Bernoulli-CUSUM threshold ``h`` that in-distribution data (flag rate ``p0``) pass within
    ``horizon`` studies with probability at most ``false_alarm`` (Monte Carlo, ``draws`` replays)."""
    up, down = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    rng = np.random.default_rng(seed)
    flags = rng.random((draws, horizon)) < p0
    steps = np.where(flags, up, down)
    s = np.zeros(draws)
    peak = np.zeros(draws)
    for t in range(horizon):
        s = np.maximum(0.0, s + steps[:, t])
        peak = np.maximum(peak, s)
    return float(np.quantile(peak, 1 - false_alarm)) + 1e-9


def ks_threshold(reference: np.ndarray, *, horizon: int = DEFAULT_HORIZON, false_alarm: float = 0.025,
                 window: int = KS_WINDOW, step: int = KS_STEP, draws: int = 300, seed: int = 0) -> float:
    """The KS-statistic threshold that windows of in-distribution scores (resampled from ``reference``)
    pass over ``horizon`` studies with probability at most ``false_alarm`` (Monte Carlo)."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    rng = np.random.default_rng(seed)
    peaks = np.empty(draws)
    for d in range(draws):
        stream = rng.choice(ref, size=horizon, replace=True)
        peaks[d] = max(ks_statistic(ref, stream[end - window:end]) for end in range(window, horizon + 1, step))
    return float(np.quantile(peaks, 1 - false_alarm)) + 1e-9


def ks_statistic(sorted_ref: np.ndarray, sample: np.ndarray) -> float:
    """Two-sample KS statistic between a sorted reference and a sample."""
    sample = np.sort(sample)
    grid = np.concatenate([sorted_ref, sample])
    a = np.searchsorted(sorted_ref, grid, side="right") / len(sorted_ref)
    b = np.searchsorted(sample, grid, side="right") / len(sample)
    return float(np.max(np.abs(a - b)))


@dataclass
class DriftMonitor:
    """A per-model (or per-device) monitor over recent studies; :meth:`update` one study at a time.

    Attributes:
        p0: in-distribution OOD flag rate watched for (with reference scores: the top of the 95% interval
            of the gate's rate on its validation sample, which the threshold was chosen on).
        h: CUSUM alarm threshold (from :func:`cusum_threshold`).
        reference: reference model scores (validation), for the windowed KS test; may be empty.
        ks_limit: KS alarm threshold (from :func:`ks_threshold`).
    """

    p0: float
    h: float
    p1: float = DEFAULT_SHIFTED_FLAG_RATE
    reference: list[float] = field(default_factory=list)
    ks_limit: float | None = None
    horizon: int = DEFAULT_HORIZON
    false_alarm: float = DEFAULT_FALSE_ALARM
    window: int = KS_WINDOW
    step: int = KS_STEP
    n: int = 0
    cusum: float = 0.0
    recent_flags: list[int] = field(default_factory=list)
    recent_scores: list[float] = field(default_factory=list)
    alarm: bool = False
    alarm_at: int | None = None
    alarm_reason: str | None = None
    ks: float | None = None
    score_shift: bool = False
    score_shift_reason: str | None = None

    @classmethod
    def create(cls, p0: float, reference: Any = None, *, horizon: int = DEFAULT_HORIZON,
               false_alarm: float = DEFAULT_FALSE_ALARM, p1: float = DEFAULT_SHIFTED_FLAG_RATE) -> DriftMonitor:
        """A fresh monitor whose two tests together false-alarm within ``horizon`` studies at most ``false_alarm``."""
        if not 0 < p0 < p1 < 1:
            raise ConfigError(f"need 0 < p0 < p1 < 1, got p0={p0}, p1={p1}", field="p0")
        tests = 2 if reference is not None and len(reference) >= 20 else 1
        if tests == 2:
            # the gate's rate is only known to within its validation sample (the threshold is a quantile of
            # the reference cases): watch for rates above the top of that interval, not above its centre
            p0 = min(wilson_upper(p0, len(reference)), (p0 + p1) / 2)
        h = cusum_threshold(p0, p1, horizon=horizon, false_alarm=false_alarm)
        ref = [] if tests == 1 else [float(v) for v in np.asarray(reference, dtype=np.float64)]
        limit = ks_threshold(np.asarray(ref), horizon=horizon, false_alarm=false_alarm) if ref else None
        return cls(p0=p0, h=h, p1=p1, reference=ref, ks_limit=limit, horizon=horizon, false_alarm=false_alarm)

    def update(self, flagged: bool, score: float | None = None) -> dict[str, Any]:
        """Add one study; returns the monitor's state (``alarm`` becomes and stays True once it fires)."""
        self.n += 1
        step = math.log(self.p1 / self.p0) if flagged else math.log((1 - self.p1) / (1 - self.p0))
        self.cusum = max(0.0, self.cusum + step)
        self.recent_flags = (self.recent_flags + [int(bool(flagged))])[-self.window:]
        if score is not None:
            self.recent_scores = (self.recent_scores + [float(score)])[-self.window:]
        if not self.alarm and self.cusum > self.h:
            self._fire(f"the share of studies outside the training data rose (CUSUM {self.cusum:.1f} > {self.h:.1f}; "
                       f"{sum(self.recent_flags)} of the last {len(self.recent_flags)} flagged)")
        if self.ks_limit is not None and len(self.recent_scores) >= self.window and self.n % self.step == 0:
            self.ks = ks_statistic(np.sort(np.asarray(self.reference)), np.asarray(self.recent_scores))
            if not self.score_shift and self.ks > self.ks_limit:
                self.score_shift = True
                self.score_shift_reason = (f"the model's scores moved away from validation (KS {self.ks:.2f} > "
                                           f"{self.ks_limit:.2f} over the last {self.window} studies): the case mix "
                                           "or calibration changed; check calibration on local labelled cases")
        return self.state()

    def _fire(self, reason: str) -> None:
        self.alarm, self.alarm_at, self.alarm_reason = True, self.n, reason

    def reset(self) -> None:
        """Acknowledge an alarm and start watching afresh."""
        self.n, self.cusum, self.recent_flags, self.recent_scores = 0, 0.0, [], []
        self.alarm, self.alarm_at, self.alarm_reason, self.ks = False, None, None, None
        self.score_shift, self.score_shift_reason = False, None

    def state(self) -> dict[str, Any]:
        """What a page shows: studies seen, flag share of the recent window, test statistics, alarm."""
        recent = self.recent_flags
        return {"studies": self.n, "recent_flag_rate": (sum(recent) / len(recent)) if recent else None,
                "expected_flag_rate": self.p0, "cusum": self.cusum, "cusum_threshold": self.h, "ks": self.ks,
                "ks_threshold": self.ks_limit, "alarm": self.alarm, "alarm_at": self.alarm_at,
                "alarm_reason": self.alarm_reason, "score_shift": self.score_shift,
                "score_shift_reason": self.score_shift_reason,
                "false_alarm_rate": f"at most {self.false_alarm:.0%} per {self.horizon} in-distribution studies"}

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, block: dict[str, Any]) -> DriftMonitor:
        return cls(**{k: v for k, v in block.items() if k in cls.__dataclass_fields__})


def wilson_interval(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score 95% interval ``(low, high)`` of a proportion ``p`` observed on ``n > 0`` cases."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def wilson_upper(p: float, n: int, z: float = 1.959964) -> float:
    """Upper end of the Wilson 95% interval of a proportion ``p`` observed on ``n`` cases."""
    return wilson_interval(p, n, z)[1]


def binomial_p_greater(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): is the flag share higher than in-distribution?"""
    from scipy.stats import binom

    return float(binom.sf(k - 1, n, p)) if n else 1.0


def ks_two_sample(a: Any, b: Any) -> dict[str, float]:
    """Kolmogorov-Smirnov two-sample test (scipy): statistic and p-value."""
    from scipy.stats import ks_2samp

    result = ks_2samp(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue)}


def recommend(flag_share: float, flag_rate: float, n: int, *, ece: float | None = None,
              ece_floor: float | None = None, calibration_in_the_large: float | None = None) -> dict[str, Any]:
    """A plain recommendation: use as is / recalibrate on local labelled cases / do not use here.

    * **do not use here** when the OOD gate flags far more than its in-distribution rate
      (more than three times it and above 20%): the inputs are not what the model knows;
    * **recalibrate** when the inputs look familiar but calibration is off beyond its noise
      floor (ECE above the floor, or |calibration-in-the-large| above 0.05); how many local
      labelled cases to collect: enough that the ECE floor drops to about 0.03
      (about 200 for a binary model) and at least 100 of them;
    * **use as is** otherwise.
    """
    if flag_share > max(3 * flag_rate, 0.2):
        return {"action": "do not use here",
                "why": f"{flag_share:.0%} of inputs are outside the model's training data "
                       f"(in-distribution: about {flag_rate:.0%})"}
    off = (ece is not None and ece_floor is not None and ece > ece_floor) or \
          (calibration_in_the_large is not None and abs(calibration_in_the_large) > 0.05)
    if off:
        detail = []
        if ece is not None:
            detail.append(f"ECE {ece:.3f} vs a floor of {ece_floor:.3f} at n={n}")
        if calibration_in_the_large is not None:
            detail.append(f"calibration-in-the-large {calibration_in_the_large:+.3f}")
        return {"action": "recalibrate on local labelled cases", "local_cases": 200,
                "why": "the inputs look like the training data but the probabilities are off here: "
                       + "; ".join(detail) + ". Refit the calibrator on about 200 local labelled cases (at least 100) "
                       "with meddx.inference.refit.refit_package, or `meddx report MODEL DATA --local-fraction`."}
    return {"action": "use as is",
            "why": f"{flag_share:.0%} of inputs flagged (in-distribution: about {flag_rate:.0%})"
                   + ("" if ece is None else f"; ECE {ece:.3f} within its noise floor {ece_floor:.3f}")}
