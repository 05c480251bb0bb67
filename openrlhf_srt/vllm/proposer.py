"""SRT drafter for vLLM: drafts from a per-prompt tree cache of earlier rollouts.

vLLM builds it in the engine worker from
`speculative_config={"method": "custom_class", "model": "openrlhf_srt.vllm.proposer.SRTProposer",
"num_speculative_tokens": K}` and calls `propose(...)` once per engine step, after the step's
sampled tokens were written into the model runner's input batch. vLLM does not pass request
ids or prompt lengths; the worker extension (`worker_extension.SRTWorkerExtension.srt_bind`)
gives the proposer the model runner, whose `input_batch` (`req_ids`, `num_prompt_tokens`) and
`requests` (sampling params) it re-reads every step, since vLLM rebuilds the batch freely.

Per step, for every row of the batch: a request seen for the first time is registered under
its prompt key (`cache.keys.prompt_key` of its prompt ids; a later turn of a multi-turn
episode, whose `extra_args["srt_prompt_key"]` names its first prompt's tree, joins that tree
as a continuation of the first prompt: `_tree_of`), tagged "runahead" when its
`SamplingParams.extra_args` has `srt_runahead: True` ("rollout" otherwise); all tokens the
row gained since the proposer last saw it (normally the accepted draft plus one, more if a
step was skipped) go to the cache in one flat array; the cache appends all of them before it
drafts, so sibling samples of a prompt see each other's tokens of the same step. Requests that
left the batch and are no longer known to the runner are finished; preempted ones stay open.

Settings (`srt_config.DrafterConfig`) come with vLLM's engine config, in
`additional_config["openrlhf_srt"]`, which vLLM hands to every worker (srt_config.py). Under
tensor (or pipeline) parallelism every rank builds a proposer, but vLLM uses the drafts of one
rank only (the first tensor-parallel rank of the last pipeline stage, its output rank): that
rank owns the cache, its byte budget and its snapshots; the other ranks draft nothing and
hold no cache, and their worker RPCs answer None. See docs/vllm.md.

Draft lengths: the cache drafts up to vLLM's `num_speculative_tokens` per row with the path
probability after each token, and `drafting.budget.choose_budgets` cuts each draft to the
length its rule picks ("goodput": the batch's expected tokens per second of engine time).
The step cost model is fitted online from the time between consecutive `propose` calls (one
engine step: schedule, forward, verification) against the tokens that step processed.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

import numpy as np

from openrlhf_srt.cache.keys import prompt_key
from openrlhf_srt.drafting.calibration import AcceptanceCalibrator
from openrlhf_srt.drafting.cost_model import StepCostModel
from openrlhf_srt.drafting.policy import draft_lengths, observe_outcomes
from openrlhf_srt.runahead import RUNAHEAD_ARG
from openrlhf_srt.vllm.drafter_config import DrafterConfig

__all__ = ["PROMPT_KEY_ARG", "RUNAHEAD_ARG", "SRTProposer", "is_cache_owner"]

log = logging.getLogger(__name__)

# extra_args key: the per-prompt tree a request belongs to, when it is not its own prompt's
# (every turn of a multi-turn episode goes to the tree of the episode's first prompt)
PROMPT_KEY_ARG = "srt_prompt_key"
EPISODE_PROMPTS = 4096  # first prompts remembered for later turns


class BatchDraftsLike(Protocol):
    offsets: np.ndarray  # int64, n + 1
    tokens: np.ndarray  # int32
    probs: np.ndarray  # path probability after each token


class DraftSource(Protocol):
    """What the proposer needs from a draft source (openrlhf_srt.cache.TreeCache has it)."""

    def add_sequence(self, seq_id: int, prompt_key: int, prompt_token_ids, *, step: int,
                     tag: str = "rollout") -> None: ...
    def finish_sequence(self, seq_id: int) -> None: ...
    def step(self, seq_ids, new_tokens, new_token_counts, budgets,
             min_prob: float | None = None) -> BatchDraftsLike: ...
    def stats(self) -> dict: ...
    def clear(self) -> None: ...
    def resize(self, byte_budget: int) -> None: ...
    def save(self, path) -> None: ...
    def drop_steps_before(self, step: int) -> int: ...


def make_source(cfg: DrafterConfig) -> DraftSource:
    if cfg.source is not None:
        mod, _, name = cfg.source.partition(":")
        return getattr(importlib.import_module(mod), name)(cfg, cfg.max_draft_tokens)
    from openrlhf_srt.cache import TreeCache

    return TreeCache(cfg.cache_config())


def load_source(cfg: DrafterConfig, path: str) -> DraftSource:
    """The draft source of a snapshot, under the settings `cfg` (this run's, not the
    snapshot's: a resume with a smaller --srt.cache_bytes gets the smaller budget)."""
    if cfg.source is not None:
        mod, _, name = cfg.source.partition(":")
        return getattr(importlib.import_module(mod), name).load(path, cfg)
    from openrlhf_srt.cache import TreeCache

    return TreeCache.load(path, cfg.cache_config())


def is_cache_owner() -> bool:
    """Whether this worker is the rank whose drafts vLLM uses (tensor-parallel rank 0 of the
    last pipeline stage); True without a distributed setup."""
    try:
        from vllm.distributed.parallel_state import get_pp_group, get_tp_group

        return get_tp_group().rank_in_group == 0 and get_pp_group().is_last_rank
    except (ImportError, AssertionError, AttributeError):  # groups not initialized
        return True


class SRTProposer:
    """vLLM `custom_class` proposer drafting from a per-prompt rollout tree cache."""

    def __init__(self, vllm_config) -> None:
        from openrlhf_srt.vllm.cpu_kernels import install_cpu_kernel_fixes

        self.cpu_fix = install_cpu_kernel_fixes()
        spec = vllm_config.speculative_config
        self.k = int(spec.num_speculative_tokens)
        self.max_model_len = int(vllm_config.model_config.max_model_len)
        config = DrafterConfig.from_vllm_config(vllm_config)
        if config is None:
            log.warning("no SRT settings in the engine's additional_config[%r]: defaults "
                        "(start engines with srt_engine.start_srt_engine or "
                        "DrafterConfig.engine_args())", "openrlhf_srt")
            config = DrafterConfig(max_draft_tokens=self.k)
        if config.max_draft_tokens != self.k:
            raise ValueError(f"--srt.max_draft_tokens {config.max_draft_tokens} differs from "
                             f"the engine's num_speculative_tokens {self.k}")
        self.config = config
        self.owner = is_cache_owner()
        # the other ranks' drafts are never used: no cache there (budget paid once)
        self.source: DraftSource | None = make_source(config) if self.owner else None
        self.budget = config.budget_config()
        self.cost = StepCostModel()
        self.calibrator = AcceptanceCalibrator()
        self.train_step = 0
        self.runner = None
        self._seq: dict[str, int] = {}  # req_id -> cache seq id (running in the cache)
        self._seen: dict[str, int] = {}  # req_id -> tokens of it already in the cache
        # req_id -> raw conditional probabilities of the draft proposed last step
        self._pending: dict[str, np.ndarray] = {}
        self._last_end: float | None = None  # when the previous propose returned
        self._last_tokens = 0  # tokens the step after the previous propose processes
        self._next_seq = time.time_ns()  # unique across processes sharing a snapshot
        # named tree key -> the episode's first prompt (later turns are filed under it)
        self._episode_prompts: OrderedDict[int, np.ndarray] = OrderedDict()
        self.reset_counters()

    # -------------------------------------------------------------------- vLLM hooks
    def load_model(self, *args, **kwargs) -> None:
        """No model: drafts come from the cache."""

    def bind(self, model_runner) -> None:
        for attr in ("input_batch", "requests"):
            if not hasattr(model_runner, attr):
                raise RuntimeError(f"model runner {type(model_runner).__name__} has no {attr}; "
                                   "SRT needs vLLM's V1 GPU/CPU model runner")
        self.runner = model_runner

    def propose(self, sampled_token_ids: list[list[int]], num_tokens_no_spec: np.ndarray,
                token_ids_cpu: np.ndarray, slot_mappings=None) -> list[list[int]]:
        n = len(sampled_token_ids)
        if self.runner is None or self.source is None:
            return [[] for _ in range(n)]
        t0 = time.perf_counter()
        batch = self.runner.input_batch
        req_ids = batch.req_ids[:n]
        self._finish_gone(req_ids)
        prefill = 0
        for row, rid in enumerate(req_ids):
            if rid not in self._seq:
                prefill += self._register(rid, row, batch, token_ids_cpu)
        self._observe_step(t0, prefill)
        n_sampled = np.fromiter(map(len, sampled_token_ids), dtype=np.int64, count=n)
        self._count_accepted(req_ids, n_sampled)

        seq_ids = np.fromiter((self._seq[r] for r in req_ids), dtype=np.int64, count=n)
        seen = np.fromiter((self._seen[r] for r in req_ids), dtype=np.int64, count=n)
        prompt_len = np.asarray(batch.num_prompt_tokens[:n], dtype=np.int64)
        total = np.asarray(num_tokens_no_spec[:n], dtype=np.int64)
        counts = np.maximum(total - seen, 0)
        # Flat gather of every row's new tokens: rows repeated by count, columns seen..total.
        rows = np.repeat(np.arange(n), counts)
        starts = np.cumsum(counts) - counts
        cols = np.repeat(seen - starts, counts) + np.arange(int(counts.sum()))
        new_tokens = np.ascontiguousarray(token_ids_cpu[rows, cols], dtype=np.int32)
        room = self.max_model_len - 1 - total
        caps = np.where(n_sampled > 0, np.clip(room, 0, self.k), 0).astype(np.int32)

        drafts = self.source.step(seq_ids, new_tokens, counts.astype(np.int32), caps)
        offs = np.asarray(drafts.offsets, dtype=np.int64)
        lens, raw_cond = draft_lengths(self.budget, self.calibrator, drafts.probs, offs,
                                       total - prompt_len, self.cost)
        toks = drafts.tokens.tolist()
        starts = offs[:-1].tolist()
        out = [toks[a:a + d] for a, d in zip(starts, lens.tolist())]
        withhold = self.config.withhold_drafts  # drafts computed and counted, never verified
        for rid, t, a, d in zip(req_ids, total.tolist(), starts, lens.tolist()):
            self._seen[rid] = t
            if not withhold:
                self._pending[rid] = raw_cond[a:a + d]
        drafted = int(lens.sum())
        self._last_tokens = int((n_sampled > 0).sum()) + (0 if withhold else drafted)
        self.c_steps += 1
        self.c_rows += n
        self.c_drafts += int((lens > 0).sum())
        self.c_draft_tokens += drafted
        self.c_cut_tokens += int(np.diff(offs).sum()) - drafted
        if withhold:
            self.c_withheld_tokens += drafted
            out = [[] for _ in range(n)]
        self.c_new_tokens += int(counts.sum())
        self._last_end = time.perf_counter()
        self.c_seconds += self._last_end - t0
        return out

    def _observe_step(self, now: float, prefill_tokens: int) -> None:
        """Feed the cost model the engine step since the last propose: its wall time against
        the tokens it processed (last step's rows and drafts, plus newly prefilled prompts).
        A gap much longer than predicted is idle time between generate calls, not a step."""
        if self._last_end is None:
            return
        seconds = now - self._last_end
        tokens = self._last_tokens + prefill_tokens
        if tokens <= 0 or seconds > 10.0 * float(self.cost(tokens)) + 0.5:
            return
        self.cost.observe(tokens, seconds)
        self.c_step_seconds += seconds
        self.c_observed_steps += 1

    # ----------------------------------------------------------------- per request
    def _register(self, rid: str, row: int, batch, token_ids_cpu) -> int:
        """Start caching a request; returns its prompt length."""
        n_prompt = int(batch.num_prompt_tokens[row])
        prompt = np.asarray(token_ids_cpu[row, :n_prompt], dtype=np.int32)
        state = self.runner.requests.get(rid)
        params = getattr(state, "sampling_params", None)
        extra = getattr(params, "extra_args", None) or {}
        tag = "runahead" if extra.get(RUNAHEAD_ARG) else "rollout"
        key, tree_prompt = self._tree_of(prompt, extra.get(PROMPT_KEY_ARG))
        seq = self._next_seq
        self._next_seq += 1
        self.source.add_sequence(seq, key, tree_prompt, step=self.train_step, tag=tag)
        self._seq[rid] = seq
        self._seen[rid] = n_prompt
        self.c_requests += 1
        self.c_runahead += tag == "runahead"
        return n_prompt

    def _tree_of(self, prompt: np.ndarray, named) -> tuple[int, np.ndarray]:
        """(tree key, prompt the tree indexes) of a new request. A later turn of an
        episode (its named key is not its own prompt's) joins the episode's tree as if it
        continued the first prompt: that tree's text for it is the first prompt + this
        turn's response, so tool output and earlier turns, which are in this turn's
        prompt, are never indexed as text that follows the prompt."""
        own = prompt_key(prompt)
        if named is None:
            return own, prompt
        named = int(named)
        if named == own:  # a first turn: remember its prompt (bounded, least recent out)
            self._episode_prompts[named] = prompt
            self._episode_prompts.move_to_end(named)
            while len(self._episode_prompts) > EPISODE_PROMPTS:
                self._episode_prompts.popitem(last=False)
            return own, prompt
        first = self._episode_prompts.get(named)
        if first is None:  # first turn not seen by this engine: a tree of its own
            return own, prompt
        self._episode_prompts.move_to_end(named)
        return named, first

    def _finish_gone(self, req_ids) -> None:
        if len(self._seq) <= len(req_ids) and self._seq.keys() <= set(req_ids):
            return
        live = set(req_ids)
        known = self.runner.requests  # preempted requests stay here; finished ones leave
        for rid in [r for r in self._seq if r not in live and r not in known]:
            self.source.finish_sequence(self._seq.pop(rid))
            self._seen.pop(rid, None)
            self._pending.pop(rid, None)

    def _count_accepted(self, req_ids, n_sampled: np.ndarray) -> None:
        """Outcomes of last step's drafts: a row that verified a draft of d tokens samples
        (accepted + 1) tokens this step; its first `accepted` draft tokens were accepted,
        the next (if any) rejected, the rest never verified. Counted, and fed to the
        calibrator with the drafts' raw conditional probabilities."""
        if not self._pending:
            return
        empty = np.zeros(0)
        conds = [self._pending.get(r, empty) for r in req_ids]
        d = np.fromiter(map(len, conds), dtype=np.int64, count=len(req_ids))
        verified = (d > 0) & (n_sampled > 0)
        if not verified.any():
            return
        acc = np.minimum(np.maximum(n_sampled - 1, 0), d)[verified]
        dv = d[verified]
        self.c_verified_drafts += int(verified.sum())
        self.c_verified_tokens += int(dv.sum())
        self.c_accepted += int(acc.sum())
        flat = np.concatenate([c for c, v in zip(conds, verified.tolist()) if v])
        observe_outcomes(self.calibrator, flat, dv, acc)

    # ---------------------------------------------------------------- worker RPCs
    def reset_counters(self) -> None:
        self.c_steps = self.c_rows = self.c_drafts = self.c_draft_tokens = 0
        self.c_new_tokens = self.c_requests = self.c_runahead = 0
        self.c_verified_drafts = self.c_verified_tokens = self.c_accepted = 0
        self.c_cut_tokens = self.c_observed_steps = self.c_withheld_tokens = 0
        self.c_seconds = self.c_step_seconds = 0.0

    def stats(self) -> dict[str, Any]:
        tok = self.c_verified_tokens
        return {
            "cache": dict(self.source.stats()),
            "settings": self.config.to_dict(),
            "bound": self.runner is not None,
            "cpu_fix": self.cpu_fix,
            "num_speculative_tokens": self.k,
            "running": len(self._seq),
            "steps": self.c_steps,
            "rows": self.c_rows,
            "requests": self.c_requests,
            "runahead_requests": self.c_runahead,
            "cached_tokens": self.c_new_tokens,
            "drafts": self.c_drafts,
            "draft_tokens": self.c_draft_tokens,
            "withheld_draft_tokens": self.c_withheld_tokens,
            "verified_drafts": self.c_verified_drafts,
            "verified_draft_tokens": tok,
            "accepted_tokens": self.c_accepted,
            "acceptance_rate": self.c_accepted / tok if tok else 0.0,
            "budget_cut_tokens": self.c_cut_tokens,
            "propose_seconds": self.c_seconds,
            "observed_steps": self.c_observed_steps,
            "observed_step_seconds": self.c_step_seconds,
            "step_cost": dataclasses.asdict(self.cost.current),
            "calibration": self.calibrator.table(),
        }

    def _forget_running(self) -> None:
        """Running requests get registered again on their next step (prompt and response so
        far are re-inserted: the old cache no longer holds them)."""
        self._seq.clear()
        self._seen.clear()
        self._pending.clear()

    def clear(self) -> None:
        self.source.clear()
        self._forget_running()

    def resize(self, byte_budget: int) -> None:
        self.source.resize(int(byte_budget))

    def save(self, path: str) -> None:
        """Write a snapshot of the cache. Requests the runner no longer holds are finished
        first: vLLM drops a finished request from the runner in the engine step after it
        ended, which, with nothing left to run, calls no propose; saved as running, it would
        claim a request that is gone. (What still runs is saved running; a load restores
        every sequence finished, docs/cache.md, "Snapshots".)"""
        if self.runner is not None:
            self._finish_gone(())
        self.source.save(path)

    def load(self, path: str) -> None:
        """Replace the cache by a snapshot's contents under this engine's settings (its
        budget, depth and drafting rule; the least recently used prompts are evicted if the
        contents exceed the budget). Nothing restored runs; requests still running are
        registered again on their next step."""
        self.source = load_source(self.config, path)
        self._forget_running()

    def set_step(self, step: int) -> None:
        self.train_step = int(step)

    def drop_steps_before(self, step: int) -> int:
        """Drop the finished sequences of training steps before `step` (running ones stay);
        returns how many were dropped."""
        return int(self.source.drop_steps_before(int(step)))
