"""Bubble detector: when has an engine gone idle enough during a step to run ahead?

One detector per engine. The caller samples the engine's number of running *rollout*
sequences (run-ahead requests excluded) a few times per second and feeds them in:

    det = BubbleDetector(threshold=0.25, min_seconds=1.0, min_samples=2)
    det.begin_step(dispatched=64, now=t0)       # 64 rollout samples sent to this engine
    ...
    if det.observe(running, now, lookahead=len(upcoming)):
        start run-ahead (the budget policy says how much)
    ...
    det.end_step(now)                            # closes the open interval
    det.bubble_seconds                           # time this step spent below threshold

Threshold: running < max(1, ceil(threshold * dispatched)), i.e. a fraction of the samples
dispatched to this engine this step (an engine that got no samples is idle, and in a bubble,
from the start). Samples are taken as piecewise constant: the interval from one sample to
the next counts as bubble time when the first of the two was below threshold.

The detector is armed by the first sample with running > 0 (requests reach the engine a
little after the dispatch call returns, so a zero before that is not idleness); an engine
with nothing dispatched is armed at once. `observe` returns True while the engine has been
below threshold for at least `min_seconds` and `min_samples` consecutive samples and the
look-ahead window has prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class BubbleDetector:
    threshold: float = 0.25  # fraction of the step's dispatched samples, in (0, 1]
    min_seconds: float = 1.0  # below threshold at least this long ...
    min_samples: int = 2  # ... and for at least this many consecutive samples

    dispatched: int = field(default=0, init=False)
    bubble_seconds: float = field(default=0.0, init=False)
    _armed: bool = field(default=False, init=False)
    _last: tuple[float, bool] | None = field(default=None, init=False)  # (time, below)
    _below_since: float | None = field(default=None, init=False)
    _below_samples: int = field(default=0, init=False)
    _open: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold!r}")
        if self.min_seconds < 0:
            raise ValueError(f"min_seconds must be >= 0, got {self.min_seconds!r}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples!r}")

    @property
    def limit(self) -> int:
        """Running counts strictly below this are a bubble."""
        return max(1, math.ceil(self.threshold * self.dispatched))

    @property
    def in_bubble(self) -> bool:
        return self._open and self._below_since is not None

    def begin_step(self, dispatched: int, now: float) -> None:
        """Reset for a new step; `dispatched` rollout samples were sent to this engine."""
        if dispatched < 0:
            raise ValueError(f"dispatched must be >= 0, got {dispatched}")
        self.dispatched = int(dispatched)
        self.bubble_seconds = 0.0
        self._armed = dispatched == 0
        self._last = None
        self._below_since = None
        self._below_samples = 0
        self._open = True
        if self._armed:
            self.observe(0, now, lookahead=0)

    def add_dispatched(self, n: int) -> None:
        """More samples sent during the step (e.g. replacements for filtered prompts)."""
        self.dispatched += int(n)

    def observe(self, running: int, now: float, lookahead: int = 1) -> bool:
        """Feed one sample; True when run-ahead should start (or continue) now."""
        if not self._open:
            return False
        if self._last is not None:
            t, below = self._last
            if now < t:
                raise ValueError(f"samples must come in time order ({now} < {t})")
            if below:
                self.bubble_seconds += now - t
        if running > 0:
            self._armed = True
        below = self._armed and running < self.limit
        self._last = (now, below)
        if not below:
            self._below_since = None
            self._below_samples = 0
            return False
        if self._below_since is None:
            self._below_since = now
        self._below_samples += 1
        confirmed = (now - self._below_since >= self.min_seconds
                     and self._below_samples >= self.min_samples)
        return confirmed and lookahead > 0

    def end_step(self, now: float) -> float:
        """Close the step (its last rollout finished); returns the step's bubble seconds."""
        if self._open and self._last is not None:
            t, below = self._last
            if below and now > t:
                self.bubble_seconds += now - t
        self._open = False
        self._last = None
        self._below_since = None
        return self.bubble_seconds
