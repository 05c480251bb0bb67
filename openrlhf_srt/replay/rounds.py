"""The round loops of the replay and its driver (``replay_steps``, ``replay``).

The batched loop replays a training step of the native cache without per-token Python,
one ``TreeCache.step`` call per round for all running sequences. Per round: the native call appends every running sequence's tokens of the previous round
and drafts a path for each (as the engine's proposer calls it); the drafts are verified
against the recorded responses in numpy (flat arrays + offsets; a segment's accepted length
is its first mismatch, capped at the tokens left), the new tokens (accepted + 1, no bonus
after the end) are gathered with numpy, and sequences that reach their recorded length get
their last tokens appended and are finished before the next round drafts. Every draft of a
round therefore sees every sequence's tokens up to the previous round: the ``sync`` order
of docs/replay.md. Statistics per training step and per response-position bucket are
bincounts over the round's arrays.

The per-sequence loop calls the drafter once per running sequence and round (engine order,
token trees, history insertion, the reference cache, ArcticInference, n-gram).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from openrlhf_srt.cache import TreeCache
from openrlhf_srt.data.traces import TraceRecord
from openrlhf_srt.replay.cache_drafter import CacheDrafter
from openrlhf_srt.replay.drafters import Drafter, RunAheadRollout, SeqState
from openrlhf_srt.replay.simulator import ORDERS, Result, Strategy, verify
from openrlhf_srt.replay.stream import StepRecords, steps_from_records, with_next


def flat_gather(data: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """data[starts[i] : starts[i] + counts[i]] for every i, concatenated (one numpy gather)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return data[:0]
    before = np.cumsum(counts) - counts
    return data[np.repeat(np.asarray(starts, dtype=np.int64) - before, counts)
                + np.arange(total)]


