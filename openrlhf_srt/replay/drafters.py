"""The drafter interface of the replay simulator, the draft it returns, and vLLM's n-gram drafter.

A drafter sees what a speculative engine's proposer sees: a sequence starts (its prompt is
known), it drafts for the sequence's current context, the sequence's new tokens arrive after
each verification, the sequence finishes, and training steps begin and end. The cache
designs of docs/replay.md are drafters over the project's cache (``cache_drafter.py``) or
over ArcticInference's suffix trees (``arctic.py``); ``NgramDrafter`` needs no cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class DraftTree:
    """A draft as the replay verifies it: token ids, the parent index of each (-1: child of
    the context; a single path is the chain parents[i] = i - 1) and path probabilities."""

    token_ids: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    score: float = 0.0
    match_len: int = 0


@dataclass
class SeqState:
    """A running sequence of the replay: its identity, prompt and response so far."""

    seq_id: int
    step: int
    prompt_key: int
    prompt: list[int]
    target: list[int]  # the recorded response the replay must reproduce
    response: list[int] = field(default_factory=list)

    @property
    def context(self) -> list[int]:
        return self.prompt + self.response


@dataclass(frozen=True)
class RunAheadRollout:
    """A partial response of one of the step's prompts generated ahead of the step (SRT's
    run-ahead): it only feeds the caches and is dropped when the step ends."""

    prompt_key: int
    prompt: list[int]
    response: list[int]


class Drafter:
    """Interface of a model-free drafter; the default methods do nothing."""

    name = "drafter"

    def settings(self) -> dict[str, object]:
        return {}

    def begin_step(self, step: int, runahead: Sequence[RunAheadRollout] = ()) -> None:
        """A training step starts, with the run-ahead rollouts of its prompts (drafters
        without a per-prompt cache ignore them)."""

    def start(self, seq: SeqState) -> None:
        """A sequence starts decoding."""

    def draft(self, seq: SeqState, budget: int) -> DraftTree:
        raise NotImplementedError

    def extend(self, seq: SeqState, tokens: Sequence[int]) -> None:
        """New tokens of ``seq`` (already appended to ``seq.response``)."""

    def finish(self, seq: SeqState) -> None:
        """``seq`` finished; its full response is in ``seq.response``."""

    def end_step(self, step: int) -> None:
        """Every sequence of ``step`` has finished."""


@dataclass
class NgramDrafter(Drafter):
    """vLLM's ``ngram`` method: the longest n-gram (``min_n``..``max_n``) ending the context
    that occurred earlier in the prompt or response is matched, and the tokens that followed
    its most recent earlier occurrence are proposed."""

    name: str = "ngram"
    min_n: int = 1
    max_n: int = 4

    def settings(self) -> dict[str, object]:
        return {"source": "own prompt + response", "min_n": self.min_n, "max_n": self.max_n}

    def draft(self, seq: SeqState, budget: int) -> DraftTree:
        ctx = seq.context
        total = len(ctx)
        for n in range(min(self.max_n, total - 1), self.min_n - 1, -1):
            tail = ctx[total - n :]
            for start in range(total - n - 1, -1, -1):
                if ctx[start : start + n] == tail:
                    tokens = ctx[start + n : start + n + budget]
                    k = len(tokens)
                    return DraftTree(tokens, list(range(-1, k - 1)), [1.0] * k, float(k), n)
        return DraftTree()
