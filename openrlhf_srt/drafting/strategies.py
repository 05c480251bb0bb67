"""The named strategies of the replay simulator (docs/replay.md has the table).

``make_strategies(names, backend, ...)`` builds them with shared settings: tree depth, draft
budget, minimum path probability and ``max_spec_factor`` (drafts at most factor x match
length tokens, as vLLM's ``suffix`` method does). The defaults are the reference settings of
shared/data/README.md: depth 24, 16 tokens, min probability 0.1, factor 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from openrlhf_srt.drafting import combine
from openrlhf_srt.drafting.backends import tree_factory
from openrlhf_srt.drafting.budget import BudgetConfig
from openrlhf_srt.drafting.drafters import NgramDrafter, TreeDrafter
from openrlhf_srt.drafting.simulate import Budget, RunAhead, Strategy


@dataclass(frozen=True)
class Common:
    max_depth: int = 24
    budget: int = 16
    min_prob: float = 0.1
    factor: float = 1.0


# name -> (description, TreeDrafter keyword arguments or None for n-gram, extras)
STRATEGIES: dict[str, tuple[str, dict | None, dict]] = {
    "global": ("one global tree over all prompts' responses, online (SuffixDecoding, vLLM "
               "suffix)", {"prompt_mode": None, "use_global": True}, {}),
    "srt": ("per-prompt trees, earlier steps + own and sibling tokens online (SRT)",
            {"prompt_mode": "online"}, {}),
    "history": ("per-prompt trees of earlier steps' finished responses only (RhymeRL)",
                {"prompt_mode": "history"}, {}),
    "best": ("per-prompt (online) and global trees, the higher-scoring draft",
             {"prompt_mode": "online", "use_global": True}, {}),
    "ngram": ("n-gram lookup in the own prompt + response (vLLM ngram)", None, {}),
    "das": ("per-prompt trees over a window of the last W steps, online, with DAS's "
            "length-aware budget", {"prompt_mode": "window", "window": 1},
            {"length_aware": True}),
    "srt-runahead": ("SRT plus simulated run-ahead of the next step's prompts",
                     {"prompt_mode": "online"}, {"runahead": RunAhead()}),
}

ANCHORS = ("global", "srt", "history")


def make_strategies(names: Sequence[str], backend: str = "python",
                    common: Common | None = None) -> list[Strategy]:
    common = common or Common()
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {sorted(STRATEGIES)}")
    factory = tree_factory(backend)
    out = []
    for name in names:
        _, kwargs, extras = STRATEGIES[name]
        if kwargs is None:
            make = partial(NgramDrafter, name=name)
        else:
            kw = dict(max_depth=common.max_depth, min_prob=common.min_prob,
                      factor=common.factor, tree_factory=factory)
            kw.update(kwargs)
            make = partial(TreeDrafter, name=name, **kw)
        if extras.get("length_aware"):
            # DAS: full budget at the traces' length cap (256), 2 tokens at the start
            cfg = BudgetConfig(rule="length_aware", max_draft_tokens=common.budget,
                               length_aware_full_at=256)
        else:
            cfg = BudgetConfig(rule="fixed", max_draft_tokens=common.budget)
        out.append(Strategy(name, make, Budget(cfg), extras.get("runahead")))
    return out


def describe(name: str) -> str:
    return STRATEGIES[name][0]


__all__ = ["ANCHORS", "STRATEGIES", "Common", "combine", "describe", "make_strategies"]
