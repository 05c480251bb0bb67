"""The named strategies of the replay simulator (docs/replay.md has the table).

A strategy is a cache design replayed on one implementation:

- ``native-<design>``: the project's native cache with its own rules (the default set: those
  the batched round loop replays);
- ``reference-<design>``: the same on the cache's pure-Python reference (slow; a replay of it
  must equal the native one);
- ``arctic-<design>``: ArcticInference's suffix trees with vLLM's ``suffix`` rules, where
  arctic-inference is installed;
- ``ngram``: vLLM's n-gram lookup in the own context, no cache.

``make_strategies(names, common)`` builds them with shared settings: tree depth, draft
budget, minimum path probability, path or tree drafts, and for ``arctic-*``
``max_spec_factor`` (drafts at most factor x match length tokens, as vLLM's ``suffix`` method
does); a design may fix its own (``default``). The shared defaults are the settings the
reference figures of docs/replay.md were measured with: depth 24, 16 tokens, min
probability 0.1, factor 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from openrlhf_srt.drafting.budget import BudgetConfig
from openrlhf_srt.replay.drafters import NgramDrafter
from openrlhf_srt.replay.simulator import Budget, RunAhead, Strategy


@dataclass(frozen=True)
class Common:
    max_depth: int = 24
    budget: int = 16
    min_prob: float = 0.1
    factor: float = 1.0  # arctic-* only: ArcticInference's max_spec_factor
    tree: bool = False  # draft token trees instead of single paths
    cache_bytes: int | None = None  # native/reference caches: byte budget (None: CacheConfig's)


# Designs on the project's cache: design -> (description, CacheDrafter settings, extras).
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

# Designs on ArcticInference's trees: design -> (description, ArcticDrafter settings, extras).
ARCTIC_DESIGNS: dict[str, tuple[str, dict, dict]] = {
    "global": (("one global tree over all prompts' responses, online (SuffixDecoding, "
                "vLLM suffix)"), {"prompt_mode": None, "use_global": True}, {}),
    "srt": ("per-prompt trees, earlier steps + own and sibling tokens online (SRT)",
            {"prompt_mode": "online"}, {}),
    "history": ("per-prompt trees of earlier steps' finished responses only (RhymeRL)",
                {"prompt_mode": "history"}, {}),
    "best": ("per-prompt (online) and global trees, the higher-scoring draft",
             {"prompt_mode": "online", "use_global": True}, {}),
    "das": (("per-prompt trees over a window of the last W = 1 steps, online, DAS's "
             "length-aware budget"), {"prompt_mode": "window", "window": 1},
            {"length_aware": True}),
    "srt-runahead": ("SRT plus simulated run-ahead of the step's prompts",
                     {"prompt_mode": "online"}, {"runahead": RunAhead()}),
}

# name -> (description, implementation, drafter settings, extras)
STRATEGIES: dict[str, tuple[str, str, dict, dict]] = {
    **{f"native-{d}": (f"native cache, {desc}", "native", kw, ex)
       for d, (desc, kw, ex) in CACHE_DESIGNS.items()},
    **{f"reference-{d}": (f"pure-Python reference of the native cache, {desc}", "reference",
                          kw, ex)
       for d, (desc, kw, ex) in CACHE_DESIGNS.items()},
    **{f"arctic-{d}": (f"ArcticInference, {desc}", "arctic", kw, ex)
       for d, (desc, kw, ex) in ARCTIC_DESIGNS.items()},
    "ngram": ("n-gram lookup in the own prompt + response (vLLM ngram)", "ngram", {}, {}),
}

NGRAM_WHY = "pure-Python n-gram search, a loop over the context per draft"
# The default set: every native design the batched round loop replays (paths, online
# insertion). Left out, each with the reason the replay prints: native-history and
# native-default (one native call per sequence and round: draft_context / token trees) and
# ngram (a per-token Python loop); name them with --strategies to replay them.
DEFAULT_STRATEGIES = ("native-global", "native-srt", "native-best", "native-merge",
                      "native-das", "native-srt-runahead")


def make_strategies(names: Sequence[str], common: Common | None = None) -> list[Strategy]:
    """Strategies by name; ValueError for an unknown one, RuntimeError for ``arctic-*``
    without arctic-inference, ImportError when the native cache is not built."""
    common = common or Common()
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {sorted(STRATEGIES)}")
    out = []
    for name in names:
        _, implementation, kwargs, extras = STRATEGIES[name]
        if implementation in ("native", "reference"):
            from openrlhf_srt.replay.cache_drafter import CacheDrafter

            kw = {"max_depth": common.max_depth, "min_prob": common.min_prob,
                  "tree": common.tree, **kwargs, "reference": implementation == "reference",
                  "byte_budget": common.cache_bytes}
            make = partial(CacheDrafter, name, **kw)
        elif implementation == "arctic":
            from openrlhf_srt.replay.arctic import ArcticDrafter

            kw = {"max_depth": common.max_depth, "min_prob": common.min_prob,
                  "factor": common.factor, "tree_spec": common.tree, **kwargs}
            make = partial(ArcticDrafter, name=name, **kw)
        else:
            make = partial(NgramDrafter, name=name)
        drafter = make()  # fail here, not mid-replay, when a dependency is missing
        if implementation == "native":
            why = drafter.why_per_sequence()
        elif implementation == "reference":
            why = "pure-Python reference cache"
        elif implementation == "arctic":
            why = "ArcticInference's trees draft one sequence per call"
        else:
            why = NGRAM_WHY
        if extras.get("length_aware"):
            # DAS: full budget at the traces' length cap (256), 2 tokens at the start
            cfg = BudgetConfig(rule="length_aware", max_draft_tokens=common.budget,
                               length_aware_full_at=256)
        else:
            cfg = BudgetConfig(rule="fixed", max_draft_tokens=common.budget)
        out.append(Strategy(name, make, Budget(cfg), extras.get("runahead"),
                            loop="per-sequence" if why else "batched", why=why))
    return out


def describe(name: str) -> str:
    return STRATEGIES[name][0]
