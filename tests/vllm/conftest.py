"""Fixtures of the vllm room's tests: the exactness harness's engine pair."""

from __future__ import annotations

import pytest

from openrlhf_srt.vllm.engine import stop_engine

# Exactness harness (tests/vllm/test_exactness.py): an SRT engine and its non-speculative
# baseline, both float32 and with OpenRLHF's logprobs_mode (log-probs of the distribution
# actually sampled from: after temperature, top-k and top-p). Different engine seeds, so
# the two give independent samples. Module scope: stopped when a module is done (memory for
# the engines of later modules), and each module's SRT engine is the newest engine in the
# process while it runs: vLLM registers only the newest engine's Prometheus counters, which
# tests compare the proposer's counts with.
EXACTNESS_NUM_SPEC_TOKENS = 4


@pytest.fixture(scope="module")
def srt_float32_engine(embedded_model_path, srt_test_settings):
    """SRT speculative engine (tree-cache drafts, K=4, min_prob 0.2). Budget "fixed": every
    draft the cache offers is verified (the goodput rule would cut many on this CPU, and the
    exactness tests want as much verification as possible)."""
    from openrlhf_srt.vllm.srt_engine import start_srt_engine

    llm = start_srt_engine(
        embedded_model_path, srt={"min_prob": 0.2, "budget": "fixed",
                                  "max_draft_tokens": EXACTNESS_NUM_SPEC_TOKENS,
                                  **srt_test_settings},
        dtype="float32",
        max_model_len=1024, seed=1, logprobs_mode="processed_logprobs",
    )
    yield llm
    stop_engine(llm)


@pytest.fixture(scope="module")
def float32_processed_engine(embedded_model_path):
    """Non-speculative baseline of srt_float32_engine."""
    from openrlhf_srt.vllm.engine import start_engine

    llm = start_engine(embedded_model_path, dtype="float32", max_model_len=1024, seed=2,
                       logprobs_mode="processed_logprobs")
    yield llm
    stop_engine(llm)
