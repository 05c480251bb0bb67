"""One rollout batch: P prompts x n samples from the vLLM engine, driven step by step so
that run-ahead can use the end-of-step bubble.

`drive(llm, requests, runahead)` adds one vLLM request per sample to the engine
(`llm.llm_engine.add_request`), then calls `llm.llm_engine.step()` until every one has
finished (what `LLM.generate` does inside). Between engine steps, at most every
`poll_seconds`, the run-ahead source (`LocalRunahead`) is told how many rollout samples are
still running and may hand back run-ahead requests, which are added with the run-ahead tag
(`SamplingParams.extra_args["srt_runahead"]`) so the drafter files their tokens in the cache
as run-ahead. When the last rollout sample finishes, the clock stops and every run-ahead
request still running is aborted. Run-ahead output is counted (tokens) and dropped: the
samples returned are exactly the rollout requests', in request order. With
`keep_runahead` (trace recording, `--trace_dir`), each run-ahead request's prompt, tokens and
finish reason (`abort` for those cut at the end) are kept beside them, never as samples.

`generate_batch` builds the step's requests, drives them and adds rewards and the
speculative figures of the step (vLLM's own spec-decode counters).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from openrlhf_srt.data.reward import math_reward
from openrlhf_srt.data.traces import trace_finish_reason
from openrlhf_srt.vllm.pause_points import pause_at
from openrlhf_srt.vllm.spec_metrics import acceptance_rate, read_spec_counters, tokens_per_step

_batch_ids = itertools.count()


class RunaheadSource(Protocol):
    """What drive() asks of run-ahead (openrlhf_srt.local.local_runahead.LocalRunahead)."""

    poll_seconds: float
    priority: int

    def begin(self, dispatched: int, now: float) -> None: ...

    def poll(self, running: int, now: float, *, used_tokens: int,
             in_flight: int) -> list[tuple[list[int], Any]]: ...

    def end(self, now: float) -> dict[str, float]: ...


@dataclass
class RunaheadOutput:
    """One run-ahead request's output (kept for trace recording only)."""

    prompt_ids: list[int]
    token_ids: list[int]
    finish_reason: str  # "stop", "length" or "abort" (cut when the step's rollouts ended)


@dataclass
class Driven:
    outputs: list  # vLLM CompletionOutput per request, in request order
    seconds: float  # first request added -> last rollout finished
    runahead: dict[str, float] = field(default_factory=dict)
    runahead_outputs: list[RunaheadOutput] = field(default_factory=list)  # keep_runahead


