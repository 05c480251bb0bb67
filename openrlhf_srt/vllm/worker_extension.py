"""Worker extension giving the engine-starting process a handle on the SRT proposer.

vLLM mixes `worker_extension_cls="openrlhf_srt.vllm.worker_extension.SRTWorkerExtension"`
into its worker class; each method below runs in every worker through
`LLM.collective_rpc("srt_...")` (one result per worker), between engine steps.

`srt_bind` must run once after the engine started (start_srt_engine does it): it hands the
model runner to the proposer, which reads request ids, prompt lengths and sampling params
from it every step. Until then the proposer drafts nothing. The cache lives in the proposer,
not in the model, so weight updates (load_weights / update_weights RPCs) leave it intact.

One worker per engine owns the cache (the rank whose drafts vLLM uses, proposer.py); every
RPC but srt_bind answers None on the other ranks, and `srt_engine.owner_result` picks the
owner's answer.
"""

from __future__ import annotations

from typing import Any


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


class CPUFixExtension:
    """Worker extension of every speculative engine on CPU (engine.start_engine adds it)."""

    def srt_cpu_fix(self) -> bool:
        """Whether the corrected CPU expand kernel is in place in this worker (installs it
        if this module's import did not); False where none is needed (GPU, Triton present)
        or the unsafe skip is set."""
        from openrlhf_srt.vllm.cpu_kernels import install_cpu_kernel_fixes

        return install_cpu_kernel_fixes()


class SRTWorkerExtension(CPUFixExtension):
    """Methods callable with `LLM.collective_rpc`; `self` is vLLM's worker."""

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
        p = self._srt_proposer()
        p.bind(self.model_runner)
        return True

    def _srt_owner(self):
        """The proposer if this worker owns the cache, else None."""
        p = self._srt_proposer()
        return p if p.owner else None

    def srt_stats(self, reset: bool = False) -> dict[str, Any] | None:
        """Cache figures, the settings in force and the proposer's counters (drafts, draft
        tokens, accepted tokens inferred from the next step's sampled tokens, time spent in
        propose)."""
        p = self._srt_owner()
        if p is None:
            return None
        s = p.stats()
        if reset:
            p.reset_counters()
        return s

    def srt_save(self, path: str) -> bool | None:
        """Write a cache snapshot (between generate calls: running sequences are saved as
        running)."""
        p = self._srt_owner()
        if p is None:
            return None
        p.save(str(path))
        return True

    def srt_load(self, path: str) -> bool | None:
        """Replace the cache by a snapshot."""
        p = self._srt_owner()
        if p is None:
            return None
        p.load(str(path))
        return True

    def srt_clear(self) -> bool | None:
        p = self._srt_owner()
        if p is None:
            return None
        p.clear()
        return True

    def srt_resize(self, byte_budget: int) -> bool | None:
        p = self._srt_owner()
        if p is None:
            return None
        p.resize(int(byte_budget))
        return True

    def srt_set_step(self, step: int) -> bool | None:
        """Training step recorded with sequences added from now on."""
        p = self._srt_owner()
        if p is None:
            return None
        p.set_step(int(step))
        return True
