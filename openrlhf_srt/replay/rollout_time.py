"""Rollout-time simulator: predicted generation seconds of each training step, without
speculation, with SRT as configured, and with an oracle draft budget, from recorded traces
and a measured step-cost curve (drafting.step_curve.StepCurve).

A training step is replayed the way the engine runs it: all its samples start together and
each finishes at its recorded length. Per round (one engine step):

- **baseline**: every running sequence produces one token; the round costs
  ``curve.baseline_seconds(running)``.
- **SRT**: one ``TreeCache.step`` call appends every running sequence's tokens of the
  previous round and drafts a path for each at the full budget (``max_draft_tokens``), as the
  proposer calls it; the proposer's own policy (``drafting.policy.draft_lengths``: the
  AcceptanceCalibrator re-scores the cache's probabilities, ``choose_budgets`` cuts each
  draft, by default the goodput rule) picks the draft lengths k_r, with the cost the policy
  sees being the curve's hinge (``StepCurve.to_step_cost()``, what the engine starts from) or
  the curve itself at this round's batch; the drafts are verified against the recorded
  tokens (accepted a_r = first mismatch within k_r), the outcomes are fed back to the
  calibrator (``drafting.policy.observe_outcomes``), and each sequence advances by
  min(a_r + 1, tokens left). The round costs ``curve.step_seconds(running, running + sum k_r)``
  (plus, with ``drafter_time``, the measured wall time of the native call and the policy:
  on a CPU engine the drafter shares the cores).
- **oracle**: the same engine with its own cache, but the draft lengths chosen knowing the
  recorded future. Each round, every running sequence's full-budget draft would have
  A_r accepted tokens; the oracle picks k_r in [0, A_r] (drafting beyond A_r only costs)
  to maximise the round's goodput, tokens produced per second,
  (running + sum k_r) / step_seconds(running, running + sum k_r): every total X in
  [0, sum A_r] is tried and the best (the smallest on ties) kept; X is handed out to the
  sequences with the most tokens left first (they set the step's length), each up to its
  A_r. This is a per-round (myopic) optimum over prefix choices of the drafts the cache
  gives; it is not a global optimum over all schedules of the step (a round that spends
  more for a later gain is never chosen) and it uses only this cache's drafts.

Every method's time is split by the rounds with at most ``tail_running`` running sequences:
the long tail's share of the step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from openrlhf_srt.cache import CacheConfig, TreeCache
from openrlhf_srt.drafting.budget import BudgetConfig
from openrlhf_srt.drafting.calibration import AcceptanceCalibrator
from openrlhf_srt.drafting.policy import draft_lengths, observe_outcomes
from openrlhf_srt.drafting.step_curve import StepCurve
from openrlhf_srt.replay.rounds import Round, accepted_lengths, run_batched_step
from openrlhf_srt.replay.stream import StepRecords

METHODS = ("baseline", "srt", "oracle")
POLICY_COSTS = ("hinge", "curve")


@dataclass(frozen=True)
class RolloutTimeConfig:
    cache: CacheConfig = field(default_factory=CacheConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    policy_cost: str = "hinge"  # what the budget rule sees: the curve's hinge or the curve
    tail_running: int = 8  # rounds with at most this many running sequences are the tail
    drafter_time: bool = False  # add the measured native call + policy time to SRT rounds

    def __post_init__(self) -> None:
        if self.policy_cost not in POLICY_COSTS:
            raise ValueError(f"--policy-cost must be one of {POLICY_COSTS}, "
                             f"got {self.policy_cost!r}")
        if self.tail_running < 0:
            raise ValueError(f"--tail-running must be >= 0, got {self.tail_running}")
        if self.budget.max_draft_tokens > self.cache.max_depth - 1:
            raise ValueError(f"--budget {self.budget.max_draft_tokens} must be below "
                             f"--max-depth {self.cache.max_depth}")


@dataclass
class MethodTime:
    """One method's rounds of one training step."""

    running: np.ndarray  # running sequences per round
    seconds: np.ndarray  # seconds per round
    tokens: int  # tokens produced (the step's recorded tokens)

    @property
    def total(self) -> float:
        return float(self.seconds.sum())

    def tail_seconds(self, tail_running: int) -> float:
        return float(self.seconds[self.running <= tail_running].sum())

    @property
    def rounds(self) -> int:
        return len(self.seconds)


@dataclass
class StepTime:
    step: int
    sequences: int
    tokens: int
    methods: dict[str, MethodTime]

    def seconds(self, method: str) -> float:
        return self.methods[method].total


def baseline_time(lengths: np.ndarray, curve: StepCurve) -> MethodTime:
    """One token per running sequence per round: round r runs the sequences longer than r."""
    lengths = np.asarray(lengths, dtype=np.int64)
    rounds = int(lengths.max(initial=0))
    ends = np.bincount(lengths, minlength=rounds + 1)  # sequences finishing after r rounds
    running = (len(lengths) - np.cumsum(ends))[:rounds]  # still running in round r (0-based)
    running = np.asarray(running, dtype=np.int64)
    seconds = np.asarray(curve.baseline_seconds(running), dtype=np.float64).reshape(-1)
    return MethodTime(running, seconds if rounds else np.zeros(0), int(lengths.sum()))


