"""Stable prompt keys: the identity of a prompt across steps, engines and processes.

A key is a 63-bit integer hash of the prompt's token ids (int32 little-endian, BLAKE2b).
It must not depend on Python's per-process hash seed, because the trainer, the router and
every engine worker compute it independently and must agree. Token ids outside int32 are
refused (`check_token_ids`): cast to int32 they would wrap, and two different prompts would
share a key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

_KEY_MASK = (1 << 63) - 1
TOKEN_ID_MAX = 2**31 - 1  # keys and the tree cache hold token ids as int32


def check_token_ids(token_ids: Sequence[int] | np.ndarray,
                    vocab_size: int | None = None) -> np.ndarray:
    """The ids as a one-dimensional integer array; ValueError when one is not a token id:
    not an integer, negative, beyond int32, or (given `vocab_size`) outside the vocabulary."""
    try:
        ids = np.asarray(token_ids)
    except (ValueError, TypeError):  # ragged nesting
        raise ValueError("token ids must be a flat sequence of integers") from None
    if ids.ndim != 1:
        raise ValueError(f"token ids must be one-dimensional, got shape {ids.shape}")
    if not ids.size:
        return ids.astype(np.int64)
    if ids.dtype == object:  # Python ints beyond 64 bits (or mixed types)
        if not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in ids):
            raise ValueError("token ids must be integers")
        lo, hi = min(ids), max(ids)
    elif np.issubdtype(ids.dtype, np.integer):
        lo, hi = ids.min(), ids.max()
    else:
        raise ValueError(f"token ids must be integers, got dtype {ids.dtype}")
    top, what = TOKEN_ID_MAX, "int32"
    if vocab_size is not None and vocab_size - 1 < top:
        top, what = vocab_size - 1, f"the vocabulary of {vocab_size} tokens"
    if lo < 0 or hi > top:
        bad = int(lo) if lo < 0 else int(hi)
        raise ValueError(f"token id {bad} is outside {what} [0, {top}]")
    return ids.astype(np.int64)


def prompt_key(prompt_token_ids: Sequence[int] | np.ndarray) -> int:
    """Return the stable 63-bit key of a prompt given its token ids (`check_token_ids`)."""
    ids = check_token_ids(prompt_token_ids)
    digest = hashlib.blake2b(ids.astype("<i4").tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _KEY_MASK
