"""Alert rules on window predictions: hysteresis, de-duplication and acknowledgement.

An alert is raised when the rule's label has probability ``>= on`` for
``consecutive`` windows in a row (one window is not enough: single windows are
where false alarms live), stays open - one alert, however many windows follow -
and clears only after ``clear_windows`` windows in a row below ``off`` (``off <
on``: hysteresis, so a probability hovering at the threshold does not flap).
Windows that failed the quality check neither extend nor break a run.
A nurse acknowledges an alert (MQTT ``meddx/alerts/{device}/ack`` or
``meddx stream ack``); an acknowledged alert that clears is closed, and a new
episode raises a new alert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AlertRule:
    """Raise ``name`` when ``label`` is probable for ``consecutive`` windows; clear after ``clear_windows`` below ``off``."""

    name: str = "atrial-fibrillation"
    label: str = "A"
    on: float = 0.5
    off: float = 0.35
    consecutive: int = 2
    clear_windows: int = 3
    severity: str = "high"
    quality: bool = False
    """Technical rule: fires on windows that failed the quality check (e.g. leads off) instead of on a label."""


DEFAULT_RULES = (
    AlertRule(),
    AlertRule(name="poor-signal", label="poor-signal", consecutive=5, clear_windows=2, severity="low", quality=True),
)


def af_rules(on: float = 0.5, consecutive: int = 2) -> tuple[AlertRule, ...]:
    """:data:`DEFAULT_RULES` with the AF rule raised at probability ``on`` for ``consecutive`` windows.

    The clearing threshold stays 0.15 below ``on`` (at most 0.35) so the alert does not flap.
    """
    from meddx.exceptions import ConfigError

    if not 0 < on < 1:
        raise ConfigError(f"the AF threshold must lie in (0, 1), got {on}", field="af_threshold")
    if consecutive < 1:
        raise ConfigError(f"the AF rule needs at least one window, got {consecutive}", field="af_windows")
    af = AlertRule(on=on, off=min(0.35, on - 0.15) if on > 0.2 else on / 2, consecutive=consecutive)
    return (af, *DEFAULT_RULES[1:])


@dataclass
class _RuleState:
    run: int = 0
    quiet: int = 0
    run_start: float | None = None
    open: bool = False


@dataclass
class AlertEvent:
    """``raised`` or ``cleared``, for one device and rule."""

    kind: str
    device_id: str
    signal: str
    rule: str
    severity: str
    onset_time: float
    """Start of the first window of the run that raised it (signal time, UNIX s)."""
    window_end: float
    probability: float | None
    extra: dict[str, Any] = field(default_factory=dict)


class AlertTracker:
    """Per-device state machines for a set of rules."""

    def __init__(self, rules: tuple[AlertRule, ...] | list[AlertRule] = DEFAULT_RULES) -> None:
        self.rules = tuple(rules)
        self._state: dict[tuple[str, str, str], _RuleState] = {}

    def restore_open(self, device_id: str, signal: str, rule: str) -> None:
        """Mark an alert open after a restart (it was raised and not cleared before)."""
        self._state.setdefault((device_id, signal, rule), _RuleState()).open = True

    def update(self, device_id: str, signal: str, window_start: float, window_end: float,
               probabilities: dict[str, float] | None, quality: str) -> list[AlertEvent]:
        """Feed one window's outcome; return the alerts it raises or clears."""
        events = []
        for rule in self.rules:
            state = self._state.setdefault((device_id, signal, rule.name), _RuleState())
            if rule.quality:
                positive, negative, p = quality != "ok", quality == "ok", None
            else:
                if quality != "ok" or probabilities is None:
                    continue
                p = float(probabilities.get(rule.label, 0.0))
                positive, negative = p >= rule.on, p < rule.off
            if positive:
                state.quiet = 0
                if state.run == 0:
                    state.run_start = window_start
                state.run += 1
                if not state.open and state.run >= rule.consecutive:
                    state.open = True
                    events.append(AlertEvent("raised", device_id, signal, rule.name, rule.severity,
                                             float(state.run_start or window_start), window_end, p))
            else:
                state.run = 0
                if negative and state.open:
                    state.quiet += 1
                    if state.quiet >= rule.clear_windows:
                        state.open = False
                        state.quiet = 0
                        events.append(AlertEvent("cleared", device_id, signal, rule.name, rule.severity,
                                                 window_start, window_end, p))
        return events
