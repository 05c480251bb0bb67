"""Configuration of the tree cache, the one default rule, and the limits it is checked against."""

from __future__ import annotations

import math
from dataclasses import dataclass

from openrlhf_srt.cache import _tree

# Limits and rule names are defined once, in the native core (csrc/limits.h, csrc/cache.h),
# which enforces them; Python reads them from there.
MIN_DEPTH_LIMIT: int = _tree.MIN_DEPTH_LIMIT
MAX_DEPTH_LIMIT: int = _tree.MAX_DEPTH_LIMIT
MAX_DRAFT_TOKENS: int = _tree.MAX_DRAFT_TOKENS
MIN_BYTE_BUDGET: int = _tree.MIN_BYTE_BUDGET
RULES: tuple[str, ...] = _tree.RULES
# The default rule is defined here only: the native core has no default (the rule is always
# passed in) and the drafter's --srt.cache_rule takes its default from here. Why merge:
# docs/cache.md, "Drafting".
DEFAULT_RULE = "merge"


@dataclass(frozen=True)
class CacheConfig:
    """What the cache indexes, how much memory it may use and how it drafts.

    max_depth: longest string the trees index (and longest context suffix matched is
        ``max_depth - budget``, so a full draft fits below the match), in
        [MIN_DEPTH_LIMIT, MAX_DEPTH_LIMIT].
    byte_budget: bytes for the whole forest (all prompt trees, the global tree, sequence
        records, detached ones included), >= MIN_BYTE_BUDGET; a hard bound after every call:
        least recently used prompts are evicted to stay below it (docs/cache.md, "Memory").
    rule: how the per-prompt tree and the global tree are combined when drafting:
        "prompt" (per-prompt tree only), "global" (global tree only), "best" (draft from
        each, keep the one whose best path has the higher expected accepted length),
        "merge" (pool the next-token counts of both; the global counts weighted by
        ``global_weight``). Default DEFAULT_RULE ("merge"), the best path rule in the replay
        simulator (docs/cache.md).
    min_prob: drafting stops when the path probability falls below this, in [0, 1].
    max_draft_tokens: default draft budget per call, in [0, MAX_DRAFT_TOKENS].
    global_weight: weight of the global tree's counts under rule "merge", >= 0.
    """

    max_depth: int = 32
    byte_budget: int = 1 << 30
    rule: str = DEFAULT_RULE
    min_prob: float = 0.1
    max_draft_tokens: int = 16
    global_weight: float = 1.0

    def __post_init__(self) -> None:
        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(self.max_depth) or not MIN_DEPTH_LIMIT <= self.max_depth <= MAX_DEPTH_LIMIT:
            raise ValueError(f"max_depth must be an integer in [{MIN_DEPTH_LIMIT}, "
                             f"{MAX_DEPTH_LIMIT}], got {self.max_depth!r}")
        if not is_int(self.byte_budget) or not MIN_BYTE_BUDGET <= self.byte_budget < 1 << 63:
            raise ValueError(f"byte_budget must be an integer >= {MIN_BYTE_BUDGET}, "
                             f"got {self.byte_budget!r}")
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")
        if not _is_real(self.min_prob) or not 0.0 <= self.min_prob <= 1.0:
            raise ValueError(f"min_prob must be a number in [0, 1], got {self.min_prob!r}")
        if not is_int(self.max_draft_tokens) or not (
            0 <= self.max_draft_tokens <= MAX_DRAFT_TOKENS
        ):
            raise ValueError(f"max_draft_tokens must be an integer in [0, {MAX_DRAFT_TOKENS}], "
                             f"got {self.max_draft_tokens!r}")
        if not _is_real(self.global_weight) or self.global_weight < 0:
            raise ValueError(f"global_weight must be a number >= 0, got {self.global_weight!r}")


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
