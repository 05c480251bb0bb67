"""The engine helper: a clear error without vLLM, and the converted model gives the same
greedy tokens in transformers and in vLLM (float32, so batching cannot change numerics)."""

from __future__ import annotations

import builtins
import os

import pytest

from openrlhf_srt.vllm import engine as engine_mod

GREEDY_PROMPTS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have now?",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a Python list comprehension is.",
    "A shirt costs $20 and is 25% off. What is the price now?",
    "Name three prime numbers.",
    "Sara is 12 years old. Her brother is twice her age. How old is he?",
    "Translate 'good morning' into Spanish.",
]
GREEDY_TOKENS = 48


def test_missing_vllm_gives_one_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(engine_mod.EngineError, match="make setup"):
        engine_mod.start_engine("embedded")


def test_cpu_and_gpu_settings(embedded_model_path, monkeypatch):
    cpu = engine_mod.engine_kwargs(embedded_model_path, cpu=True, max_num_seqs=8)
    assert cpu["enforce_eager"] is True
    assert cpu["gpu_memory_utilization"] == engine_mod.CPU_MEMORY_FRACTION
    assert cpu["max_num_seqs"] == 8 and cpu["model"] == embedded_model_path
    gpu = engine_mod.engine_kwargs(embedded_model_path, cpu=False, enforce_eager=True)
    assert gpu["gpu_memory_utilization"] == engine_mod.GPU_MEMORY_FRACTION
    assert gpu["enforce_eager"] is True  # caller overrides win
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    engine_mod.prepare_cpu_environment()
    import os

    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == str(engine_mod.CPU_KV_CACHE_GIB)
    lib = engine_mod.intel_openmp_path()
    assert lib is not None, "intel-openmp (a vllm-cpu dependency) should provide libiomp5.so"
    assert os.environ["LD_PRELOAD"].split(":")[0] == str(lib)


@pytest.mark.engine
def test_greedy_tokens_match_transformers(float32_engine, embedded_model_path, greedy_reference):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import SamplingParams

    from openrlhf_srt.data.prompts import render_prompt

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path)
    prompts = [render_prompt(tokenizer, p) for p in GREEDY_PROMPTS]
    outs = float32_engine.generate(
        [{"prompt_token_ids": ids} for ids in prompts],
        SamplingParams(temperature=0, max_tokens=GREEDY_TOKENS, ignore_eos=True),
        use_tqdm=False,
    )
    model = AutoModelForCausalLM.from_pretrained(embedded_model_path, dtype=torch.float32)
    model.eval()
    for ids, out in zip(prompts, outs):
        ref = greedy_reference(model, ids, GREEDY_TOKENS)
        assert list(out.outputs[0].token_ids) == ref, tokenizer.decode(ref)


def test_native_bf16_flags_are_read_from_cpuinfo():
    from openrlhf_srt.vllm import engine

    avx2 = "processor : 0\nflags\t\t: fpu sse avx2 fma\n"
    amx = "processor : 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n"
    assert engine.native_bf16_flags(avx2) == []
    assert engine.native_bf16_flags(amx) == ["avx512_bf16", "amx_bf16"]
    assert engine.native_bf16_flags("no flags line\n") == []


def test_cpu_dtype_auto_follows_the_bf16_switch(cpu_bf16, embedded_model_path):
    from openrlhf_srt.vllm import engine

    assert engine.cpu_has_native_bf16() is cpu_bf16
    expected = "bfloat16" if cpu_bf16 else "float32"
    assert engine.cpu_dtype("auto") == expected
    assert engine.cpu_dtype("bfloat16") == "bfloat16"  # an explicit dtype is kept
    assert engine.cpu_dtype("float32") == "float32"
    kw = engine.engine_kwargs(embedded_model_path, cpu=True)
    assert kw["dtype"] == expected and kw["enforce_eager"]
    assert engine.engine_kwargs(embedded_model_path, cpu=False)["dtype"] == "auto"  # GPU: vLLM's


def test_cpu_bf16_switch_unset_detects_and_bad_values_are_named(monkeypatch):
    from openrlhf_srt.vllm import engine

    monkeypatch.delenv(engine.CPU_BF16_ENV, raising=False)
    native, why = engine.cpu_bf16_decision()
    assert native is bool(engine.native_bf16_flags())
    assert ("the CPU has" in why) and engine.CPU_BF16_ENV not in why
    monkeypatch.setenv(engine.CPU_BF16_ENV, "")
    assert engine.cpu_bf16_decision() == (native, why)
    monkeypatch.setenv(engine.CPU_BF16_ENV, "yes")
    with pytest.raises(ValueError, match="OPENRLHF_SRT_CPU_BF16 must be 1.*'yes'"):
        engine.cpu_has_native_bf16()


