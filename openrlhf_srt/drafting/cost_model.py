"""Engine step cost against the number of tokens in the batch, fitted on the running engine.

A decoding step costs a fixed part (weights streamed once, scheduling, sampling) plus a
part that grows with the tokens the step verifies once the batch is large enough to be
compute bound. Where that knee lies and how steep the slope is depend on the machine, the
model and its dtype (docs/drafting.md has measured ones), so nothing here is fixed: the
model is a hinge, t(T) = fixed + per_token * max(T - knee, 0), fitted by least squares over
a grid of knees from (tokens, seconds) observations, so it follows whatever engine it runs
on. No vLLM or torch imports: the proposer feeds it measured step times.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StepCost:
    fixed: float  # seconds per step at or below the knee
    per_token: float  # seconds per token beyond the knee
    knee: float  # tokens per step up to which extra tokens are free

    def __call__(self, tokens) -> np.ndarray | float:
        t = np.maximum(np.asarray(tokens, dtype=np.float64) - self.knee, 0.0)
        return self.fixed + self.per_token * t

    def __post_init__(self):
        if not (self.fixed > 0 and self.per_token >= 0 and self.knee >= 0):
            raise ValueError(f"invalid step cost {self}: need fixed > 0, per_token >= 0, knee >= 0")


# The cost until the engine has observed enough steps: the CPU engine this project is tested
# on (docs/drafting.md, "Cost model"); elsewhere the online fit replaces it within the first
# steps.
CPU_PRIOR = StepCost(fixed=0.037, per_token=0.0036, knee=0)


class StepCostModel:
    """Online fit of StepCost from the last `window` observed steps."""

    def __init__(self, prior: StepCost = CPU_PRIOR, window: int = 512, min_points: int = 16):
        if window < min_points or min_points < 3:
            raise ValueError("need window >= min_points >= 3")
        self.prior = prior
        self.current = prior
        self.min_points = min_points
        self._obs: deque[tuple[float, float]] = deque(maxlen=window)
        self._since_fit = 0

    def observe(self, tokens: int, seconds: float) -> None:
        if tokens <= 0 or not np.isfinite(seconds) or seconds <= 0:
            return  # an empty or failed step says nothing about cost
        self._obs.append((float(tokens), float(seconds)))
        self._since_fit += 1
        if len(self._obs) >= self.min_points and self._since_fit >= self.min_points // 2:
            obs = np.array(self._obs)
            self.current = fit_hinge(obs) or fit_level(obs, self.current)
            self._since_fit = 0

    def __call__(self, tokens):
        return self.current(tokens)


def fit_level(obs: np.ndarray, shape: StepCost) -> StepCost:
    """When every step had the same size the slope cannot be fitted: keep the slope and knee
    of `shape` and move its level through the observed mean."""
    tokens, seconds = obs[:, 0], obs[:, 1]
    extra = shape.per_token * np.maximum(tokens - shape.knee, 0.0)
    fixed = float(np.mean(seconds - extra))
    return StepCost(fixed, shape.per_token, shape.knee) if fixed > 0 else shape


def fit_hinge(obs: np.ndarray) -> StepCost | None:
    """Least-squares hinge fit over candidate knees; None when the data cannot fix it."""
    tokens, seconds = obs[:, 0], obs[:, 1]
    if np.ptp(tokens) == 0:
        return None
    best, best_err = None, np.inf
    knees = np.linspace(0.0, np.quantile(tokens, 0.9), 48)
    for knee in np.unique(np.round(knees)):
        x = np.maximum(tokens - knee, 0.0)
        design = np.stack([np.ones_like(x), x], axis=1)
        coef, *_ = np.linalg.lstsq(design, seconds, rcond=None)
        fixed, per_token = float(coef[0]), max(float(coef[1]), 0.0)
        if fixed <= 0:
            continue
        err = float(np.sum((fixed + per_token * x - seconds) ** 2))
        if err < best_err:
            best, best_err = StepCost(fixed, per_token, float(knee)), err
    return best
