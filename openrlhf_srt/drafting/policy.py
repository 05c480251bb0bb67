"""The draft-length policy as the engine's proposer runs it, one batch at a time: raw draft
probabilities re-scored by the acceptance calibrator, cut by the budget rule, and the
verified outcomes fed back. Shared by the proposer (openrlhf_srt/vllm/proposer.py) and the
rollout-time simulator (openrlhf_srt/replay/rollout_time.py), so both run the same policy.
numpy only; no per-token Python loops.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from openrlhf_srt.drafting.budget import BudgetConfig, choose_budgets
from openrlhf_srt.drafting.calibration import AcceptanceCalibrator, conditionals, running_products


def draft_lengths(config: BudgetConfig, calibrator: AcceptanceCalibrator,
                  path_probs: np.ndarray, offsets: np.ndarray, response_lengths: np.ndarray,
                  cost: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(draft length per sequence, raw conditional probability of every draft token) for
    drafts in CSR form (flat path probabilities, offsets n + 1): the cache's probabilities are
    calibrated against past outcomes before the budget rule spends engine time on them."""
    offsets = np.asarray(offsets, dtype=np.int64)
    raw_cond = conditionals(path_probs, offsets)
    calibrated = running_products(calibrator.calibrate_conditionals(raw_cond), offsets)
    lens = choose_budgets(config, calibrated, offsets, response_lengths, cost)
    return lens, raw_cond


def observe_outcomes(calibrator: AcceptanceCalibrator, raw_cond: np.ndarray,
                     draft_lens: np.ndarray, accepted: np.ndarray) -> None:
    """Feed the calibrator the outcomes of verified drafts: ``raw_cond`` holds the raw
    conditionals of each verified draft's ``draft_lens[i]`` tokens one draft after another;
    its first ``accepted[i]`` were accepted, the next (if any) rejected, the rest never
    verified (not observed)."""
    d = np.asarray(draft_lens, dtype=np.int64)
    acc = np.asarray(accepted, dtype=np.int64)
    pos = np.arange(int(d.sum())) - np.repeat(np.cumsum(d) - d, d)
    limit = np.repeat(acc, d)
    seen = pos <= limit  # accepted ones and the first rejected one
    calibrator.observe(np.asarray(raw_cond)[seen], (pos < limit)[seen])
