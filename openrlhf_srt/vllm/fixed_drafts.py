"""A draft source that drafts exactly k tokens for every running sequence: for measuring the
speculative engine's step cost (tools/bench_step_cost.py), never for generating.

    srt = {"source": "openrlhf_srt.vllm.fixed_drafts:FixedDrafts", "budget": "fixed",
           "max_draft_tokens": K}
    llm = start_srt_engine(None, srt=srt)
    llm.collective_rpc(set_draft_tokens, args=(k,))   # k in 0..K, between steps

Every draft is `k` copies of one token with path probability 1, so the "fixed" budget rule
passes it whole and every running sequence verifies k draft tokens per step (fewer only where
the sequence has less room left than k, as with any source). k = 0 is the speculative path
with every draft empty: the floor vLLM's speculative engine costs before any draft is
verified (issue 15). What the drafts contain does not change what a step costs, only how many
tokens it may accept; the bench records the acceptance it saw.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

DRAFT_TOKEN = 13  # any id in the vocabulary; its value only decides acceptance


class FixedDrafts:
    """`proposer.DraftSource` whose every draft is `draft_tokens` tokens long (capped by the
    per-row budget the proposer passes: the sequence's room and the engine's K)."""

    def __init__(self, cfg=None, max_draft_tokens: int = 0):
        self.max_draft_tokens = int(max_draft_tokens)
        self.draft_tokens = 0
        self.running: set[int] = set()
        self.steps = 0

    def set_draft_tokens(self, k: int) -> None:
        if not 0 <= int(k) <= self.max_draft_tokens:
            raise ValueError(f"draft tokens must be in [0, {self.max_draft_tokens}], got {k}")
        self.draft_tokens = int(k)

    def add_sequence(self, seq_id, prompt_key, prompt_token_ids, *, step, tag="rollout"):
        self.running.add(int(seq_id))

    def finish_sequence(self, seq_id) -> None:
        self.running.discard(int(seq_id))

    def step(self, seq_ids, new_tokens, new_token_counts, budgets, min_prob=None):
        lengths = np.minimum(np.asarray(budgets, dtype=np.int64), self.draft_tokens)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.steps += 1
        return SimpleNamespace(offsets=offsets,
                               tokens=np.full(int(offsets[-1]), DRAFT_TOKEN, np.int32),
                               probs=np.ones(int(offsets[-1]), np.float64))

    def stats(self) -> dict:
        return {"running": len(self.running), "draft_tokens": self.draft_tokens,
                "steps": self.steps}

    def clear(self) -> None:
        self.running.clear()

    def resize(self, byte_budget: int) -> None:
        """Holds nothing to resize."""

    def save(self, path) -> None:
        raise NotImplementedError("FixedDrafts holds no cache to snapshot")

    def drop_steps_before(self, step: int) -> int:
        return 0


def set_draft_tokens(worker, k: int) -> bool:
    """collective_rpc target: set the draft length of this worker's FixedDrafts source
    (False on a rank that holds no source)."""
    source = getattr(getattr(worker.model_runner, "drafter", None), "source", None)
    if source is None:
        return False
    if not isinstance(source, FixedDrafts):
        raise TypeError(f"the engine's draft source is {type(source).__name__}, not "
                           "FixedDrafts (start it with source='openrlhf_srt.vllm.fixed_drafts:"
                           "FixedDrafts')")
    source.set_draft_tokens(k)
    return True
