"""Push a trainer's new weights into a running vLLM engine, without restarting it.

The trainer writes its weights as a Hugging Face safetensors folder (on tmpfs when there is
one) and every worker reloads them in place through vLLM's public worker method
`reload_weights(weights_path=...)`, which re-runs the platform's weight processing (on CPU
the GEMM weights are repacked for oneDNN, so writing into parameters is not enough). Then
the prefix cache is reset: KV blocks computed with the old weights must not be reused.
The SRT tree cache lives in the proposer, not in the model, and survives the update.

The folder is named for the process that writes it (`process_lifetime.owned_tempdir`): one a
killed trainer left behind is removed by its engine's workers as they exit, or else by the
next run (`process_lifetime.remove_orphaned_tempdirs`).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from openrlhf_srt.vllm.pause_points import pause_at
from openrlhf_srt.vllm.process_lifetime import owned_tempdir

STAGING_KIND = "weights"  # the folders are /dev/shm/openrlhf_srt_weights_<pid>-<start>_*


def push_weights(llm, model, staging_dir: str | Path | None = None) -> float:
    """Load `model`'s (a transformers PreTrainedModel) weights into `llm`; returns seconds."""
    start = time.monotonic()
    own_dir = staging_dir is None
    folder = owned_tempdir(STAGING_KIND) if own_dir else Path(staging_dir)
    try:
        model.save_pretrained(folder, safe_serialization=True)
        pause_at("weight_push")
        llm.collective_rpc("reload_weights", kwargs={"weights_path": str(folder),
                                                     "is_checkpoint_format": True})
        llm.reset_prefix_cache()
    finally:
        if own_dir:
            shutil.rmtree(folder, ignore_errors=True)
    return time.monotonic() - start
