"""CacheState: what a TreeCache holds that rebuilding it needs, as named flat arrays.

``TreeCache.export_state()`` gives one; ``TreeCache.from_state(state)`` builds a new cache
from it with identical trees (a tree depends only on the multiset of texts inserted), so
drafts from both are equal. The snapshot module (``openrlhf_srt.cache.snapshot``) encodes it
to bytes; this module reads and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from openrlhf_srt.cache.cache_config import CacheConfig


@dataclass(frozen=True, eq=False)
class CacheState:
    """The config, the cached prompts and every registered sequence of a cache.

    Prompts (P of them) come least recently used first: prompt i is ``prompt_keys[i]``, its
    tokens the next ``prompt_lens[i]`` of ``prompt_tokens``. Sequences (S) are grouped by
    prompt in the same order; sequence j owns the next ``response_lens[j]`` tokens of
    ``response_tokens``. ``from_state`` re-inserts the sequences in this order, which gives
    the prompts back their least-recently-used order, and restores every sequence finished
    (``running`` records what ran at export; nothing runs across a restore). Sequences
    detached by eviction are not part of the state. Arrays are one-dimensional, of the dtypes below, and checked (dtypes,
    lengths, references, token ids) by ``from_state``, which refuses a bad state whole.
    """

    config: CacheConfig
    prompt_keys: np.ndarray  # uint64 [P]
    prompt_lens: np.ndarray  # uint32 [P], each >= 1
    prompt_tokens: np.ndarray  # int32 [sum of prompt_lens]
    seq_ids: np.ndarray  # int64 [S], distinct
    seq_keys: np.ndarray  # uint64 [S]: the prompt key of each sequence
    steps: np.ndarray  # int64 [S]: the step it was added at (drop_steps_before)
    tags: np.ndarray  # uint8 [S]: index into TAGS ("rollout", "runahead")
    running: np.ndarray  # uint8 [S]: 1 running at export, 0 finished (restored finished)
    response_lens: np.ndarray  # uint32 [S]
    response_tokens: np.ndarray  # int32 [sum of response_lens]

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by name (every field but ``config``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "config"}
