"""vLLM worker extension for OpenRLHF's rollout engines with the SRT drafter.

OpenRLHF 0.11.2 starts its engines with
`worker_extension_cls="openrlhf.trainer.ray.vllm_worker_wrap.WorkerWrap"` (weight broadcast
from the DeepSpeed actor: init_process_group, update_weight, update_weight_cuda_ipc). vLLM
takes one extension class, so SRT engines get `SRTWorkerWrap`, which inherits both
OpenRLHF's WorkerWrap and our SRTWorkerExtension (the SRT RPCs, worker_rpcs.SRTRpc) and adds
nothing. Neither base defines `__init__` and their method names do not overlap (tested).
"""

from __future__ import annotations

from openrlhf.trainer.ray.vllm_worker_wrap import WorkerWrap

from openrlhf_srt.vllm.worker_extension import SRTWorkerExtension

EXTENSION_PATH = "openrlhf_srt.openrlhf.worker.SRTWorkerWrap"


class SRTWorkerWrap(WorkerWrap, SRTWorkerExtension):
    pass
