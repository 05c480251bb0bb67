"""What a trace set holds, in numbers: tokens, response lengths, and how much of each
response had already occurred in earlier responses to the same prompt (what a per-prompt
cache can draft from). Pure Python; used by `make demo` and tools/collect_traces.py."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from openrlhf_srt.data.traces import TraceRecord

CONTEXT_TOKENS = 4  # a position counts as "seen" when its previous 4 tokens occurred before


@dataclass
class StepSummary:
    step: int
    responses: int
    tokens: int
    truncated: int
    mean_reward: float | None
    seen_fraction: float  # positions whose 4-token context occurred earlier for the prompt
    top1_fraction: float  # of those, the most frequent earlier continuation was the token


def _ordered(records: list[TraceRecord]) -> list[TraceRecord]:
    return sorted(records, key=lambda r: (r.step, r.sample_index))


def summarize_steps(records: list[TraceRecord], k: int = CONTEXT_TOKENS) -> list[StepSummary]:
    """Per step figures; 'earlier' means an earlier step or a lower sample index."""
    if not records:
        raise ValueError("no trace records to summarize")
    # prompt -> context tuple -> Counter of next tokens, over all earlier responses
    seen: dict[int, dict[tuple, Counter]] = defaultdict(lambda: defaultdict(Counter))
    by_step: dict[int, list[TraceRecord]] = defaultdict(list)
    for rec in _ordered(records):
        by_step[rec.step].append(rec)
    out = []
    for step in sorted(by_step):
        n_ctx = n_top1 = n_pos = 0
        recs = by_step[step]
        for rec in recs:
            table = seen[rec.prompt_key]
            resp = rec.response_token_ids
            contexts = [tuple(resp[i - k : i]) for i in range(k, len(resp))]
            for ctx, tok in zip(contexts, resp[k:]):
                n_pos += 1
                nxt = table.get(ctx)
                if nxt:
                    n_ctx += 1
                    n_top1 += nxt.most_common(1)[0][0] == tok
            for ctx, tok in zip(contexts, resp[k:]):
                table[ctx][tok] += 1
        rewards = [r.reward for r in recs if r.reward is not None]
        out.append(
            StepSummary(
                step=step,
                responses=len(recs),
                tokens=sum(len(r.response_token_ids) for r in recs),
                truncated=sum(r.finish_reason == "length" for r in recs),
                mean_reward=float(np.mean(rewards)) if rewards else None,
                seen_fraction=n_ctx / max(n_pos, 1),
                top1_fraction=n_top1 / max(n_ctx, 1),
            )
        )
    return out


def length_histogram(lengths: list[int], bins: int = 8, width: int = 40) -> list[str]:
    """A text histogram of response lengths, one line per bin."""
    counts, edges = np.histogram(lengths, bins=bins)
    top = max(counts.max(), 1)
    return [
        f"{int(lo):5d}-{int(hi):<5d} {'#' * int(round(width * c / top)):<{width}} {c}"
        for c, lo, hi in zip(counts, edges[:-1], edges[1:])
    ]


def format_summary(records: list[TraceRecord]) -> str:
    lengths = [len(r.response_token_ids) for r in records]
    prompts = len({r.prompt_key for r in records})
    steps = summarize_steps(records)
    lines = [
        f"{len(records)} responses to {prompts} prompts over {len(steps)} steps, "
        f"{sum(lengths)} response tokens",
        f"response length: mean {np.mean(lengths):.0f}, median {np.median(lengths):.0f}, "
        f"p90 {np.percentile(lengths, 90):.0f}, max {max(lengths)}",
        *length_histogram(lengths),
        "",
        f"{'step':>4} {'responses':>9} {'tokens':>7} {'truncated':>9} {'reward':>6} "
        f"{'seen ctx':>8} {'top-1 ok':>8}",
    ]
    for s in steps:
        reward = "-" if s.mean_reward is None else f"{s.mean_reward:.2f}"
        lines.append(
            f"{s.step:>4} {s.responses:>9} {s.tokens:>7} {s.truncated:>9} {reward:>6} "
            f"{s.seen_fraction:>8.0%} {s.top1_fraction:>8.0%}"
        )
    lines.append(
        f"seen ctx: share of response positions whose previous {CONTEXT_TOKENS} tokens already "
        "occurred in an earlier response to the same prompt (earlier step or sibling);\n"
        "top-1 ok: of those, how often the most frequent earlier continuation was the next token."
    )
    return "\n".join(lines)
