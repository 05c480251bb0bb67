"""One training step's `srt/*` figures from the engines' reports (pure Python).

Inputs per engine (SRTRolloutActor.srt_step_stats: the drafter's counters since the last
step, reset on read, and the actor's token counts): rollout_tokens, runahead_tokens,
accepted_tokens, verified_draft_tokens, draft_tokens, cache {bytes, prompts}. Definitions (docs/metrics.md):

    G = rollout_tokens + runahead_tokens     tokens the engines generated
    A = accepted_tokens                      accepted draft tokens
    D = verified_draft_tokens                draft tokens the target model verified
    srt/accept_len      = G / (G - A)        tokens per verification step (1.0: no gain)
    srt/acceptance_rate = A / D
    srt/est_speedup     = G / ((G - A) + verify_cost * D)
"""

from __future__ import annotations

from collections.abc import Sequence


def step_metrics(stats: Sequence[dict], *, bubble_seconds: float = 0.0,
                 verify_cost: float = 0.1, home_hits: int = 0, spills: int = 0
                 ) -> dict[str, float]:
    g = sum(int(s.get("rollout_tokens", 0)) + int(s.get("runahead_tokens", 0)) for s in stats)
    a = sum(int(s.get("accepted_tokens", 0)) for s in stats)
    d = sum(int(s.get("verified_draft_tokens", 0)) for s in stats)
    steps = g - a
    out = {
        "srt/accept_len": g / steps if steps > 0 else 1.0,
        "srt/acceptance_rate": a / d if d else 0.0,
        "srt/draft_tokens": float(d),
        # drafted after the budget, verified or not (withheld drafts, drafts vLLM skipped)
        "srt/proposed_draft_tokens": float(sum(int(s.get("draft_tokens", 0)) for s in stats)),
        "srt/accepted_tokens": float(a),
        "srt/runahead_tokens": float(sum(int(s.get("runahead_tokens", 0)) for s in stats)),
        "srt/bubble_seconds": float(bubble_seconds),
        "srt/cache_bytes": float(sum(int(s.get("cache", {}).get("bytes", 0)) for s in stats)),
        "srt/cache_prompts": float(sum(int(s.get("cache", {}).get("prompts", 0))
                                       for s in stats)),
        "srt/est_speedup": g / (steps + verify_cost * d) if steps + verify_cost * d > 0 else 1.0,
    }
    if home_hits + spills:
        out["srt/route_home_share"] = home_hits / (home_hits + spills)
    return out
