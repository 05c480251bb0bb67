"""Shared fixtures. Tests that need a vLLM engine share one per session (starting one
costs 20-80 s on 2 cores); they are marked `engine`."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedded_model_path() -> str:
    from openrlhf_srt.models.embedded import ensure_embedded_model

    return str(ensure_embedded_model())


@pytest.fixture(scope="session")
def float32_engine(embedded_model_path):
    """One float32 engine for every test that compares tokens exactly."""
    from openrlhf_srt.vllm.engine import start_engine

    llm = start_engine(embedded_model_path, dtype="float32", max_model_len=2048, seed=0)
    yield llm
    del llm
