"""Per-prompt rollout tree cache: native core, typed Python API, state export/import and
snapshots (docs/cache.md)."""

from openrlhf_srt.cache.cache import SOURCES, TAGS, BatchDrafts, Draft, TreeCache
from openrlhf_srt.cache.cache_config import (
    DEFAULT_RULE,
    MAX_DEPTH_LIMIT,
    MAX_DRAFT_TOKENS,
    MIN_BYTE_BUDGET,
    MIN_DEPTH_LIMIT,
    RULES,
    CacheConfig,
)
from openrlhf_srt.cache.keys import prompt_key
from openrlhf_srt.cache.state import CacheState

__all__ = ["DEFAULT_RULE", "MAX_DEPTH_LIMIT", "MAX_DRAFT_TOKENS", "MIN_BYTE_BUDGET",
           "MIN_DEPTH_LIMIT", "RULES", "SOURCES", "TAGS", "BatchDrafts", "CacheConfig",
           "CacheState", "Draft", "TreeCache", "prompt_key"]
