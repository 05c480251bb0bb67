"""SRT rollout engines for OpenRLHF: a Ray actor subclass of its RolloutRayActor.

`SRTRolloutActor` is OpenRLHF 0.11.2's vLLM rollout actor (same constructor, same methods:
generate, generate_responses, weight updates, sleep/wake) started with
- the drafter's settings as vLLM engine arguments (`DrafterConfig.engine_args()`:
  `speculative_config` and `additional_config`, which vLLM hands to every worker, the
  tensor-parallel ranks included),
- `worker_extension_cls` = `SRTWorkerWrap` (OpenRLHF's WorkerWrap + our SRT RPCs),
- vLLM's spec-decode counters on, and priority scheduling when run-ahead should yield to
  rollouts (`--srt.runahead_priority`),
then binds the drafter. It adds run-ahead requests (tagged `srt_runahead` so the drafter
files them as run-ahead; their output is dropped here and never returned), per-step
counters, and one actor method per SRT call into its engine (`srt_stats`,
`srt_save_snapshot`, ...: `engine_client.AsyncSRTEngineHandle`, the cache owner's answer).
With `--srt.trace_dir`, it records every finished episode (all n samples of each
`generate_responses`) and every run-ahead output of a training step in its own step file,
`<trace_dir>/engine<i>/step_<N>.jsonl.gz` (`srt_trace_begin` / `srt_trace_end`, called by
the samples generator; docs/traces.md).

`create_srt_engines` runs OpenRLHF's own `create_vllm_engines` (which hard-codes its actor
class) with `SRTActorLauncher` in place of that class (rebind.py); on a Ray cluster without
GPUs it places one engine per CPU bundle and binds each engine's worker threads to its own
core (`cpu_cores`).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import ray
from openrlhf.trainer.ray.vllm_engine import RolloutRayActor
from ray.util.placement_group import placement_group

from openrlhf_srt.cache.keys import prompt_key
from openrlhf_srt.data.traces import (
    StepTraceWriter,
    TraceRecord,
    check_trace_dir,
    trace_finish_reason,
)
from openrlhf_srt.openrlhf.worker import EXTENSION_PATH
from openrlhf_srt.runahead import RUNAHEAD_PRIORITY, runahead_params
from openrlhf_srt.srt_config import SRTConfig
from openrlhf_srt.vllm.engine_client import AsyncSRTEngineHandle

# Distinct prompts whose rollout counts an actor remembers (least recently generated out
# first): 16 bytes of key and count per prompt, ~2 MB at the bound.
PROMPT_COUNTS_LIMIT = 65536


class PromptCounts:
    """Rollout samples per prompt key, for the most recent `limit` distinct prompts."""

    def __init__(self, limit: int = PROMPT_COUNTS_LIMIT):
        self.limit = int(limit)
        self._counts: OrderedDict[int, int] = OrderedDict()

    def add(self, key: int, n: int = 1) -> None:
        self._counts[key] = self._counts.get(key, 0) + n
        self._counts.move_to_end(key)
        while len(self._counts) > self.limit:
            self._counts.popitem(last=False)

    def __len__(self) -> int:
        return len(self._counts)

    def as_dict(self) -> dict[int, int]:
        return dict(self._counts)


# The finish reasons of the vLLM requests of the episode being generated (one per turn), set
# per episode task by TracingExecutor and appended by the actor's generate()
_EPISODE_FINISH: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "srt_episode_finish", default=None)


class TracingExecutor:
    """OpenRLHF's agent executor (single- or multi-turn), recording each finished episode
    as a trace record on the actor (`_SRTRolloutActor._trace_episode`)."""

    def __init__(self, executor, actor):
        self.executor, self.actor = executor, actor

    async def execute(self, prompt, label, sampling_params, max_length, hf_tokenizer,
                      llm_engine, images=None):
        turns: list[str | None] = []
        token = _EPISODE_FINISH.set(turns)
        try:
            out = await self.executor.execute(prompt, label, sampling_params, max_length,
                                              hf_tokenizer, llm_engine, images)
        finally:
            _EPISODE_FINISH.reset(token)
        self.actor._trace_episode(out, turns)
        return out


def _finite_or_none(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def plain_class(actor_class):
    """The Python class behind a `@ray.remote` class (Ray forbids subclassing the wrapper)."""
    try:
        return actor_class.__ray_metadata__.modified_class.__ray_actor_class__
    except AttributeError:
        if isinstance(actor_class, type):
            return actor_class
        raise TypeError(f"{actor_class!r} is not a Ray actor class this Ray version "
                        "exposes (__ray_metadata__.modified_class)") from None


class _SRTRolloutActor(plain_class(RolloutRayActor)):
    async def __init__(self, *args, srt_drafter: dict[str, Any], cpu_cores: str | None = None,
                       priority: bool = False, runahead_max_requests: int,
                       trace_dir: str | None = None, engine_index: int = 0, **kwargs):
        from openrlhf_srt.vllm.drafter_config import DrafterConfig
        from openrlhf_srt.vllm.engine import check_can_verify
        from openrlhf_srt.vllm.process_lifetime import owner_environment

        drafter = DrafterConfig.from_dict(srt_drafter)
        check_can_verify(True, withheld=drafter.withhold_drafts)
        if cpu_cores is not None:
            from openrlhf_srt.vllm.engine import prepare_cpu_environment

            prepare_cpu_environment()
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = str(cpu_cores)
            os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
        kwargs.update(drafter.engine_args(kwargs.get("additional_config")))
        kwargs["worker_extension_cls"] = EXTENSION_PATH
        kwargs["disable_log_stats"] = False
        if priority:
            kwargs["scheduling_policy"] = "priority"
        self._srt_priority = RUNAHEAD_PRIORITY if priority else 0
        # run-ahead requests in flight (each leaves when it ends or is aborted), at most
        # --srt.runahead_max_requests: srt_runahead starts no more than that
        self._ra_tasks: dict[str, asyncio.Task] = {}
        self._ra_limit = int(runahead_max_requests)
        self._rollout_tokens = 0
        self._rollout_requests = 0
        self._ra_tokens = 0
        self._ra_requests = 0
        self._prompts = PromptCounts()  # rollout samples per prompt key here (bounded)
        # trace recording (--srt.trace_dir): this engine's folder, tried before vLLM starts
        self._traces = None if not trace_dir else StepTraceWriter(
            check_trace_dir(Path(trace_dir) / f"engine{engine_index}", "--srt.trace_dir"))
        self._trace_step: int | None = None  # the training step being recorded
        self._trace_version = 0
        self._trace_used: dict[int, int] = {}  # sample indices used per prompt key this step
        # this actor owns the engine: its EngineCore and workers end when it does (an actor
        # killed by Ray's or the kernel's OOM killer left them alive under PID 1)
        os.environ.update(owner_environment())
        await super().__init__(*args, **kwargs)
        if self._traces is not None:
            self.executor = TracingExecutor(self.executor, self)
        self.srt_handle = AsyncSRTEngineHandle(self.llm)
        await self.srt_handle.bind()

    # ------------------------------------------------------------------ rollouts
    async def generate_responses(self, prompt, label, sampling_params, max_length,
                                 hf_tokenizer, num_samples: int = 1, images=None):
        """OpenRLHF's method, with every request of the episode (every turn of a multi-turn
        agent) filed in the tree of the episode's prompt."""
        from copy import deepcopy

        from openrlhf_srt.vllm.proposer import PROMPT_KEY_ARG

        params = deepcopy(sampling_params)
        key = prompt_key(episode_prompt_ids(hf_tokenizer, prompt))
        params.extra_args = {**(params.extra_args or {}), PROMPT_KEY_ARG: key}
        return await super().generate_responses(prompt, label, params, max_length,
                                                hf_tokenizer, num_samples, images)

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        out = await super().generate(prompt_token_ids, sampling_params, multi_modal_data)
        turns = _EPISODE_FINISH.get()
        if turns is not None:  # recording: the episode's finish reason is its last turn's
            turns.append(out.outputs[0].finish_reason)
        self._rollout_requests += 1
        self._rollout_tokens += sum(len(o.token_ids) for o in out.outputs)
        self._prompts.add(prompt_key(prompt_token_ids))
        return out

    # ------------------------------------------------------------------ run-ahead
    async def srt_runahead(self, prompts_token_ids: list[list[int]], sampling_params,
                           n: int) -> int:
        """Start n run-ahead requests per prompt, as many as fit below the in-flight limit;
        returns how many started. Their output feeds only the drafter's cache."""
        from vllm.inputs import TokensPrompt
        from vllm.utils import random_uuid

        params = runahead_params(sampling_params)
        started = 0
        for ids in prompts_token_ids:
            for _ in range(n):
                if len(self._ra_tasks) >= self._ra_limit:
                    break
                rid = f"srt-runahead-{random_uuid()}"
                coro = self._run_one(TokensPrompt(prompt_token_ids=list(ids)), params, rid)
                self._ra_tasks[rid] = asyncio.ensure_future(coro)
                started += 1
        self._ra_requests += started
        return started

    async def _run_one(self, prompt, params, rid: str) -> None:
        produced = 0
        last = None
        try:
            async for out in self.llm.generate(prompt, params, request_id=rid,
                                               priority=self._srt_priority):
                produced = len(out.outputs[0].token_ids)
                last = out.outputs[0]
        except asyncio.CancelledError:
            pass
        finally:
            self._ra_tokens += produced
            self._ra_tasks.pop(rid, None)
            if self._trace_step is not None:  # cut by the step's end: finish reason "abort"
                self._trace(prompt["prompt_token_ids"],
                            [] if last is None else list(last.token_ids),
                            None if last is None else last.finish_reason, tag="runahead")

    async def srt_abort_runahead(self) -> int:
        """Abort every run-ahead request (the step's last rollout finished), also those
        started while an abort was awaiting the engine; returns how many."""
        aborted = 0
        while self._ra_tasks:
            rids = list(self._ra_tasks)
            tasks = list(self._ra_tasks.values())
            await self.llm.abort(rids)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for rid in rids:  # a task cancelled before it ever ran never reached its finally
                self._ra_tasks.pop(rid, None)
            aborted += len(rids)
        return aborted

    def srt_request_counts(self) -> dict[str, int]:
        """Requests in the engine: all unfinished, and the run-ahead ones among them."""
        total = self.llm.output_processor.get_num_unfinished_requests()
        ra = len(self._ra_tasks)
        return {"unfinished": total, "runahead": ra, "rollout": max(0, total - ra),
                "runahead_tokens": self._ra_tokens}

    # ------------------------------------------------------------------ traces
    def srt_trace_begin(self, step: int, policy_version: int) -> None:
        """Record the training step `step`, sampled by weights `policy_version`, into its own
        file until srt_trace_end (a step left open by an error is dropped)."""
        if self._traces is None:
            return
        self._traces.begin_step(step)
        self._trace_step, self._trace_version, self._trace_used = step, policy_version, {}

    def srt_trace_end(self) -> dict[str, Any]:
        """Publish the step's file; {"records", "seconds" spent writing, "path"}."""
        if self._traces is None:
            return {}
        path = self._traces.end_step()
        self._trace_step = None
        return {**self._traces.take_counts(), "path": None if path is None else str(path)}

    def _trace(self, prompt_ids, response_ids, finish_reason, *, tag: str = "rollout",
               label=None, reward=None, extra: dict | None = None) -> None:
        if self._trace_step is None:  # not a training step (evaluation) or not recording
            return
        key = prompt_key(prompt_ids)
        index = self._trace_used.get(key, 0)  # (step, prompt key, sample index) is unique
        self._trace_used[key] = index + 1
        self._traces.write(TraceRecord(
            step=self._trace_step, prompt_key=key, prompt_token_ids=list(prompt_ids),
            sample_index=index, response_token_ids=list(response_ids),
            finish_reason=trace_finish_reason(finish_reason),
            policy_version=self._trace_version,
            label=label if label is None or isinstance(label, str) else str(label),
            reward=_finite_or_none(reward), tag=tag, extra=extra or {}))

    def _trace_episode(self, out: dict, turns: list) -> None:
        """One finished episode of OpenRLHF's executor: the prompt as the engine saw it
        (before the first action) and everything after it; a multi-turn episode's response
        holds the environment's tokens between actions too (`action_ranges` in the record,
        relative to the response). Finish reason: the last turn's."""
        obs = out["observation_tokens"]
        ranges = out.get("action_ranges") or []
        start = ranges[0][0] if ranges else len(obs)
        if start == 0:
            return  # no prompt tokens: nothing a trace can name
        extra = {}
        if len(ranges) > 1:
            extra["action_ranges"] = [[a - start, b - start] for a, b in ranges]
        self._trace(obs[:start], obs[start:], turns[-1] if turns else None,
                    label=out.get("label"), reward=out.get("reward"), extra=extra)

    # ------------------------------------------------------------------ cache and stats
    async def srt_step_stats(self) -> dict[str, Any]:
        """Drafter figures since the last call (reset), plus this actor's token counts."""
        s = dict(await self.srt_handle.stats(reset=True))
        s.update(rollout_tokens=self._rollout_tokens, rollout_requests=self._rollout_requests,
                 runahead_tokens=self._ra_tokens, runahead_started=self._ra_requests)
        self._rollout_tokens = self._rollout_requests = self._ra_tokens = self._ra_requests = 0
        return s

    def srt_prompt_counts(self) -> dict[int, int]:
        """Rollout samples generated here per prompt key (`cache.keys.prompt_key`), for the
        PROMPT_COUNTS_LIMIT prompts generated most recently."""
        return self._prompts.as_dict()

    async def srt_stats(self) -> dict[str, Any]:
        """The drafter's figures (cache, settings, counters), counters not reset."""
        return await self.srt_handle.stats()

    async def srt_set_step(self, step: int) -> None:
        await self.srt_handle.set_step(step)

    async def srt_keep_window(self, step: int, window: int) -> int:
        return await self.srt_handle.keep_window(step, window)

    async def srt_save_snapshot(self, path: str) -> None:
        await self.srt_handle.save_snapshot(path)

    async def srt_load_snapshot(self, path: str) -> None:
        await self.srt_handle.load_snapshot(path)

    async def srt_clear(self) -> None:
        await self.srt_handle.clear()


