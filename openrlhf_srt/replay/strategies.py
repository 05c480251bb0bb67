"""The named strategies of the replay simulator (docs/replay.md has the table).

``make_strategies(names, backend, ...)`` builds them with shared settings: tree depth, draft
budget, minimum path probability, ``max_spec_factor`` (drafts at most factor x match
length tokens, as vLLM's ``suffix`` method does) and path or tree drafts; the ``default``
strategies fix their own drafting settings (``DEFAULT_DRAFTING``) and ignore these three. The defaults are the reference settings of
shared/data/README.md: depth 24, 16 tokens, min probability 0.1, factor 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from openrlhf_srt.drafting.budget import BudgetConfig
from openrlhf_srt.replay import combine
from openrlhf_srt.replay.backends import tree_factory
from openrlhf_srt.replay.drafters import NgramDrafter, TreeDrafter
from openrlhf_srt.replay.simulator import Budget, RunAhead, Strategy
from openrlhf_srt.replay.suffix_tree import SuffixTree


@dataclass(frozen=True)
class Common:
    max_depth: int = 24
    budget: int = 16
    min_prob: float = 0.1
    factor: float = 1.0
    tree: bool = False  # draft token trees instead of single paths


# Drafting settings of the recommended rule; they override the common settings.
DEFAULT_DRAFTING = {"factor": 1000.0, "min_prob": 0.0}
DEFAULT_MERGE = combine.Merge(continued=True, support=1, max_match=3, backoff=0.5)

# name -> (description, TreeDrafter keyword arguments or None for n-gram, extras)
STRATEGIES: dict[str, tuple[str, dict | None, dict]] = {
    "global": ("one global tree over all prompts' responses, online (SuffixDecoding, vLLM suffix)",
               {"prompt_mode": None, "use_global": True}, {}),
    "srt": ("per-prompt trees, earlier steps + own and sibling tokens online (SRT)",
            {"prompt_mode": "online"}, {}),
    "history": ("per-prompt trees of earlier steps' finished responses only (RhymeRL)",
                {"prompt_mode": "history"}, {}),
    "best": ("per-prompt (online) and global trees, the higher-scoring draft",
             {"prompt_mode": "online", "use_global": True}, {}),
    "ngram": ("n-gram lookup in the own prompt + response (vLLM ngram)", None, {}),
    "das": (("per-prompt trees over a window of the last W steps, online, with DAS's "
             "length-aware budget"), {"prompt_mode": "window", "window": 1},
            {"length_aware": True}),
    "srt-runahead": ("SRT plus simulated run-ahead of the next step's prompts",
                     {"prompt_mode": "online"}, {"runahead": RunAhead()}),
    "merge": ("per-prompt (online) and global trees, counts pooled (weights 1/1/1)",
              {"prompt_mode": "online", "use_global": True, "combiner": combine.Merge()}, {}),
    # The recommended default (docs/replay.md, "Research"): counts of the local, per-prompt
    # and global trees pooled at the longest context of at most 3 tokens that continues, plus
    # its shorter suffixes' counts at half weight per token, p = count / continued count, a
    # 16-node draft tree, no length cap, no min_prob.
    "default": ("recommended: pooled counts, context <= 3 tokens with back-off, draft tree",
                {"prompt_mode": "online", "use_global": True, "combiner": DEFAULT_MERGE,
                 **DEFAULT_DRAFTING, "tree_spec": True}, {}),
    "default-path": ("the recommended rule with single-path drafts (chain verifiers)",
                     {"prompt_mode": "online", "use_global": True,
                      "combiner": DEFAULT_MERGE, **DEFAULT_DRAFTING, "tree_spec": False},
                     {}),
    "merge-best": ("pooled counts at every match length, best-scoring one, draft tree",
                   {"prompt_mode": "online", "use_global": True, "combiner": combine.Merge(),
                    **DEFAULT_DRAFTING, "tree_spec": True}, {}),
}

# Designs replayed on the project's cache with its own rules: design -> (description,
# CacheDrafter settings, extras). Each runs as "native-<design>" on the native cache and as
# "reference-<design>" on its pure-Python reference (slow; for checking the native one).
CACHE_DESIGNS: dict[str, tuple[str, dict, dict]] = {
    "global": ("rule global", {"rule": "global"}, {}),
    "srt": ("rule prompt (per-prompt tree, online)", {"rule": "prompt"}, {}),
    "history": ("rule prompt, a step's sequences inserted after it",
                {"rule": "prompt", "history": True}, {}),
    "best": ("rule best (per-prompt or global draft)", {"rule": "best"}, {}),
    "merge": ("rule merge (pooled counts)", {"rule": "merge"}, {}),
    "das": ("rule prompt over a window of the last W = 1 steps, DAS's length-aware budget",
            {"rule": "prompt", "window": 1}, {"length_aware": True}),
    "srt-runahead": ("rule prompt plus simulated run-ahead of the step's prompts",
                     {"rule": "prompt"}, {"runahead": RunAhead()}),
    # The recommended default (docs/replay.md, "Research"): depth 18 at budget 16 caps the
    # matched context at 2 tokens.
    "default": ("recommended: rule merge, context <= 2 tokens, draft tree",
                {"rule": "merge", "max_depth": 18, "min_prob": 0.0, "tree": True}, {}),
}
CACHES = {"native": "native cache", "reference": "pure-Python reference of the native cache"}
CACHE_STRATEGIES: dict[str, tuple[str, dict, dict]] = {
    f"{cache}-{design}": (f"{what}, {desc}", {**kw, "reference": cache == "reference"}, extras)
    for cache, what in CACHES.items() for design, (desc, kw, extras) in CACHE_DESIGNS.items()
}

ANCHORS = ("global", "srt", "history")


def make_strategies(names: Sequence[str], backend: str = "python",
                    common: Common | None = None) -> list[Strategy]:
    common = common or Common()
    unknown = [n for n in names if n not in STRATEGIES and n not in CACHE_STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from "
                         f"{sorted(STRATEGIES) + sorted(CACHE_STRATEGIES)}")
    factory = tree_factory(backend) if any(n in STRATEGIES for n in names) else None
    out = []
    for name in names:
        if name in CACHE_STRATEGIES:
            from openrlhf_srt.replay.backends import CacheDrafter

            _, kwargs, extras = CACHE_STRATEGIES[name]
            kw = {"max_depth": common.max_depth, "min_prob": common.min_prob, "tree": common.tree}
            kw.update(kwargs)
            make = partial(CacheDrafter, name, **kw)
            make()  # fail early (ImportError) when the native cache is not built
        elif STRATEGIES[name][1] is None:
            _, _, extras = STRATEGIES[name]
            make = partial(NgramDrafter, name=name)
        else:
            _, kwargs, extras = STRATEGIES[name]
            kw = {"max_depth": common.max_depth, "min_prob": common.min_prob,
                  "factor": common.factor, "tree_spec": common.tree, "tree_factory": factory}
            kw.update(kwargs)
            if isinstance(kw.get("combiner"), combine.Merge):
                kw["tree_factory"] = SuffixTree  # pooled counts need the Python tree's nodes
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
    return STRATEGIES[name][0] if name in STRATEGIES else CACHE_STRATEGIES[name][0]


__all__ = ["ANCHORS", "CACHE_STRATEGIES", "STRATEGIES", "Common", "combine", "describe", "make_strategies"]
