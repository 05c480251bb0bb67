"""Speculative-decoding counters read from a vLLM engine's own metrics.

vLLM counts drafts, draft tokens and accepted tokens for every speculative method
(`LLM(disable_log_stats=False)`, then `llm.get_metrics()`); differences between two reads
give one rollout's figures, whichever drafter ran. From them:

- tokens per verification step = generated tokens / (generated tokens - accepted tokens):
  every verification step of a request yields its accepted draft tokens plus one token
  of its own, so the steps a request took are its tokens minus its accepted tokens;
- acceptance rate = accepted tokens / draft tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

_NAMES = {
    "vllm:spec_decode_num_drafts": "drafts",
    "vllm:spec_decode_num_draft_tokens": "draft_tokens",
    "vllm:spec_decode_num_accepted_tokens": "accepted_tokens",
}


@dataclass(frozen=True)
class SpecCounters:
    drafts: int = 0
    draft_tokens: int = 0
    accepted_tokens: int = 0

    def __sub__(self, other: "SpecCounters") -> "SpecCounters":
        return SpecCounters(self.drafts - other.drafts, self.draft_tokens - other.draft_tokens,
                            self.accepted_tokens - other.accepted_tokens)


def read_spec_counters(llm) -> SpecCounters:
    """Current totals (zeros for an engine without speculation or with stats off)."""
    from vllm.v1.metrics.reader import Counter

    totals = dict.fromkeys(_NAMES.values(), 0)
    try:
        metrics = llm.get_metrics()
    except (AssertionError, RuntimeError):  # stats logging off
        return SpecCounters()
    for m in metrics:
        if isinstance(m, Counter) and m.name in _NAMES:
            totals[_NAMES[m.name]] += int(m.value)
    return SpecCounters(**totals)


def tokens_per_step(generated_tokens: int, accepted_tokens: int) -> float:
    steps = generated_tokens - accepted_tokens
    return generated_tokens / steps if steps > 0 else 1.0


def acceptance_rate(c: SpecCounters) -> float:
    return c.accepted_tokens / c.draft_tokens if c.draft_tokens else 0.0