class RoundCosts:
    """step_seconds(running, running + X) for X = 0 .. max_draft_tokens * running, one curve
    query per batch size (the running count only falls within a step, so rounds with the
    same count share it)."""

    def __init__(self, curve: StepCurve, max_draft_tokens: int):
        self.curve, self.k_max = curve, max_draft_tokens
        self.running, self.row = -1, np.zeros(0)

    def __call__(self, running: int) -> np.ndarray:
        if running != self.running:
            extra = np.arange(self.k_max * running + 1)
            self.row = np.asarray(self.curve.step_seconds(running, running + extra),
                                  dtype=np.float64).reshape(-1)
            self.running = running
        return self.row


def oracle_lengths(accepted_full: np.ndarray, left: np.ndarray, running: int,
                   costs: StepCurve | RoundCosts) -> np.ndarray:
    """The oracle's draft lengths of one round (see the module docstring): the total X in
    [0, sum A_r] maximising (running + X) / step_seconds(running, running + X), the smallest
    on ties, handed out longest-remaining first, each sequence at most its A_r."""
    a = np.asarray(accepted_full, dtype=np.int64)
    total = int(a.sum())
    if total == 0:
        return np.zeros_like(a)
    x = np.arange(total + 1)
    if isinstance(costs, RoundCosts):
        seconds = costs(running)[: total + 1]
    else:
        seconds = np.asarray(costs.step_seconds(running, running + x))
    best = int(np.argmax((running + x) / seconds))
    order = np.argsort(-np.asarray(left), kind="stable")
    before = np.cumsum(a[order]) - a[order]
    k = np.zeros_like(a)
    k[order] = np.clip(best - before, 0, a[order])
    return k


class _Run:
    """One method's engine (SRT or oracle): its own native cache across training steps."""

    def __init__(self, method: str, cfg: RolloutTimeConfig, curve: StepCurve):
        self.method, self.cfg, self.curve = method, cfg, curve
        self.cache = TreeCache(cfg.cache)
        self.calibrator = AcceptanceCalibrator()
        self.hinge = curve.to_step_cost() if cfg.policy_cost == "hinge" else None
        self.costs = RoundCosts(curve, cfg.budget.max_draft_tokens)

    def run_step(self, recs: StepRecords, first_id: int) -> MethodTime:
        cfg = self.cfg
        k_max = cfg.budget.max_draft_tokens
        running_log: list[int] = []
        seconds_log: list[float] = []

        called = [0.0]  # when the native call of this round started

        def budgets(positions: np.ndarray) -> np.ndarray:
            # the proposer drafts at the full budget, then its policy cuts (decide)
            called[0] = time.perf_counter()
            return np.full(len(positions), k_max, dtype=np.int32)

        def decide(r: Round) -> np.ndarray:
            m = r.running.size
            row = self.costs(m)
            if self.method == "srt":
                cost = self.hinge if self.hinge is not None else (
                    lambda t: row[np.asarray(t, dtype=np.int64) - m])
                lens, raw_cond = draft_lengths(cfg.budget, self.calibrator, r.draft_probs,
                                               r.draft_offsets, r.position, cost)
                k = lens.astype(np.int64)
                # the first k[r] tokens of each draft are what the engine verifies
                full = np.diff(r.draft_offsets)
                keep = (np.arange(r.draft_tokens.size) - np.repeat(r.draft_offsets[:-1], full)
                        < np.repeat(k, full))
                acc = accepted_lengths(r.draft_tokens[keep],
                                       np.concatenate([[0], np.cumsum(k)]),
                                       recs.responses, r.at, r.left)
                verified = k > 0  # raw_cond[keep] holds exactly their tokens, in order
                observe_outcomes(self.calibrator, raw_cond[keep], k[verified], acc[verified])
            else:
                full_acc = accepted_lengths(r.draft_tokens, r.draft_offsets, recs.responses,
                                            r.at, r.left)
                k = acc = oracle_lengths(full_acc, r.left, m, self.costs)
            sec = float(row[int(k.sum())])
            if cfg.drafter_time and self.method == "srt":
                sec += time.perf_counter() - called[0]  # the native call and the policy
            running_log.append(m)
            seconds_log.append(sec)
            return np.minimum(acc + 1, r.left)

        run_batched_step(self.cache, recs, first_id, budgets, cfg.cache.min_prob, decide)
        return MethodTime(np.asarray(running_log, dtype=np.int64),
                          np.asarray(seconds_log, dtype=np.float64), recs.tokens)


def predict(steps: Iterable[StepRecords], curve: StepCurve,
            cfg: RolloutTimeConfig | None = None, progress=None) -> list[StepTime]:
    """Predicted seconds per training step for every method (METHODS). ``progress`` (a
    callable taking a token count) is told the tokens of each step as it is done."""
    cfg = cfg or RolloutTimeConfig()
    runs = {m: _Run(m, cfg, curve) for m in ("srt", "oracle")}
    out = []
    next_id = 0
    for recs in steps:
        methods = {"baseline": baseline_time(recs.lengths, curve)}
        for m, run in runs.items():
            methods[m] = run.run_step(recs, next_id)
        next_id += len(recs)
        out.append(StepTime(recs.step, len(recs), recs.tokens, methods))
        if progress is not None:
            progress(recs.tokens)
    return out
