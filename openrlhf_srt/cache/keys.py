"""Stable prompt keys: the identity of a prompt across steps, engines and processes.

A key is a 63-bit integer hash of the prompt's token ids (int32 little-endian, BLAKE2b).
It must not depend on Python's per-process hash seed, because the trainer, the router and
every engine worker compute it independently and must agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

_KEY_MASK = (1 << 63) - 1


def prompt_key(prompt_token_ids: Sequence[int] | np.ndarray) -> int:
    """Return the stable 63-bit key of a prompt given its token ids."""
    ids = np.asarray(prompt_token_ids)
    if ids.ndim != 1:
        raise ValueError(f"prompt_token_ids must be one-dimensional, got shape {ids.shape}")
    if ids.size and (not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(f"prompt_token_ids must be integers, got dtype {ids.dtype}")
    digest = hashlib.blake2b(ids.astype("<i4").tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _KEY_MASK
