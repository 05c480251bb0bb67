"""How many draft tokens each running sequence gets this step.

The goodput rule picks, for the whole batch at once, the draft lengths that maximise
expected tokens produced per second of engine time:

    maximise  (B + sum_r sum_{i<=k_r} p_{r,i}) / cost(B + sum_r k_r)

where B is the number of running sequences (each verification step yields at least one
token), p_{r,i} the draft's path probability at depth i (the tree's estimate that the
first i draft tokens are all accepted, so sum_{i<=k} p_{r,i} is the expected number
accepted), and cost the engine's step time against tokens in the batch (cost_model.py).
Path probabilities never increase with depth, so adding draft tokens in order of decreasing
p over the whole batch is optimal: the best allocation is a prefix of that order, found
with one sort and a cumulative sum. When many sequences run, each extra token costs its
full share and only near-certain drafts survive; in the long tail extra tokens are nearly
free and drafts run to the cap.

The length-aware rule (DAS) is the baseline: budgets grow with how long a sequence has
been generating, since long sequences set the step's makespan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BUDGET_RULES = ("goodput", "length_aware", "fixed")


@dataclass(frozen=True)
class BudgetConfig:
    rule: str = "goodput"  # one of BUDGET_RULES
    max_draft_tokens: int = 16  # cap per sequence and step (vLLM's num_speculative_tokens)
    length_aware_full_at: int = 1024  # length_aware: response length that gets the full cap
    length_aware_min: int = 2  # length_aware: budget of a sequence that just started

    def __post_init__(self):
        if self.rule not in BUDGET_RULES:
            raise ValueError(f"budget rule must be one of {BUDGET_RULES}, got {self.rule!r}")
        if self.max_draft_tokens < 0:
            raise ValueError(f"max_draft_tokens must be >= 0, got {self.max_draft_tokens}")
        if self.length_aware_full_at < 1:
            raise ValueError("length_aware_full_at must be >= 1")
        if not 0 <= self.length_aware_min <= self.max_draft_tokens:
            raise ValueError("length_aware_min must be in [0, max_draft_tokens]")


def _segment_ids(offsets: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def goodput_budgets(
    path_probs: np.ndarray, offsets: np.ndarray, cost: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Draft length per sequence maximising expected tokens per second.

    path_probs: flat float array, the drafts of all sequences one after another (CSR with
    `offsets`, length n+1), each non-increasing along its draft.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    probs = np.asarray(path_probs, dtype=np.float64)
    n = len(offsets) - 1
    if n <= 0 or probs.size == 0:
        return np.zeros(max(n, 0), dtype=np.int32)
    order = np.argsort(-probs, kind="stable")  # ties keep draft order: budgets stay prefixes
    gained = np.concatenate([[0.0], np.cumsum(probs[order])])
    extra = np.arange(probs.size + 1)
    throughput = (n + gained) / cost(n + extra)
    best = int(np.argmax(throughput))  # first maximum: no token that does not pay
    owner = _segment_ids(offsets)
    return np.bincount(owner[order[:best]], minlength=n).astype(np.int32)


def length_aware_budgets(response_lengths: np.ndarray, config: BudgetConfig) -> np.ndarray:
    """DAS-style: the cap scaled by response length, from length_aware_min up to the cap."""
    lengths = np.asarray(response_lengths, dtype=np.float64)
    frac = np.clip(lengths / config.length_aware_full_at, 0.0, 1.0)
    span = config.max_draft_tokens - config.length_aware_min
    return np.round(config.length_aware_min + span * frac).astype(np.int32)


def choose_budgets(
    config: BudgetConfig,
    path_probs: np.ndarray,
    offsets: np.ndarray,
    response_lengths: np.ndarray,
    cost: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Draft length per sequence under `config`, never longer than the draft itself."""
    offsets = np.asarray(offsets, dtype=np.int64)
    available = np.minimum(np.diff(offsets), config.max_draft_tokens).astype(np.int32)
    if config.rule == "fixed":
        return available
    if config.rule == "length_aware":
        return np.minimum(available, length_aware_budgets(response_lengths, config))
    # goodput: only the first `available` tokens of each draft are candidates
    probs = np.asarray(path_probs, dtype=np.float64)
    pos = np.arange(probs.size) - np.repeat(offsets[:-1], np.diff(offsets))
    keep = pos < np.repeat(available, np.diff(offsets))
    kept_offsets = np.concatenate([[0], np.cumsum(available)])
    return goodput_budgets(probs[keep], kept_offsets, cost)
