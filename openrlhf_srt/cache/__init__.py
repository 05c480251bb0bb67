"""Per-prompt rollout tree cache: native core, typed Python API, snapshots (docs/cache.md)."""

from openrlhf_srt.cache.cache import BatchDrafts, Draft, TreeCache
from openrlhf_srt.cache.config import RULES, CacheConfig
from openrlhf_srt.cache.keys import prompt_key

__all__ = ["RULES", "BatchDrafts", "CacheConfig", "Draft", "TreeCache", "prompt_key"]
