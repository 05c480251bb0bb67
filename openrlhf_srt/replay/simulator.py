"""Replay simulator: what the round loops (``rounds.py``) share: strategies, draft budgets,
simulated run-ahead, statistics and per-draft verification.

Trace files are streamed training step by training step (``stream.iter_steps``); every
strategy replays each step before the next one is read, so memory holds the strategies'
caches plus one step of records (two with run-ahead, which reads the next step). All
sequences of a step form one engine batch and advance together, one verification round at a
time: in each round every running sequence drafts, its draft is verified against the recorded
response (accepted while it equals the recorded tokens, then one more recorded token, the
target model's own), and its new tokens are handed to the drafter.

Two loops run a round (``Strategy.loop``):

- ``batched``: one native ``TreeCache.step`` call per round appends every
  running sequence's tokens of the previous round and drafts a path for each, as the
  engine's proposer does; verification and token gathering are numpy over flat arrays. This
  is ``sync`` order: every draft of a round sees every sequence's tokens up to the previous
  round.
- ``per-sequence``: a Python loop over the running sequences with one drafter call
  each; needed for ``engine`` order (a sequence's new tokens reach the caches right after its
  own verification, so later sequences of the same round see them), token-tree drafts,
  history-only insertion, the pure-Python reference cache, ArcticInference and n-gram.

See docs/replay.md for why greedy-match replay has the acceptance distribution of real
rejection sampling, and for the difference between the two orders.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from openrlhf_srt.drafting.budget import BudgetConfig, length_aware_budgets
from openrlhf_srt.replay.drafters import Drafter, DraftTree, RunAheadRollout
from openrlhf_srt.replay.stream import StepRecords

ORDERS = ("sync", "engine")
LOOPS = ("batched", "per-sequence")


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

    def partials(self, prompts: Sequence[int], later: StepRecords) -> list[RunAheadRollout]:
        """Run-ahead rollouts for a step whose prompts are ``prompts`` (batch order), cut from
        the records of the step after it."""
        rows: dict[int, list[int]] = defaultdict(list)
        for i, key in enumerate(later.prompt_keys.tolist()):
            rows[key].append(i)  # samples by index within a prompt (StepRecords order)
        f = self.prompt_fraction
        out = []
        for i, key in enumerate(prompts):
            if int((i + 1) * f) > int(i * f) and key in rows:
                for r in rows[key][: self.samples]:
                    resp = later.response(r)
                    cut = resp[: int(len(resp) * self.token_fraction)]
                    if cut.size:
                        out.append(RunAheadRollout(key, later.prompt(r).tolist(), cut.tolist()))
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
        return int(self.many(np.asarray([response_len]))[0])

    def many(self, response_lens: np.ndarray) -> np.ndarray:
        """The budget of every sequence of a round (int32), one numpy call."""
        if self.config.rule == "fixed":
            return np.full(len(response_lens), self.config.max_draft_tokens, dtype=np.int32)
        return length_aware_budgets(response_lens, self.config).astype(np.int32)

    def describe(self) -> str:
        c = self.config
        if c.rule == "fixed":
            return f"fixed {c.max_draft_tokens}"
        return (f"length-aware {c.length_aware_min}->{c.max_draft_tokens} tokens, full at "
                f"response length {c.length_aware_full_at}")


@dataclass
class Strategy:
    """A named drafter factory with its draft budget, optional run-ahead, and the loop that
    replays it: ``batched`` (one native call per round; only for the native cache drafting
    paths with online insertion, in sync order) or ``per-sequence``; ``why`` says why a
    strategy is on the per-sequence loop."""

    name: str
    make: Callable[[], Drafter]
    budget: Budget = field(default_factory=Budget)
    runahead: RunAhead | None = None
    loop: str = "per-sequence"
    why: str = ""

    def __post_init__(self) -> None:
        if self.loop not in LOOPS:
            raise ValueError(f"loop must be one of {LOOPS}, got {self.loop!r}")

    def settings(self) -> dict[str, object]:
        out = dict(self.make().settings())
        out["loop"] = self.loop + (f" ({self.why})" if self.why else "")
        out["budget"] = self.budget.describe()
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

    def add_sums(self, steps: int, tokens: int, accepted: int, drafted: int, hits: int) -> None:
        self.steps += int(steps)
        self.tokens += int(tokens)
        self.accepted += int(accepted)
        self.drafted += int(drafted)
        self.hits += int(hits)

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
    seconds: float = 0.0  # wall time spent replaying (reading the trace excluded)

    @property
    def tokens_per_second(self) -> float:
        return self.total.tokens / self.seconds if self.seconds > 0 else 0.0




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
