"""Replay simulator: speculative decoding of recorded rollouts with model-free drafters.

Trace records (``openrlhf_srt.data.traces``) are replayed training step by training step. All
sequences of a step form one engine batch and advance together, one verification round at a
time: in each round every running sequence drafts, its draft is verified against the recorded
response (accepted while it equals the recorded tokens, then one more recorded token, the
target model's own), and its new tokens are handed to the drafter. In ``engine`` order a
sequence's new tokens reach the caches right after its own verification, so sequences later
in the batch already see them when they draft in the same round (this is the order of vLLM's
proposer loop, which adds each request's sampled tokens and then drafts for it); ``sync``
order hands all tokens over only after every sequence of the round has drafted. See
docs/replay.md for why greedy-match replay has the acceptance distribution of real
rejection sampling.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from openrlhf_srt.data.traces import TraceRecord
from openrlhf_srt.drafting.budget import BudgetConfig, length_aware_budgets
from openrlhf_srt.replay.drafters import Drafter, DraftTree, RunAheadRollout, SeqState


@dataclass(frozen=True)
class RunAhead:
    """Simulated run-ahead (SRT section 3): before step s, a fraction of step s's prompts were
    partly pre-generated in the previous step's idle tail. Stand-in for those tokens: the
    first ``samples`` recorded responses of the same prompt at the *next* step (s + 1; the
    policy of these traces is fixed, so they are independent samples of the same policy,
    never the responses being replayed), each cut to its first ``token_fraction``. Prompts
    are chosen by their order in step s: every prompt whose index i satisfies
    floor((i + 1) * f) > floor(i * f), i.e. an evenly spread fraction f. The drafter gets
    these partial rollouts when step s begins (``Drafter.begin_step``) and drops them when it
    ends; the last step has no run-ahead source and gets none."""

    prompt_fraction: float = 0.5
    samples: int = 2
    token_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not (0.0 <= self.prompt_fraction <= 1.0 and 0.0 <= self.token_fraction <= 1.0):
            raise ValueError("run-ahead fractions must lie in [0, 1]")
        if self.samples < 0:
            raise ValueError("run-ahead samples must be >= 0")

    def partials(self, prompts: Sequence[int],
                 later: dict[int, list[TraceRecord]]) -> list[RunAheadRollout]:
        f = self.prompt_fraction
        out = []
        for i, key in enumerate(prompts):
            if int((i + 1) * f) > int(i * f) and key in later:
                for r in later[key][: self.samples]:
                    cut = r.response_token_ids[: int(len(r.response_token_ids) * self.token_fraction)]
                    if cut:
                        out.append(RunAheadRollout(key, list(r.prompt_token_ids), list(cut)))
        return out


@dataclass(frozen=True)
class Budget:
    """Per-sequence draft budget from the project's BudgetConfig ('fixed' or 'length_aware';
    the 'goodput' rule needs an engine cost model and is not simulated here)."""

    config: BudgetConfig = field(default_factory=lambda: BudgetConfig(rule="fixed"))

    def __post_init__(self) -> None:
        if self.config.rule not in ("fixed", "length_aware"):
            raise ValueError(f"the replay simulates 'fixed' and 'length_aware' budgets, "
                             f"not {self.config.rule!r}")

    def __call__(self, response_len: int) -> int:
        if self.config.rule == "fixed":
            return self.config.max_draft_tokens
        return int(length_aware_budgets(np.asarray([response_len]), self.config)[0])

    def describe(self) -> str:
        c = self.config
        if c.rule == "fixed":
            return f"fixed {c.max_draft_tokens}"
        return (f"length-aware {c.length_aware_min}->{c.max_draft_tokens} tokens, full at "
                f"response length {c.length_aware_full_at}")


@dataclass
class Strategy:
    """A named drafter factory with its draft budget and optional run-ahead."""

    name: str
    make: Callable[[], Drafter]
    budget: Callable[[int], int] = field(default_factory=Budget)
    runahead: RunAhead | None = None

    def settings(self) -> dict[str, object]:
        out = dict(self.make().settings())
        out["budget"] = getattr(self.budget, "describe", lambda: repr(self.budget))()
        if self.runahead is not None:
            r = self.runahead
            out["runahead"] = (f"{r.prompt_fraction:g} of prompts, {r.samples} next-step "
                               f"samples cut to {r.token_fraction:g}")
        return out


@dataclass
class Stats:
    steps: int = 0  # verification steps (one per running sequence per round)
    tokens: int = 0  # tokens produced: accepted + 1, but only accepted when they end the response
    accepted: int = 0
    drafted: int = 0
    hits: int = 0  # steps with a non-empty draft

    def add(self, drafted: int, accepted: int, produced: int) -> None:
        self.steps += 1
        self.tokens += produced
        self.accepted += accepted
        self.drafted += drafted
        self.hits += drafted > 0

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / self.steps if self.steps else 0.0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.steps if self.steps else 0.0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def draft_per_step(self) -> float:
        return self.drafted / self.steps if self.steps else 0.0


@dataclass
class Result:
    strategy: str
    settings: dict[str, object]
    total: Stats = field(default_factory=Stats)
    by_step: dict[int, Stats] = field(default_factory=lambda: defaultdict(Stats))
    by_position: dict[int, Stats] = field(default_factory=lambda: defaultdict(Stats))
    bucket: int = 32


def group_steps(records: Sequence[TraceRecord]) -> list[tuple[int, list[TraceRecord]]]:
    """Records per training step, in step order; within a step, prompts in order of first
    appearance and samples by index. Raises ValueError on an empty or inconsistent trace."""
    if not records:
        raise ValueError("the trace has no records")
    steps: dict[int, list[TraceRecord]] = defaultdict(list)
    seen = set()
    for r in records:
        ident = (r.step, r.prompt_key, r.sample_index)
        if ident in seen:
            raise ValueError(f"duplicate record: step {r.step}, prompt key {r.prompt_key}, "
                             f"sample {r.sample_index}")
        seen.add(ident)
        steps[r.step].append(r)
    out = []
    for step in sorted(steps):
        order = {k: i for i, k in reversed(list(enumerate(r.prompt_key for r in steps[step])))}
        recs = sorted(steps[step], key=lambda r: (order[r.prompt_key], r.sample_index))
        out.append((step, recs))
    return out


def verify(draft: DraftTree, target: Sequence[int], pos: int) -> int:
    """Draft tokens accepted at response position ``pos``: the deepest draft node whose path
    equals the recorded tokens (a path draft is the special case parents[i] == i - 1)."""
    remaining = len(target) - pos
    current, accepted = -1, 0
    for i, (token, parent) in enumerate(zip(draft.token_ids, draft.parents)):
        if parent == current and accepted < remaining and token == target[pos + accepted]:
            current = i
            accepted += 1
    return accepted


def replay(records: Sequence[TraceRecord], strategies: Sequence[Strategy],
           order: str = "engine", bucket: int = 32, progress: bool = True) -> list[Result]:
    """Replay ``records`` once per strategy; returns one Result per strategy."""
    if order not in ("engine", "sync"):
        raise ValueError(f"order must be 'engine' or 'sync', got {order!r}")
    if bucket < 1:
        raise ValueError("bucket must be >= 1")
    steps = group_steps(records)
    by_prompt_step: dict[int, dict[int, list[TraceRecord]]] = defaultdict(lambda: defaultdict(list))
    for step, recs in steps:
        for r in recs:
            by_prompt_step[step][r.prompt_key].append(r)
    total_tokens = sum(len(r.response_token_ids) for _, recs in steps for r in recs)
    results = []
    for strategy in strategies:
        drafter = strategy.make()
        res = Result(strategy.name, strategy.settings(), bucket=bucket)
        bar = tqdm(total=total_tokens, desc=f"replay {strategy.name}", unit="tok",
                   disable=not progress, file=sys.stderr, leave=False)
        next_id = 0
        for idx, (step, recs) in enumerate(steps):
            partials = []
            if strategy.runahead is not None and idx + 1 < len(steps):
                later = by_prompt_step[steps[idx + 1][0]]
                partials = strategy.runahead.partials(list(by_prompt_step[step]), later)
            drafter.begin_step(step, partials)
            seqs = []
            for r in recs:
                seqs.append(SeqState(next_id, step, r.prompt_key, list(r.prompt_token_ids),
                                     list(r.response_token_ids)))
                next_id += 1
            for seq in seqs:
                drafter.start(seq)
            active = [s for s in seqs if s.target]
            for s in seqs:
                if not s.target:
                    drafter.finish(s)
            while active:
                pending = []
                for seq in active:
                    pos = len(seq.response)
                    draft = drafter.draft(seq, strategy.budget(pos))
                    accepted = verify(draft, seq.target, pos)  # at most the tokens left
                    new = seq.target[pos : pos + accepted + 1]  # no bonus token after the end
                    for stats in (res.total, res.by_step[step], res.by_position[pos // bucket]):
                        stats.add(len(draft.token_ids), accepted, len(new))
                    bar.update(len(new))
                    if order == "engine":
                        _hand_over(drafter, seq, new)
                    else:
                        pending.append((seq, new))
                for seq, new in pending:
                    _hand_over(drafter, seq, new)
                active = [s for s in active if len(s.response) < len(s.target)]
            drafter.end_step(step)
        bar.close()
        results.append(res)
    return results


def _hand_over(drafter: Drafter, seq: SeqState, new: list[int]) -> None:
    seq.response.extend(new)
    drafter.extend(seq, new)
    if len(seq.response) == len(seq.target):
        drafter.finish(seq)
