"""Per-request and per-prompt structures of the OpenRLHF engine actor stay bounded in a long
run (the actor lives for the whole training run; multi-turn prompts grow every turn)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="ray==2.55.0 is installed by `make setup` (cpu extra)")
pytest.importorskip("openrlhf", reason="openrlhf 0.11.2 is installed by `make setup`")


def test_prompt_counts_keep_the_most_recent_prompts_only():
    from openrlhf_srt.openrlhf.engines import PROMPT_COUNTS_LIMIT, PromptCounts

    assert PROMPT_COUNTS_LIMIT == PromptCounts().limit
    counts = PromptCounts(limit=100)
    for key in range(1000):  # ten times the bound, each prompt generated twice
        counts.add(key)
        counts.add(key)
    assert len(counts) == 100
    assert counts.as_dict() == {k: 2 for k in range(900, 1000)}
    counts.add(900)  # used again: now the most recent, survives the next insertion
    counts.add(5000)
    assert 900 in counts.as_dict() and 901 not in counts.as_dict()
    assert len(counts) == 100