def test_verification_that_cannot_be_right_is_refused(monkeypatch):
    """A speculative engine whose drafts would be verified where verification is broken
    (vLLM 0.29 on CPU) is refused before any worker starts; withheld drafts are allowed."""
    from openrlhf_srt.vllm import engine

    monkeypatch.setattr(engine, "cpu_verification_problem", lambda: "vLLM 0.29.0 on CPU ...")
    with pytest.raises(engine.EngineError, match="vLLM 0.29.0 on CPU"):
        engine.check_can_verify(True)
    engine.check_can_verify(True, withheld=True)
    engine.check_can_verify(False)


@pytest.mark.engine
def test_this_vllm_verifies_on_cpu_or_refuses_naming_its_version(embedded_model_path):
    """Both lanes run this: on vllm-cpu 0.32 the kernel fix goes through the public
    dispatcher and nothing is refused; on vllm-cpu 0.29 (no such hook) an SRT engine that
    would verify drafts is refused with the versions named, before any worker starts."""
    import vllm

    from openrlhf_srt.vllm import cpu_kernels, engine
    from openrlhf_srt.vllm.srt_engine import start_srt_engine

    problem = engine.cpu_verification_problem()
    if cpu_kernels.fix_available():
        assert problem is None
        return
    assert f"vLLM {vllm.__version__} on CPU cannot verify" in problem and "0.32" in problem
    with pytest.raises(engine.EngineError, match=f"vLLM {vllm.__version__} on CPU"):
        start_srt_engine(embedded_model_path, srt={"max_draft_tokens": 2})


def test_environment_restores_variables(monkeypatch):
    from openrlhf_srt.vllm.engine import environment

    monkeypatch.setenv("SRT_TEST_A", "old")
    monkeypatch.delenv("SRT_TEST_B", raising=False)
    try:
        with environment(SRT_TEST_A="new", SRT_TEST_B="b", SRT_TEST_C=None):
            assert os.environ["SRT_TEST_A"] == "new" and os.environ["SRT_TEST_B"] == "b"
            raise KeyError("boom")
    except KeyError:
        pass
    assert os.environ["SRT_TEST_A"] == "old" and "SRT_TEST_B" not in os.environ
    assert "SRT_TEST_C" not in os.environ


def test_all_cpu_cores_lists_this_process_affinity():
    from openrlhf_srt.vllm.engine import all_cpu_cores

    cores = [int(c) for c in all_cpu_cores().split(",")]
    assert cores == sorted(os.sched_getaffinity(0))


# A process that starts a plain engine (no speculation: the baseline's kind, which had no
# worker extension before) and waits; the test SIGKILLs it.
_ENGINE_OWNER = """
import sys, time
from openrlhf_srt.vllm.engine import start_engine
llm = start_engine(sys.argv[1], dtype="float32", max_model_len=512, max_num_seqs=4)
print("engine ready", flush=True)
time.sleep(600)
"""


@pytest.mark.engine
def test_engine_processes_die_with_a_sigkilled_starter(embedded_model_path, descendants,
                                                       survivors):
    """vLLM's EngineCore does not watch the process that spawned it: before our worker
    extension's watchdog (process_lifetime.py), EngineCore and its worker lived on under
    PID 1 after the trainer was SIGKILLed."""
    import signal
    import subprocess
    import sys

    owner = subprocess.Popen([sys.executable, "-c", _ENGINE_OWNER, embedded_model_path],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    engine_procs: list = []
    try:
        for line in owner.stdout:  # vLLM logs to stdout too
            if line.strip() == "engine ready":
                break
        else:
            pytest.fail(f"the engine did not start (exit {owner.wait()})")
        engine_procs = descendants(owner.pid)
        names = [cmd for _, cmd in engine_procs]
        print("engine processes:", names)
        assert any(cmd.startswith("VLLM::EngineCore") for cmd in names)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        assert survivors(engine_procs) == []
    finally:
        owner.kill()
        owner.wait()
        survivors(engine_procs, 0)  # a check failed before the wait: nothing left behind
