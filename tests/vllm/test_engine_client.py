"""The typed engine client against stand-in engines (no vLLM engine): it picks the cache
owner's answer, says so when none answered, and calls only RPCs the worker extension has."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from openrlhf_srt.vllm.engine_client import (
    AsyncSRTEngineHandle,
    SRTCallError,
    SRTCalls,
    SRTEngineHandle,
    owner_result,
)
from openrlhf_srt.vllm.worker_rpcs import SRTRpc

STATS = {"cache": {"prompts": 3}, "settings": {"budget": "fixed"}}

# one call of every client method: its RPC, arguments and the answer of the cache owner
CALLS = {
    "bind": (SRTRpc.BIND, (), True),
    "cpu_fix": (SRTRpc.CPU_FIX, (), True),
    "stats": (SRTRpc.STATS, (True,), STATS),
    "save_snapshot": (SRTRpc.SAVE_SNAPSHOT, ("/tmp/cache.snap",), True),
    "load_snapshot": (SRTRpc.LOAD_SNAPSHOT, ("/tmp/cache.snap",), True),
    "clear": (SRTRpc.CLEAR, (), True),
    "resize": (SRTRpc.RESIZE, (1 << 20,), True),
    "set_step": (SRTRpc.SET_STEP, (4,), True),
    "keep_window": (SRTRpc.KEEP_WINDOW, (4, 2), 7),
}
ANSWERS = {rpc.value: answer for rpc, _, answer in CALLS.values()}
EVERY_WORKER = {SRTRpc.BIND, SRTRpc.CPU_FIX}  # the RPCs every rank answers


class StandInLLM:
    """vllm.LLM's collective_rpc over three workers: worker 1 owns the cache; the others
    answer None to the cache RPCs (as SRTWorkerExtension's non-owner ranks do)."""

    def __init__(self, answers: dict[str, list] | None = None):
        self.answers = answers or {}
        self.calls: list[tuple[str, tuple, dict]] = []

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        assert type(method) is str  # a plain name travels to the workers
        self.calls.append((method, tuple(args), dict(kwargs or {})))
        if method in self.answers:
            return self.answers[method]
        answer = ANSWERS[method]
        return [answer] * 3 if method in EVERY_WORKER else [None, answer, None]


class StandInAsyncLLM(StandInLLM):
    """vLLM's AsyncLLM: the same, awaited."""

    async def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        return StandInLLM.collective_rpc(self, method, timeout, args, kwargs)


def client_methods() -> list[str]:
    return [n for n, f in vars(SRTCalls).items() if callable(f) and not n.startswith("_")]


def test_every_client_method_is_exercised_here():
    assert sorted(client_methods()) == sorted(CALLS)


def test_sync_client_returns_the_owners_answers():
    srt = SRTEngineHandle(StandInLLM())
    assert srt.stats(reset=True) == STATS
    assert srt.keep_window(4, 2) == 7
    assert srt.cpu_fix() is True
    assert srt.bind() is None
    assert srt.save_snapshot("/tmp/cache.snap") is None
    assert srt.llm.calls[:2] == [("srt_stats", (), {"reset": True}),
                                 ("srt_keep_window", (4, 2), {})]
    assert srt.llm.calls[-1] == ("srt_save_snapshot", ("/tmp/cache.snap",), {})


def test_async_client_returns_the_owners_answers():
    async def scenario():
        srt = AsyncSRTEngineHandle(StandInAsyncLLM())
        return (await srt.stats(), await srt.keep_window(4, 2), await srt.set_step(3),
                srt.llm.calls)

    stats, dropped, done, calls = asyncio.run(scenario())
    assert (stats, dropped, done) == (STATS, 7, None)
    assert [c[0] for c in calls] == ["srt_stats", "srt_keep_window", "srt_set_step"]


def test_no_owner_answer_is_a_clear_error():
    srt = SRTEngineHandle(StandInLLM({"srt_stats": [None, None]}))
    with pytest.raises(SRTCallError, match="no SRT cache owner answered: all 2 workers"):
        srt.stats()
    with pytest.raises(SRTCallError, match="expected one SRT cache owner among 3 workers"):
        owner_result([True, None, True])
    assert owner_result([None, 0, None]) == 0  # a falsy answer is still the owner's


def test_cpu_fix_and_bind_need_every_worker():
    srt = SRTEngineHandle(StandInLLM({"srt_cpu_fix": [True, False], "srt_bind": [True, None]}))
    assert srt.cpu_fix() is False
    with pytest.raises(SRTCallError, match="srt_bind answered"):
        srt.bind()


def test_every_rpc_the_client_calls_is_a_worker_extension_method():
    """A renamed server method (or client call) fails here: each call's name is an SRTRpc,
    a method of SRTWorkerExtension, and its arguments fit that method's signature."""
    from openrlhf_srt.vllm.worker_extension import SRTWorkerExtension

    llm = StandInLLM()
    srt = SRTEngineHandle(llm)
    for name, (rpc, args, _) in CALLS.items():
        getattr(srt, name)(*args)
        assert llm.calls[-1][0] == rpc
    assert {c[0] for c in llm.calls} == set(SRTRpc)  # every RPC has a client method
    for method, args, kwargs in llm.calls:
        server = getattr(SRTWorkerExtension, method, None)
        assert callable(server), f"SRTWorkerExtension has no RPC {method}"
        inspect.signature(server).bind(SRTWorkerExtension(), *args, **kwargs)
