"""Fixtures shared by the rooms' tests (tests/<room>/ mirrors openrlhf_srt/<room>/; a room's own
fixtures live in its conftest.py). Tests that need a vLLM engine share one per session
(starting one costs 20-80 s on 2 cores); they are marked `engine`."""

from __future__ import annotations

import os

import pytest

from openrlhf_srt.vllm.engine import stop_engine

# Up to six float32 engines are alive at once in a full run (three session engines, the
# Ray engine group's two, one module engine), each ~3.9 GB resident with vLLM's 2 GiB CPU
# KV cache: over the 24 GiB of a CI machine (the OOM killer took a worker). Test prompts
# and responses fit in 1 GiB (~23k tokens of the embedded model in float32). Set before any
# engine or Ray starts, so engine processes and Ray workers inherit it.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def _verification_problem() -> str | None:
    from openrlhf_srt.vllm.engine import cpu_verification_problem

    try:
        return cpu_verification_problem()
    except ImportError:  # no vLLM at all: engine tests fail with their own message
        return None


# Where this vLLM cannot verify drafts on CPU (the vLLM 0.29 lane, `make test-vllm029`), the
# SRT engines the tests start compute every draft but hand none to vLLM
# (`withhold_drafts`), and tests marked `verifies` are skipped with the reason printed.
VERIFICATION_PROBLEM = _verification_problem()
SRT_TEST_SETTINGS = {"withhold_drafts": True} if VERIFICATION_PROBLEM else {}


def pytest_collection_modifyitems(config, items):
    if VERIFICATION_PROBLEM is None:
        return
    skip = pytest.mark.skip(reason=f"needs draft verification: {VERIFICATION_PROBLEM}")
    for item in items:
        if item.get_closest_marker("verifies"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def srt_test_settings() -> dict:
    """Extra drafter settings of every SRT engine a test starts (see SRT_TEST_SETTINGS)."""
    return dict(SRT_TEST_SETTINGS)


@pytest.fixture(params=["0", "1"], ids=["cpu_fp32", "cpu_bf16"])
def cpu_bf16(request, monkeypatch) -> bool:
    """Run a test as both kinds of CPU would (OPENRLHF_SRT_CPU_BF16=0, then =1), whatever
    this machine's flags: a branch that only one kind of CPU takes is tested on every CPU.
    The value: whether this run acts as a CPU with native bf16."""
    from openrlhf_srt.vllm.engine import CPU_BF16_ENV

    monkeypatch.setenv(CPU_BF16_ENV, request.param)
    return request.param == "1"


@pytest.fixture(scope="session")
def embedded_model_path() -> str:
    from openrlhf_srt.models.embedded import ensure_embedded_model

    return str(ensure_embedded_model())


@pytest.fixture(scope="session")
def float32_engine(embedded_model_path):
    """One float32 engine for every test that compares tokens exactly."""
    from openrlhf_srt.vllm.engine import start_engine

    llm = start_engine(embedded_model_path, dtype="float32", max_model_len=2048, seed=0)
    yield llm
    stop_engine(llm)


def _greedy_reference(model, ids, n):
    """Plain argmax decoding with transformers, through EOS like vLLM's ignore_eos
    (generate()'s min_new_tokens would mask EOS instead)."""
    import torch

    tokens, past, x = [], None, torch.tensor([ids])
    with torch.no_grad():
        for _ in range(n):
            out = model(input_ids=x, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = int(out.logits[0, -1].argmax())
            tokens.append(nxt)
            x = torch.tensor([[nxt]])
    return tokens


@pytest.fixture(scope="session")
def greedy_reference():
    """greedy_reference(model, prompt_ids, n) -> the n argmax tokens of a transformers model
    (a fixture, since a `tests` package in site-packages can shadow this folder's modules)."""
    return _greedy_reference



def _descendants(pid: int) -> list[tuple]:
    """(ProcessId, command line) of each running process below `pid` (children, theirs...)."""
    from pathlib import Path

    from openrlhf_srt.vllm.process_lifetime import ProcessId

    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        ident = ProcessId.of(p)
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if ident is not None:
            found.append((ident, cmd))
    return found


ENGINE_GONE_WITHIN_SECONDS = 60  # vLLM's shutdown on SIGTERM, else SIGKILL after the grace


def _survivors(procs: list[tuple], within: float = ENGINE_GONE_WITHIN_SECONDS) -> list[str]:
    """Waits up to `within` s for the (ProcessId, command line) pairs to exit; returns the
    command lines of those still alive, after SIGKILLing them (a failed check leaves nothing
    behind)."""
    import signal
    import time

    deadline = time.monotonic() + within
    while any(p.alive() for p, _ in procs) and time.monotonic() < deadline:
        time.sleep(0.5)
    alive = [(p, cmd) for p, cmd in procs if p.alive()]
    for p, _ in alive:
        os.kill(p.pid, signal.SIGKILL)
    return [cmd for _, cmd in alive]


@pytest.fixture(scope="session")
def survivors():
    """survivors(procs) -> command lines of the processes still alive after the engine
    shutdown's grace (they are SIGKILLed)."""
    return _survivors


@pytest.fixture(scope="session")
def descendants():
    """descendants(pid) -> [(ProcessId, command line)] of the running processes below pid
    (an engine's `VLLM::EngineCore` and `VLLM::Worker` below the process that started it)."""
    return _descendants


def _load_tool(name: str):
    """tools/<name>.py as a module. Tools are scripts, not a package: their folder goes on
    sys.path (one tool may import another, as run from tools/) and the module is registered
    under its name (dataclasses look their module up)."""
    import importlib.util
    import sys
    from pathlib import Path

    tools = Path(__file__).resolve().parents[1] / "tools"
    if str(tools) not in sys.path:
        sys.path.insert(0, str(tools))
    spec = importlib.util.spec_from_file_location(name, tools / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_tool():
    """load_tool(name) -> tools/<name>.py as a module."""
    return _load_tool


def _replay_trace(path, capsys) -> dict:
    """tools/replay.py on a trace file or directory with the native cache, quietly: its
    figures (the JSON it writes) for that path."""
    import json
    import tempfile
    from pathlib import Path

    module = _load_tool("replay")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "replay.json"
        rc = module.main([str(path), "--strategies", "native-srt", "--quiet", "--json", str(out)])
        assert rc == 0, capsys.readouterr().err
        return json.loads(out.read_text())[str(path)][0]


@pytest.fixture
def replay_trace(capsys):
    """replay_trace(path) -> tools/replay.py's figures of one strategy (native-srt) on a
    trace file or a training run's trace directory."""
    return lambda path: _replay_trace(path, capsys)
