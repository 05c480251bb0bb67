"""Worker extension giving the engine-starting process a handle on the SRT proposer.

vLLM mixes `worker_extension_cls="openrlhf_srt.vllm.worker_extension.SRTWorkerExtension"`
into its worker class; each `srt_*` method below runs in every worker through
`collective_rpc` (one result per worker), between engine steps. Their names are
`worker_rpcs.SRTRpc`; `engine_client` (SRTEngineHandle, AsyncSRTEngineHandle) is the only
caller.

`srt_bind` must run once after the engine started (start_srt_engine does it): it hands the
model runner to the proposer, which reads request ids, prompt lengths and sampling params
from it every step. Until then the proposer drafts nothing. The cache lives in the proposer,
not in the model, so weight updates (load_weights / update_weights RPCs) leave it intact.

One worker per engine owns the cache (the rank whose drafts vLLM uses, proposer.py); every
RPC but srt_bind and srt_cpu_fix answers None on the other ranks (`_cache_owner_only`), and
`engine_client.owner_result` picks the owner's answer.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from openrlhf_srt.vllm.process_lifetime import EngineLifetimeExtension


def _install_cpu_fix_at_import() -> bool:
    """vLLM imports this module in each worker right after the platform registered its CPU
    kernel fallbacks and before any drafter or model is built: the point where the corrected
    expand kernel (cpu_kernels.py) can be registered for every drafter, vLLM's own included."""
    try:
        from openrlhf_srt.vllm.cpu_kernels import install_cpu_kernel_fixes

        return install_cpu_kernel_fixes()
    except ImportError:  # imported without vLLM (docs, tests of other layers)
        return False


_install_cpu_fix_at_import()


class CPUFixExtension(EngineLifetimeExtension):
    """Worker extension of every speculative engine on CPU (engine.start_engine adds it);
    like every extension of ours, its workers end with the engine's starter."""

    def srt_cpu_fix(self) -> bool:
        """Whether the corrected CPU expand kernel is in place in this worker (installs it
        if this module's import did not); False where none is needed (GPU, Triton present)
        or the unsafe skip is set."""
        from openrlhf_srt.vllm.cpu_kernels import install_cpu_kernel_fixes

        return install_cpu_kernel_fixes()


def _cache_owner_only(rpc):
    """An RPC about the cache: the owner's proposer runs it (passed after self); the other
    ranks hold no cache and answer None. The owner's answer is never None (True when the
    method has nothing to return), so the client can tell it apart."""

    @functools.wraps(rpc)
    def on_owner(self, *args, **kwargs):
        p = self._srt_proposer()
        if not p.owner:
            return None
        result = rpc(self, p, *args, **kwargs)
        return True if result is None else result

    # the signature callers see: no proposer to pass; True for nothing, None off the owner
    sig = inspect.signature(rpc)
    self_param, _, *params = sig.parameters.values()
    answer = "bool" if sig.return_annotation in (None, "None") else sig.return_annotation
    on_owner.__signature__ = sig.replace(parameters=[self_param, *params],
                                         return_annotation=f"{answer} | None")
    return on_owner


class SRTWorkerExtension(CPUFixExtension):
    """Methods callable with `collective_rpc` (names: worker_rpcs.SRTRpc); `self` is vLLM's
    worker."""

    def _srt_proposer(self):
        from openrlhf_srt.vllm.proposer import SRTProposer

        runner = getattr(self, "model_runner", None)
        drafter = getattr(runner, "drafter", None)
        if not isinstance(drafter, SRTProposer):
            raise RuntimeError(  # noqa: TRY004 - a misconfigured engine, not a bad argument
                "this engine's drafter is not SRTProposer (start it with "
                "openrlhf_srt.vllm.srt_engine.start_srt_engine or speculative_config "
                "method='custom_class', model='openrlhf_srt.vllm.proposer.SRTProposer')"
            )
        return drafter

    def srt_bind(self) -> bool:
        """Give the proposer the model runner (request ids, prompt lengths, params)."""
        self._srt_proposer().bind(self.model_runner)
        return True

    @_cache_owner_only
    def srt_stats(self, p, reset: bool = False) -> dict[str, Any]:
        """Cache figures, the settings in force and the proposer's counters (drafts, draft
        tokens, accepted tokens inferred from the next step's sampled tokens, time spent in
        propose)."""
        s = p.stats()
        if reset:
            p.reset_counters()
        return s

    @_cache_owner_only
    def srt_save_snapshot(self, p, path: str) -> None:
        """Write a cache snapshot (between generate calls; the sequences of requests the
        runner no longer holds are finished first, SRTProposer.save)."""
        p.save(str(path))

    @_cache_owner_only
    def srt_load_snapshot(self, p, path: str) -> None:
        """Replace the cache by a snapshot's contents, under this engine's settings
        (SRTProposer.load)."""
        p.load(str(path))

    @_cache_owner_only
    def srt_clear(self, p) -> None:
        p.clear()

    @_cache_owner_only
    def srt_resize(self, p, byte_budget: int) -> None:
        p.resize(int(byte_budget))

    @_cache_owner_only
    def srt_set_step(self, p, step: int) -> None:
        """Training step recorded with sequences added from now on."""
        p.set_step(int(step))

    @_cache_owner_only
    def srt_keep_window(self, p, step: int, window: int) -> int:
        """Sliding window (--srt.window_steps): drop finished sequences of training steps
        before `step - window + 1` (window 0: keep all); returns how many were dropped."""
        if window <= 0:
            return 0
        return p.drop_steps_before(int(step) - int(window) + 1)