SRTRolloutActor = ray.remote(_SRTRolloutActor)


def episode_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """A prompt's token ids as OpenRLHF's agent executors tokenize it, so rollouts (all
    turns) and run-ahead of one prompt share its tree."""
    return list(tokenizer(text=prompt, add_special_tokens=False)["input_ids"])


def ray_has_gpus() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


class SRTActorLauncher:
    """Stands in for `RolloutRayActor` inside OpenRLHF's own `create_vllm_engines` (see
    rebind.py): that function keeps its placement and arguments, and each
    `.options(...).remote(**kwargs)` it makes starts an `SRTRolloutActor` with the SRT
    arguments added. On a GPU-less Ray cluster (cpu=True) engine i runs on one CPU bundle
    with its worker threads bound to core i, in float32 without native bf16, eager."""

    def __init__(self, srt: SRTConfig, *, cpu: bool, engine_overrides: dict[str, Any]):
        self.srt = srt
        self.drafter = srt.drafter_config().to_dict()  # validated with the flags
        self.cpu = cpu
        self.engine_overrides = engine_overrides
        self.started = 0
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(
            os.cpu_count() or 1)
        self.cores = sorted(cores)

    def options(self, **opts) -> _Options:
        if self.cpu:
            opts.update(num_cpus=1, num_gpus=0)
        return _Options(self, opts)

    def engine_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kw = dict(kwargs, srt_drafter=self.drafter,
                  runahead_max_requests=self.srt.runahead_max_requests,
                  priority=self.srt.runahead and self.srt.runahead_priority,
                  trace_dir=self.srt.trace_dir or None, engine_index=self.started)
        if self.cpu:
            from openrlhf_srt.vllm.engine import CPU_MEMORY_FRACTION, cpu_dtype

            kw.update(dtype=cpu_dtype("auto"), enforce_eager=True, num_gpus=0,
                      gpu_memory_utilization=CPU_MEMORY_FRACTION,
                      cpu_cores=str(self.cores[self.started % len(self.cores)]))
        kw.update(self.engine_overrides)
        self.started += 1
        return kw


