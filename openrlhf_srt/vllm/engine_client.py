"""The typed client of an engine's SRT worker RPCs: every SRT call into an engine goes here.

    srt = SRTEngineHandle(llm)                # over a sync vllm.LLM
    srt.stats(reset=True); srt.set_step(3); srt.save_snapshot("cache.snap")

    srt = AsyncSRTEngineHandle(async_llm)     # over vLLM's AsyncLLM (the OpenRLHF actor)
    await srt.stats(reset=True)

Both handles have the same methods (`SRTCalls`), each one RPC of the worker extension
(`worker_extension.SRTWorkerExtension`, names in `worker_rpcs.SRTRpc`) with its arguments
and how the workers' answers become one result. vLLM returns one answer per worker; about the
cache only its owner (tensor-parallel rank 0 of the last pipeline stage) answers, the others
answer None, and `owner_result` picks the owner's answer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from openrlhf_srt.vllm.worker_rpcs import SRTRpc

__all__ = ["AsyncSRTEngineHandle", "SRTCallError", "SRTCalls", "SRTEngineHandle", "owner_result"]


class SRTCallError(RuntimeError):
    """An SRT call into an engine got no usable answer (no cache owner, or more than one)."""


def owner_result(results: list) -> Any:
    """The answer of the worker that owns the drafter's cache, the one answer among the
    workers' that is not None."""
    owned = [r for r in results if r is not None]
    if not owned:
        raise SRTCallError(f"no SRT cache owner answered: all {len(results)} workers answered "
                          "None (no worker holds a cache)")
    if len(owned) > 1:
        raise SRTCallError(f"expected one SRT cache owner among {len(results)} workers, "
                          f"got {len(owned)} answers")
    return owned[0]


def _every_worker_true(results: list) -> bool:
    return bool(results) and all(r is True for r in results)


def _owner_done(results: list) -> None:
    owner_result(results)


def _require_bound(results: list) -> None:
    if not _every_worker_true(results):
        raise SRTCallError(f"srt_bind answered {results}: True expected from every worker")


class SRTCalls:
    """Every SRT RPC into an engine, once; `_rpc` (sync or async) makes the call. On
    `AsyncSRTEngineHandle` each method returns an awaitable of the result named here."""

    def _rpc(self, rpc: SRTRpc, reduce: Callable[[list], Any], *args: Any, **kwargs: Any):
        raise NotImplementedError

    def bind(self) -> None:
        """Hand each worker's proposer its model runner (once, after the engine started)."""
        return self._rpc(SRTRpc.BIND, _require_bound)

    def cpu_fix(self) -> bool:
        """Whether every worker has the corrected CPU expand kernel in place."""
        return self._rpc(SRTRpc.CPU_FIX, _every_worker_true)

    def stats(self, reset: bool = False) -> dict[str, Any]:
        """The drafter's figures (cache, settings, counters); reset: zero the counters."""
        return self._rpc(SRTRpc.STATS, owner_result, reset=bool(reset))

    def save_snapshot(self, path: str | Path) -> None:
        """Write the cache to `path` (a path the engine's workers can reach)."""
        return self._rpc(SRTRpc.SAVE_SNAPSHOT, _owner_done, str(path))

    def load_snapshot(self, path: str | Path) -> None:
        """Replace the cache by the snapshot at `path`."""
        return self._rpc(SRTRpc.LOAD_SNAPSHOT, _owner_done, str(path))

    def clear(self) -> None:
        return self._rpc(SRTRpc.CLEAR, _owner_done)

    def resize(self, byte_budget: int) -> None:
        return self._rpc(SRTRpc.RESIZE, _owner_done, int(byte_budget))

    def set_step(self, step: int) -> None:
        """Training step recorded with the sequences added from now on."""
        return self._rpc(SRTRpc.SET_STEP, _owner_done, int(step))

    def keep_window(self, step: int, window: int) -> int:
        """Drop finished sequences of steps before `step - window + 1` (window 0: keep
        all); how many were dropped."""
        return self._rpc(SRTRpc.KEEP_WINDOW, owner_result, int(step), int(window))


class SRTEngineHandle(SRTCalls):
    """SRT calls into a sync `vllm.LLM`."""

    def __init__(self, llm):
        self.llm = llm

    def _rpc(self, rpc, reduce, *args, **kwargs):
        return reduce(self.llm.collective_rpc(rpc.value, args=args, kwargs=kwargs))


class AsyncSRTEngineHandle(SRTCalls):
    """SRT calls into vLLM's `AsyncLLM`: the same methods, each a coroutine."""

    def __init__(self, llm):
        self.llm = llm

    async def _rpc(self, rpc, reduce, *args, **kwargs):
        return reduce(await self.llm.collective_rpc(rpc.value, args=args, kwargs=kwargs))
