"""Push a trainer's new weights into a running vLLM engine, without restarting it.

The trainer writes its weights as a Hugging Face safetensors folder (on tmpfs when there is
one) and every worker reloads them in place through vLLM's public worker method
`reload_weights(weights_path=...)`, which re-runs the platform's weight processing (on CPU
the GEMM weights are repacked for oneDNN, so writing into parameters is not enough). Then
the prefix cache is reset: KV blocks computed with the old weights must not be reused.
The SRT tree cache lives in the proposer, not in the model, and survives the update.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path


def staging_root() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() else Path(tempfile.gettempdir())


def push_weights(llm, model, staging_dir: str | Path | None = None) -> float:
    """Load `model`'s (a transformers PreTrainedModel) weights into `llm`; returns seconds."""
    start = time.monotonic()
    own_dir = staging_dir is None
    folder = Path(tempfile.mkdtemp(prefix="openrlhf_srt_weights_", dir=staging_root())
                  if own_dir else staging_dir)
    try:
        model.save_pretrained(folder, safe_serialization=True)
        llm.collective_rpc("reload_weights", kwargs={"weights_path": str(folder),
                                                     "is_checkpoint_format": True})
        llm.reset_prefix_cache()
    finally:
        if own_dir:
            shutil.rmtree(folder, ignore_errors=True)
    return time.monotonic() - start