class _Options:
    def __init__(self, launcher: SRTActorLauncher, opts: dict[str, Any]):
        self.launcher, self.opts = launcher, opts

    def remote(self, **kwargs):
        return SRTRolloutActor.options(**self.opts).remote(**self.launcher.engine_kwargs(kwargs))


def create_srt_engines(*args, srt: SRTConfig, cpu: bool | None = None, **kwargs):
    """OpenRLHF's `create_vllm_engines(*args, **kwargs)` (same arguments, its own code and
    placement) starting SRT engine actors. Keyword arguments it does not take go to every
    engine (e.g. max_num_seqs). cpu (None: no GPU in the Ray cluster): engines are placed on
    CPU bundles of a placement group made here."""
    import inspect

    from openrlhf.trainer.ray import vllm_engine

    from openrlhf_srt.openrlhf.rebind import rebind

    create = vllm_engine.create_vllm_engines
    signature = inspect.signature(create)
    engine_overrides = {k: kwargs.pop(k) for k in list(kwargs) if k not in signature.parameters}
    call = signature.bind(*args, **kwargs)
    call.apply_defaults()
    cpu = (not ray_has_gpus()) if cpu is None else cpu
    if call.arguments["max_images_per_prompt"] > 0:
        raise ValueError("--srt.enable does not support multimodal prompts yet "
                         "(--data.max_images_per_prompt > 0); use --srt.enable 0")
    if cpu and call.arguments["shared_pg"] is None:
        # OpenRLHF's own group asks for GPU bundles; on CPU, one CPU bundle per engine.
        n = call.arguments["num_engines"] * call.arguments["tensor_parallel_size"]
        pg = placement_group([{"CPU": 1} for _ in range(n)], strategy="PACK")
        ray.get(pg.ready())
        call.arguments["shared_pg"] = pg
    launcher = SRTActorLauncher(srt, cpu=cpu, engine_overrides=engine_overrides)
    return rebind(create, {"RolloutRayActor": launcher})(*call.args, **call.kwargs)