def drive(llm, requests: list[tuple[list[int], Any]],
          runahead: RunaheadSource | None = None, *, keep_runahead: bool = False) -> Driven:
    """Generate one output per (prompt ids, SamplingParams) request; see the module doc."""
    from vllm.inputs import tokens_input
    from vllm.sampling_params import RequestOutputKind

    engine = llm.llm_engine
    if engine.has_unfinished_requests():
        raise RuntimeError("drive() needs an idle engine (requests from elsewhere are running)")
    batch = next(_batch_ids)
    pending: dict[str, int] = {}
    start = time.monotonic()
    for i, (ids, params) in enumerate(requests):
        p = params.clone()
        p.output_kind = RequestOutputKind.FINAL_ONLY
        rid = f"rollout-{batch}-{i}"
        engine.add_request(rid, tokens_input(list(ids)), p)
        pending[rid] = i
    outputs: list = [None] * len(requests)
    ra_live: dict[str, int] = {}  # run-ahead request -> tokens so far
    ra_kept: dict[str, RunaheadOutput] = {}  # keep_runahead: request -> its output so far
    ra_done_tokens = ra_started = 0
    if runahead is not None:
        runahead.begin(len(requests), start)
    next_poll = start
    first_engine_step = True
    while pending:
        for out in engine.step():
            rid = out.request_id
            if rid in ra_live:
                delta = out.outputs[0].token_ids  # DELTA outputs
                ra_live[rid] += len(delta)
                if keep_runahead:
                    ra_kept[rid].token_ids.extend(delta)
                    if out.finished:
                        ra_kept[rid].finish_reason = trace_finish_reason(out.outputs[0].finish_reason)
                if out.finished:
                    ra_done_tokens += ra_live.pop(rid)
            elif out.finished and rid in pending:
                outputs[pending.pop(rid)] = out.outputs[0]
        if first_engine_step and pending:
            pause_at("rollout")  # test hook (pause_points.py): requests in the engine
        first_engine_step = False
        now = time.monotonic()
        if runahead is not None and pending and now >= next_poll:
            next_poll = now + runahead.poll_seconds
            for ids, params in runahead.poll(len(pending), now, used_tokens=ra_done_tokens,
                                             in_flight=len(ra_live)):
                p = params.clone()
                p.output_kind = RequestOutputKind.DELTA
                rid = f"runahead-{batch}-{ra_started}"
                engine.add_request(rid, tokens_input(list(ids)), p, priority=runahead.priority)
                ra_live[rid] = 0
                if keep_runahead:
                    ra_kept[rid] = RunaheadOutput(list(ids), [], "abort")
                ra_started += 1
    end = time.monotonic()
    aborted = len(ra_live)
    if ra_live:
        engine.abort_request(list(ra_live))
    stats: dict[str, float] = {}
    if runahead is not None:
        stats = dict(runahead.end(end))
        stats.update(requests=float(ra_started), aborted=float(aborted),
                     tokens=float(ra_done_tokens + sum(ra_live.values())))
    return Driven(outputs, end - start, stats, list(ra_kept.values()))


@dataclass
class RolloutBatch:
    prompt_ids: list[list[int]]  # one per sample (prompts repeated n times, grouped)
    response_ids: list[list[int]]
    finish_reasons: list[str]
    rewards: np.ndarray  # [P, n] correctness reward before penalties
    seconds: float
    spec: dict[str, float] = field(default_factory=dict)
    runahead: dict[str, float] = field(default_factory=dict)
    runahead_outputs: list[RunaheadOutput] = field(default_factory=list)  # keep_runahead

    @property
    def response_lengths(self) -> np.ndarray:
        return np.array([len(r) for r in self.response_ids])

    @property
    def tokens(self) -> int:
        return int(self.response_lengths.sum())


def generate_batch(llm, prompts: list[dict], prompt_ids: list[list[int]], *, n: int,
                   temperature: float, top_p: float, max_new_tokens: int,
                   runahead: RunaheadSource | None = None,
                   keep_runahead: bool = False) -> RolloutBatch:
    from vllm import SamplingParams

    params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_new_tokens)
    requests = [(ids, params) for ids in prompt_ids for _ in range(n)]
    before = read_spec_counters(llm)
    driven = drive(llm, requests, runahead, keep_runahead=keep_runahead)
    spec = read_spec_counters(llm) - before
    outs = driven.outputs
    r_ids = [list(c.token_ids) for c in outs]
    rewards = np.array([math_reward(c.text, rec.get("label"))
                        for rec, k in zip(prompts, range(0, len(outs), n))
                        for c in outs[k:k + n]], dtype=np.float64).reshape(len(prompts), n)
    batch = RolloutBatch([list(ids) for ids, _ in requests], r_ids,
                         [c.finish_reason or "abort" for c in outs], rewards, driven.seconds,
                         runahead=driven.runahead, runahead_outputs=driven.runahead_outputs)
    # every generated token (run-ahead included) took part in the counted verifications
    generated = batch.tokens + int(driven.runahead.get("tokens", 0))
    batch.spec = {
        "accept_len": tokens_per_step(generated, spec.accepted_tokens),
        "acceptance_rate": acceptance_rate(spec),
        "draft_tokens": float(spec.draft_tokens),
        "accepted_tokens": float(spec.accepted_tokens),
    }
    return batch
