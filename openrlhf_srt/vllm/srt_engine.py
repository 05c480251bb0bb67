"""Start a vLLM engine whose drafts come from the SRT tree cache.

    llm = start_srt_engine(model, srt={"min_prob": 0.1}, num_speculative_tokens=8)
    llm.generate(...)
    llm.collective_rpc("srt_stats")   # one dict per worker

The SRT settings (`srt_config.SRTConfig` fields) are validated here, then passed to the worker
as JSON in the environment variable OPENRLHF_SRT_PROPOSER, which vLLM's spawned engine
processes inherit; the variable is restored after the engine started, so engines started
later in the same process get their own settings.
"""

from __future__ import annotations

from typing import Any

from openrlhf_srt.vllm.engine import EngineError, environment, start_engine
from openrlhf_srt.vllm.srt_config import CONFIG_ENV, SRTConfig

PROPOSER_CLASS = "openrlhf_srt.vllm.proposer.SRTProposer"
EXTENSION_CLASS = "openrlhf_srt.vllm.worker_extension.SRTWorkerExtension"
DEFAULT_NUM_SPECULATIVE_TOKENS = 8


def srt_speculative_config(num_speculative_tokens: int = DEFAULT_NUM_SPECULATIVE_TOKENS
                           ) -> dict[str, Any]:
    if not isinstance(num_speculative_tokens, int) or not 1 <= num_speculative_tokens <= 128:
        raise ValueError("num_speculative_tokens must be an integer in [1, 128] (vLLM's "
                         f"limit), got {num_speculative_tokens!r}")
    return {"method": "custom_class", "model": PROPOSER_CLASS,
            "num_speculative_tokens": num_speculative_tokens}


def validate_srt_config(srt: dict[str, Any] | SRTConfig | None) -> SRTConfig:
    cfg = SRTConfig.from_dict(srt)
    if cfg.source is None:  # the tree cache checks its own ranges
        from openrlhf_srt.cache import CacheConfig

        CacheConfig(max_depth=cfg.max_depth, byte_budget=cfg.byte_budget, rule=cfg.rule,
                    min_prob=float(cfg.min_prob), global_weight=float(cfg.global_weight))
    return cfg


def start_srt_engine(model=None, srt: dict[str, Any] | SRTConfig | None = None, *,
                     num_speculative_tokens: int = DEFAULT_NUM_SPECULATIVE_TOKENS,
                     **kwargs: Any):
    """`engine.start_engine` with the SRT drafter, its worker extension and spec-decode
    counters on (`disable_log_stats=False`, read with `llm.get_metrics()`); returns the LLM
    with the proposer bound to the model runner."""
    cfg = validate_srt_config(srt)
    kwargs.setdefault("disable_log_stats", False)
    kwargs["speculative_config"] = srt_speculative_config(num_speculative_tokens)
    kwargs["worker_extension_cls"] = EXTENSION_CLASS
    with environment(**{CONFIG_ENV: cfg.to_env()}):
        llm = start_engine(model, **kwargs)
    try:
        llm.collective_rpc("srt_bind")
    except Exception as e:
        raise EngineError(f"binding the SRT proposer failed: {type(e).__name__}: {e}") from e
    return llm


def srt_stats(llm, reset: bool = False) -> dict[str, Any]:
    """The proposer's figures (first worker; one worker per engine on CPU and TP=1)."""
    return llm.collective_rpc("srt_stats", kwargs={"reset": reset})[0]
