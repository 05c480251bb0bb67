"""Worker extension giving the engine-starting process a handle on the SRT proposer.

vLLM mixes `worker_extension_cls="openrlhf_srt.vllm.worker_extension.SRTWorkerExtension"`
into its worker class; each method below runs in every worker through
`LLM.collective_rpc("srt_...")` (one result per worker), between engine steps.

`srt_bind` must run once after the engine started (start_srt_engine does it): it hands the
model runner to the proposer, which reads request ids, prompt lengths and sampling params
from it every step. Until then the proposer drafts nothing. The cache lives in the proposer,
not in the model, so weight updates (load_weights / update_weights RPCs) leave it intact.
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

    def srt_stats(self, reset: bool = False) -> dict[str, Any]:
        """Cache figures and the proposer's counters (drafts, draft tokens, accepted tokens
        inferred from the next step's sampled tokens, time spent in propose)."""
        p = self._srt_proposer()
        s = p.stats()
        if reset:
            p.reset_counters()
        return s

    def srt_save(self, path: str) -> bool:
        """Write a cache snapshot (between generate calls: running sequences are saved as
        running)."""
        self._srt_proposer().save(str(path))
        return True

    def srt_load(self, path: str) -> bool:
        """Replace the cache by a snapshot."""
        self._srt_proposer().load(str(path))
        return True

    def srt_clear(self) -> bool:
        self._srt_proposer().clear()
        return True

    def srt_resize(self, byte_budget: int) -> bool:
        self._srt_proposer().resize(int(byte_budget))
        return True

    def srt_set_step(self, step: int) -> bool:
        """Training step recorded with sequences added from now on."""
        self._srt_proposer().set_step(int(step))
        return True