def accepted_lengths(draft_tokens: np.ndarray, offsets: np.ndarray, data: np.ndarray,
                     starts: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """Accepted length of every draft segment against the recorded tokens: segment i
    (draft_tokens[offsets[i]:offsets[i+1]]) is compared with data[starts[i]:] position by
    position; accepted = the first mismatch, at most remaining[i] (the tokens left)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    lens = np.diff(offsets)
    acc = np.zeros(len(lens), dtype=np.int64)
    if draft_tokens.size == 0:
        return acc
    seg = np.repeat(np.arange(len(lens)), lens)
    j = np.arange(draft_tokens.size) - offsets[:-1][seg]  # position within the draft
    valid = j < remaining[seg]
    idx = np.where(valid, starts[seg] + j, 0)
    ok = valid & (draft_tokens == data[idx])
    # per segment the smallest failing position, or its length when all match
    first_fail = np.where(ok, lens[seg], j)
    nonempty = lens > 0
    acc[nonempty] = np.minimum.reduceat(first_fail, offsets[:-1][nonempty])
    return acc


@dataclass
class Round:
    """One round of the batched loop, handed to its ``decide`` callback."""

    running: np.ndarray  # batch indices of the running sequences, batch order
    position: np.ndarray  # their response positions (tokens produced so far)
    left: np.ndarray  # tokens each has left
    at: np.ndarray  # where its next recorded token lies in the step's flat responses
    draft_tokens: np.ndarray  # the native call's drafts, flat (int32)
    draft_offsets: np.ndarray  # int64, running + 1
    draft_probs: np.ndarray  # path probability after each draft token


def run_batched_step(cache: TreeCache, recs: StepRecords, first_id: int,
                     budgets: Callable[[np.ndarray], np.ndarray], min_prob: float,
                     decide: Callable[[Round], np.ndarray]) -> None:
    """Replay one training step on ``cache`` with one ``TreeCache.step`` call per round.

    Sequence ``first_id + i`` is record i. Each round the native call appends every running
    sequence's tokens of the previous round and drafts a path of at most ``budgets(positions)``
    tokens for each; ``decide(round)`` returns how many recorded tokens each running sequence
    produces (>= 1, at most its tokens left). Sequences that reach their recorded length get
    their last tokens appended and are finished before the next round drafts."""
    n = len(recs)
    ids = first_id + np.arange(n, dtype=np.int64)
    keys = recs.prompt_keys.tolist()
    for i in range(n):
        cache.add_sequence(int(ids[i]), keys[i], recs.prompt(i), step=recs.step)
    data, lengths = recs.responses, recs.lengths
    starts = recs.response_offsets[:-1]
    pos = np.zeros(n, dtype=np.int64)
    for i in np.flatnonzero(lengths == 0).tolist():
        cache.finish_sequence(int(ids[i]))
    run = np.flatnonzero(lengths > 0)  # running sequences, batch order
    pend_tokens = np.zeros(0, dtype=np.int32)  # their tokens of the previous round
    pend_counts = np.zeros(run.size, dtype=np.int32)
    while run.size:
        p = pos[run]
        d = cache.step(ids[run], pend_tokens, pend_counts, budgets(p), min_prob)
        at = starts[run] + p
        produced = decide(Round(run, p, lengths[run] - p, at, np.asarray(d.tokens),
                                np.asarray(d.offsets, dtype=np.int64), np.asarray(d.probs)))
        new = flat_gather(data, at, produced)
        pos[run] = p + produced
        done = pos[run] >= lengths[run]
        if done.any():  # their last tokens reach the cache before the next round drafts
            ends = np.cumsum(produced)
            for i in np.flatnonzero(done).tolist():
                sid = int(ids[run[i]])
                cache.extend(sid, new[ends[i] - produced[i]:ends[i]])
                cache.finish_sequence(sid)
            keep = ~done
            pend_tokens = new[np.repeat(keep, produced)]
            pend_counts = produced[keep].astype(np.int32)
            run = run[keep]
        else:
            pend_tokens, pend_counts = new, produced.astype(np.int32)


class BatchedRunner:
    """Replays one strategy's steps on the native cache with the batched round loop."""

    def __init__(self, strategy: Strategy, bucket: int):
        drafter = strategy.make()
        if not isinstance(drafter, CacheDrafter) or not drafter.batchable:
            raise ValueError(f"strategy {strategy.name} cannot run on the batched loop "
                             "(native cache, path drafts, online insertion only)")
        self.strategy, self.drafter, self.bucket = strategy, drafter, bucket

    def run_step(self, recs: StepRecords, partials: list[RunAheadRollout], first_id: int,
                 res: Result, bar: tqdm) -> None:
        drafter, bucket = self.drafter, self.bucket
        drafter.begin_step(recs.step, partials)
        by_step = res.by_step[recs.step]
        nb = int(recs.lengths.max(initial=0)) // bucket + 1
        pos_sums = np.zeros((5, nb), dtype=np.int64)  # steps, tokens, accepted, drafted, hits

        def decide(r: Round) -> np.ndarray:
            drafted = np.diff(r.draft_offsets)
            acc = accepted_lengths(r.draft_tokens, r.draft_offsets, recs.responses, r.at,
                                   r.left)
            produced = np.minimum(acc + 1, r.left)
            hits = drafted > 0
            sums = (r.running.size, int(produced.sum()), int(acc.sum()), int(drafted.sum()),
                    int(hits.sum()))
            res.total.add_sums(*sums)
            by_step.add_sums(*sums)
            b = r.position // bucket
            pos_sums[0] += np.bincount(b, minlength=nb)
            for row, w in ((1, produced), (2, acc), (3, drafted), (4, hits)):
                pos_sums[row] += np.bincount(b, weights=w, minlength=nb).astype(np.int64)
            bar.update(sums[1])
            return produced

        run_batched_step(drafter.cache, recs, first_id, self.strategy.budget.many,
                         drafter.config.min_prob, decide)
        for k in np.flatnonzero(pos_sums[0]).tolist():
            res.by_position[k].add_sums(*pos_sums[:, k].tolist())
        drafter.end_step(recs.step)


class PerSequenceRunner:
    """The per-sequence loop: one drafter call per running sequence per round."""

    def __init__(self, strategy: Strategy, order: str, bucket: int):
        self.strategy, self.order, self.bucket = strategy, order, bucket
        self.drafter: Drafter = strategy.make()

    def run_step(self, recs: StepRecords, partials: list[RunAheadRollout], first_id: int,
                 res: Result, bar: tqdm) -> None:
        drafter, bucket, step = self.drafter, self.bucket, recs.step
        drafter.begin_step(step, partials)
        keys = recs.prompt_keys.tolist()
        seqs = [SeqState(first_id + i, step, keys[i], recs.prompt(i).tolist(),
                         recs.response(i).tolist()) for i in range(len(recs))]
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
                draft = drafter.draft(seq, self.strategy.budget(pos))
                accepted = verify(draft, seq.target, pos)  # at most the tokens left
                new = seq.target[pos : pos + accepted + 1]  # no bonus token after the end
                for stats in (res.total, res.by_step[step], res.by_position[pos // bucket]):
                    stats.add(len(draft.token_ids), accepted, len(new))
                bar.update(len(new))
                if self.order == "engine":
                    _hand_over(drafter, seq, new)
                else:
                    pending.append((seq, new))
            for seq, new in pending:
                _hand_over(drafter, seq, new)
            active = [s for s in active if len(s.response) < len(s.target)]
        drafter.end_step(step)


def _hand_over(drafter: Drafter, seq: SeqState, new: list[int]) -> None:
    seq.response.extend(new)
    drafter.extend(seq, new)
    if len(seq.response) == len(seq.target):
        drafter.finish(seq)


def make_runner(strategy: Strategy, order: str, bucket: int):
    if strategy.loop == "batched" and order == "sync":
        return BatchedRunner(strategy, bucket)
    return PerSequenceRunner(strategy, order, bucket)


def replay_steps(steps: Iterable[StepRecords], strategies: Sequence[Strategy],
                 order: str = "sync", bucket: int = 32, progress: bool = True,
                 total_tokens: int | None = None, desc: str = "replay") -> list[Result]:
    """Replay a stream of training steps (in step order) once per strategy, the strategies
    side by side step by step; one Result per strategy. ``total_tokens`` (an estimate is
    fine) gives the progress bar its ETA."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if bucket < 1:
        raise ValueError("bucket must be >= 1")
    runners = [make_runner(s, order, bucket) for s in strategies]
    results = [Result(s.name, s.settings(), bucket=bucket) for s in strategies]
    need_next = any(s.runahead is not None for s in strategies)
    pairs = with_next(steps) if need_next else ((s, None) for s in steps)
    total = None if total_tokens is None else total_tokens * len(strategies)
    bar = tqdm(total=total, desc=desc, unit="tok", unit_scale=True, disable=not progress,
               file=sys.stderr, leave=False, smoothing=0.1)
    next_id = 0
    last_step = None
    for recs, nxt in pairs:
        if last_step is not None and recs.step <= last_step:
            raise ValueError(f"step {recs.step} after step {last_step}: steps must ascend")
        last_step = recs.step
        for strategy, runner, res in zip(strategies, runners, results):
            partials = []
            if strategy.runahead is not None and nxt is not None:
                partials = strategy.runahead.partials(recs.prompt_order(), nxt)
            t0 = time.perf_counter()
            runner.run_step(recs, partials, next_id, res, bar)
            res.seconds += time.perf_counter() - t0
        next_id += len(recs)
    bar.close()
    if last_step is None:
        raise ValueError("the trace has no records")
    return results


def replay(records: Sequence[TraceRecord], strategies: Sequence[Strategy],
           order: str = "sync", bucket: int = 32, progress: bool = True) -> list[Result]:
    """Replay in-memory ``records`` (grouped into steps; ValueError on an empty trace or a
    duplicate record) once per strategy; one Result per strategy."""
    return replay_steps(steps_from_records(records), strategies, order=order, bucket=bucket,
                        progress=progress)
