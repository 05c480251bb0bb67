"""vLLM worker extension for OpenRLHF's rollout engines with the SRT drafter.

OpenRLHF 0.11.2 starts its engines with
`worker_extension_cls="openrlhf.trainer.ray.vllm_worker_wrap.WorkerWrap"` (weight broadcast
from the DeepSpeed actor: init_process_group, update_weight, update_weight_cuda_ipc). vLLM
takes one extension class, so SRT engines get `SRTWorkerWrap`, which inherits both
OpenRLHF's WorkerWrap and our SRTWorkerExtension (srt_bind, srt_stats, srt_save, ...), plus
`srt_keep_window` for the --srt.window_steps sliding window. Neither base defines
`__init__` and their method names do not overlap (tested).
"""

from __future__ import annotations

from openrlhf.trainer.ray.vllm_worker_wrap import WorkerWrap

from openrlhf_srt.vllm.worker_extension import SRTWorkerExtension

EXTENSION_PATH = "openrlhf_srt.openrlhf.worker.SRTWorkerWrap"


class SRTWorkerWrap(WorkerWrap, SRTWorkerExtension):
    def srt_keep_window(self, step: int, window: int) -> int | None:
        """Drop finished sequences of training steps before `step - window + 1` (window 0:
        keep all); returns how many sequences were dropped (None: not the cache owner)."""
        p = self._srt_owner()
        if p is None:
            return None
        if window <= 0:
            return 0
        source = p.source
        drop = getattr(source, "drop_steps_before", None)
        return int(drop(int(step) - int(window) + 1)) if drop is not None else 0
