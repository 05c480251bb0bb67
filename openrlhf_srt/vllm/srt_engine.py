"""Start a vLLM engine whose drafts come from the SRT tree cache.

    llm = start_srt_engine(model, srt={"min_prob": 0.1, "max_draft_tokens": 8})
    llm.generate(...)
    SRTEngineHandle(llm).stats()   # the cache owner's figures (engine_client.py)

The SRT settings (`srt_config.DrafterConfig`, or its subclass `openrlhf_srt.srt_config.SRTConfig`)
are validated here and travel in vLLM's engine config (`additional_config`), which vLLM hands
to every worker; see srt_config.py.
"""

from __future__ import annotations

from typing import Any

from openrlhf_srt.vllm.drafter_config import DrafterConfig
from openrlhf_srt.vllm.engine import EngineError, start_engine
from openrlhf_srt.vllm.engine_client import SRTEngineHandle

EXTENSION_CLASS = "openrlhf_srt.vllm.worker_extension.SRTWorkerExtension"


def start_srt_engine(model=None, srt: dict[str, Any] | DrafterConfig | None = None,
                     **kwargs: Any):
    """`engine.start_engine` with the SRT drafter, its worker extension and spec-decode
    counters on (`disable_log_stats=False`, read with `llm.get_metrics()`); returns the LLM
    with the proposer bound to the model runner."""
    cfg = DrafterConfig.from_dict(srt)
    kwargs.setdefault("disable_log_stats", False)
    kwargs.setdefault("worker_extension_cls", EXTENSION_CLASS)
    kwargs.update(cfg.engine_args(kwargs.get("additional_config")))
    llm = start_engine(model, **kwargs)
    try:
        SRTEngineHandle(llm).bind()
    except Exception as e:
        raise EngineError(f"binding the SRT proposer failed: {type(e).__name__}: {e}") from e
    return llm

