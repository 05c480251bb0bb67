"""Calibrating the tree's draft probabilities against what verification accepts.

The tree estimates the chance that a draft token is accepted, given the tokens before it
were, by an empirical frequency: a continuation seen once after its context scores 1.0,
yet the policy samples something else far more often than never. The goodput budget needs
honest probabilities (it spends engine time on them), so the proposer feeds every verified
draft token's outcome back here, and drafts are re-scored before the budget is chosen.

Each draft token's conditional probability c_i = p_i / p_{i-1} (p: path probabilities,
p_0 = 1) falls in one of `bins` equal-width bins, plus one bin for exactly 1.0 (contexts
seen once or always continued the same way). Per bin we count verified tokens and accepted
ones; a token's calibrated conditional is

    (accepted_b + w * c_i) / (verified_b + w)

(the raw estimate acts as w pseudo-observations, so an empty bin leaves it unchanged), and
calibrated path probabilities are the running products along each draft. Counts are
scaled down once a bin holds more than `memory` observations, so the calibration follows
the policy as training changes it. numpy only; no per-token Python loops.
"""

from __future__ import annotations

import numpy as np


class AcceptanceCalibrator:
    def __init__(self, bins: int = 10, prior_weight: float = 20.0, memory: float = 5000.0):
        if bins < 1 or prior_weight <= 0 or memory <= prior_weight:
            raise ValueError("need bins >= 1, prior_weight > 0, memory > prior_weight")
        self.bins = bins
        self.prior_weight = float(prior_weight)
        self.memory = float(memory)
        self.verified = np.zeros(bins + 1)
        self.accepted = np.zeros(bins + 1)

    def _bin(self, cond: np.ndarray) -> np.ndarray:
        b = np.minimum((cond * self.bins).astype(np.int64), self.bins - 1)
        return np.where(cond >= 1.0, self.bins, b)

    def observe(self, cond: np.ndarray, accepted: np.ndarray) -> None:
        """cond: raw conditional probabilities of verified draft tokens; accepted: 0/1."""
        cond = np.asarray(cond, dtype=np.float64)
        if cond.size == 0:
            return
        b = self._bin(cond)
        self.verified += np.bincount(b, minlength=self.bins + 1)
        self.accepted += np.bincount(b, weights=np.asarray(accepted, dtype=np.float64),
                                     minlength=self.bins + 1)
        over = self.verified > self.memory
        if over.any():
            scale = np.where(over, self.memory / np.maximum(self.verified, 1.0), 1.0)
            self.verified *= scale
            self.accepted *= scale

    def calibrate_conditionals(self, cond: np.ndarray) -> np.ndarray:
        cond = np.asarray(cond, dtype=np.float64)
        b = self._bin(cond)
        w = self.prior_weight
        return (self.accepted[b] + w * cond) / (self.verified[b] + w)

    def calibrate(self, path_probs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Calibrated path probabilities of drafts in CSR form (flat, with offsets)."""
        cond = conditionals(path_probs, offsets)
        return running_products(self.calibrate_conditionals(cond), offsets)

    def table(self) -> list[dict]:
        """Per bin: raw range, tokens verified, observed acceptance (for stats and docs)."""
        rows = []
        for b in range(self.bins + 1):
            lo, hi = (1.0, 1.0) if b == self.bins else (b / self.bins, (b + 1) / self.bins)
            n = float(self.verified[b])
            rows.append({"raw_lo": lo, "raw_hi": hi, "verified": round(n, 1),
                         "accepted_rate": float(self.accepted[b] / n) if n else None})
        return rows


def _segment_starts(offsets: np.ndarray, n_tokens: int) -> np.ndarray:
    """For each flat position, whether it begins its draft."""
    offsets = np.asarray(offsets, dtype=np.int64)
    first = np.zeros(n_tokens, dtype=bool)
    first[offsets[:-1][np.diff(offsets) > 0]] = True
    return first


def conditionals(path_probs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """c_i = p_i / p_{i-1} along each draft (p_0 = 1)."""
    p = np.asarray(path_probs, dtype=np.float64)
    if p.size == 0:
        return p
    prev = np.concatenate([[1.0], p[:-1]])
    prev[_segment_starts(offsets, p.size)] = 1.0
    return np.clip(p / np.maximum(prev, 1e-300), 0.0, 1.0)


def running_products(cond: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Path probabilities from conditionals: the product along each draft so far."""
    c = np.asarray(cond, dtype=np.float64)
    if c.size == 0:
        return c
    logs = np.log(np.maximum(c, 1e-300))
    total = np.cumsum(logs)
    offsets = np.asarray(offsets, dtype=np.int64)
    lens = np.diff(offsets)
    before = np.concatenate([[0.0], total])[offsets[:-1]]  # cumulative log before each draft
    return np.exp(total - np.repeat(before, lens))
