"""TreeCache: the typed Python API over the native forest (openrlhf_srt.cache._tree).

Every method validates its arguments and raises ValueError naming what was wrong; the
native layer re-checks what it relies on, so no input can crash the process. All methods
are safe to call from several threads: the native forest serializes them with one mutex
(the GIL is released while native work runs).
"""

from __future__ import annotations

import os

import numpy as np

from openrlhf_srt.cache import _tree, snapshot
from openrlhf_srt.cache.cache_config import MAX_DRAFT_TOKENS, CacheConfig
from openrlhf_srt.cache.state import CacheState

# Named native results (see their docstrings and docs/cache.md): Draft from draft() and
# draft_context(), BatchDrafts from step(). Their arrays are read-only views, no copies.
Draft = _tree.Draft
BatchDrafts = _tree.BatchDrafts
TAGS: tuple[str, ...] = _tree.TAGS  # add_sequence's tag; CacheState.tags holds the index
SOURCES: tuple[str, ...] = _tree.SOURCES  # BatchDrafts.source holds the index, -1 for none
_I32_MAX = (1 << 31) - 1
_I64 = (-(1 << 63), (1 << 63) - 1)


def as_tokens(values, name: str, *, allow_empty: bool = True) -> np.ndarray:
    """One-dimensional int32 token ids in [0, 2**31 - 1], or ValueError saying what is wrong."""
    arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        if not allow_empty:
            raise ValueError(f"{name} is empty")
        return np.zeros(0, dtype=np.int32)
    if arr.dtype == np.int32:
        return np.ascontiguousarray(arr)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer token ids, got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > _I32_MAX:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name}: token id {bad} is out of the int32 range [0, {_I32_MAX}]")
    return np.ascontiguousarray(arr, dtype=np.int32)


def _int(value, name: str, lo: int, hi: int) -> int:
    if isinstance(value, np.integer):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        # ValueError, not TypeError: the API promises one exception type for bad input.
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")  # noqa: TRY004
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def _native(fn, *args):
    """Call into the native core; its invalid_argument errors arrive as ValueError."""
    try:
        return fn(*args)
    except TypeError as e:  # nanobind refuses arguments it cannot convert
        raise ValueError(f"invalid argument: {e}") from None


class TreeCache:
    """Per-prompt suffix-tree cache of rollouts plus one global tree; see docs/cache.md."""

    def __init__(self, config: CacheConfig | None = None):
        self.config = config if config is not None else CacheConfig()
        if not isinstance(self.config, CacheConfig):
            raise ValueError(f"config must be a CacheConfig, got {type(config).__name__}")  # noqa: TRY004
        c = self.config
        self._c = _tree.Cache(max_depth=c.max_depth, byte_budget=c.byte_budget, rule=c.rule,
                              global_weight=float(c.global_weight))

    # ----------------------------------------------------------------- sequence lifecycle
    def add_sequence(self, seq_id: int, prompt_key: int, prompt_token_ids, *, step: int,
                     tag: str = "rollout") -> None:
        """Register a running sequence of prompt ``prompt_key`` (prompt tokens are indexed)."""
        seq_id = _int(seq_id, "seq_id", *_I64)
        prompt_key = _int(prompt_key, "prompt_key", 0, (1 << 64) - 1)
        step = _int(step, "step", *_I64)
        if tag not in TAGS:
            raise ValueError(f"tag must be one of {TAGS}, got {tag!r}")
        prompt = as_tokens(prompt_token_ids, "prompt_token_ids", allow_empty=False)
        _native(self._c.add_sequence, seq_id, prompt_key, prompt, step, TAGS.index(tag))

    def extend(self, seq_id: int, tokens) -> None:
        """Append decoded tokens to a running sequence (both its prompt tree and the global tree)."""
        _native(self._c.extend, _int(seq_id, "seq_id", *_I64), as_tokens(tokens, "tokens"))

    def finish_sequence(self, seq_id: int) -> None:
        """The sequence ended: it stays in the trees, its running state is freed."""
        _native(self._c.finish, _int(seq_id, "seq_id", *_I64))

    def remove_sequence(self, seq_id: int) -> None:
        """Subtract every occurrence the sequence contributed, exactly."""
        _native(self._c.remove, _int(seq_id, "seq_id", *_I64))

    def drop_steps_before(self, step: int) -> int:
        """Remove finished sequences added with a step < ``step`` (a sliding window of steps).

        Running sequences are kept until they finish. Returns how many were removed."""
        return _native(self._c.drop_steps_before, _int(step, "step", *_I64))

    # ---------------------------------------------------------------------- drafting
    def _budget(self, max_tokens, min_prob) -> tuple[int, float]:
        max_tokens = self.config.max_draft_tokens if max_tokens is None else max_tokens
        max_tokens = _int(max_tokens, "max_tokens", 0, MAX_DRAFT_TOKENS)
        min_prob = self.config.min_prob if min_prob is None else min_prob
        if isinstance(min_prob, bool) or not isinstance(min_prob, (int, float)) or not (
            0.0 <= min_prob <= 1.0
        ):
            raise ValueError(f"min_prob must be a number in [0, 1], got {min_prob!r}")
        return max_tokens, float(min_prob)

    def draft(self, seq_id: int, max_tokens: int | None = None, min_prob: float | None = None,
              *, tree: bool = True) -> Draft:
        """Draft for a running sequence from its context (prompt + response so far)."""
        max_tokens, min_prob = self._budget(max_tokens, min_prob)
        return _native(self._c.draft, _int(seq_id, "seq_id", *_I64), max_tokens, min_prob, tree)

    def draft_context(self, prompt_key: int, context_tokens, max_tokens: int | None = None,
                      min_prob: float | None = None, *, response_start: int = 0,
                      tree: bool = True) -> Draft:
        """Draft for an arbitrary context without a registered sequence.

        The prompt tree of ``prompt_key`` (if cached) is matched against the whole context,
        the global tree against ``context_tokens[response_start:]`` (it indexes responses
        only; pass the prompt length to get exactly what ``draft`` gives a sequence)."""
        max_tokens, min_prob = self._budget(max_tokens, min_prob)
        ctx = as_tokens(context_tokens, "context_tokens", allow_empty=False)
        response_start = _int(response_start, "response_start", 0, len(ctx))
        key = _int(prompt_key, "prompt_key", 0, (1 << 64) - 1)
        return _native(self._c.draft_context, key, ctx, response_start, max_tokens, min_prob,
                       tree)

    def step(self, seq_ids, new_tokens, new_token_counts, budgets,
             min_prob: float | None = None) -> BatchDrafts:
        """One engine step: append each sequence's new tokens, then draft a path for each.

        ``new_tokens`` is flat (int32), sequence i owning ``new_token_counts[i]`` of them in
        order; ``budgets[i]`` is its draft budget (0: no draft, at most MAX_DRAFT_TOKENS).
        One native call, GIL released.
        """
        seqs = np.asarray(seq_ids)
        if seqs.ndim != 1 or (seqs.size and not np.issubdtype(seqs.dtype, np.integer)):
            raise ValueError(f"seq_ids must be a 1-D integer array, got {seqs.dtype} {seqs.shape}")
        seqs = np.ascontiguousarray(seqs, dtype=np.int64)
        toks = as_tokens(new_tokens, "new_tokens")
        counts = _small_ints(new_token_counts, "new_token_counts", len(seqs))
        budgets = _small_ints(budgets, "budgets", len(seqs))
        _, min_prob = self._budget(0, min_prob)
        return _native(self._c.step, seqs, toks, counts, budgets, min_prob)

    # ------------------------------------------------------------------ memory, figures
    def resize(self, byte_budget: int) -> None:
        """Change the byte budget; evicts least recently used prompts if now over it."""
        cfg = CacheConfig(**{**self.config.__dict__, "byte_budget": byte_budget})
        _native(self._c.resize, cfg.byte_budget)
        self.config = cfg

    def clear(self) -> None:
        """Drop everything, running sequences included (their ids become unknown)."""
        self._c.clear()

    def stats(self) -> dict[str, int]:
        """Live figures, a new dict built by the native core: prompts, sequences, running,
        detached (running, prompt evicted, record kept), dropped (running, record dropped by
        the budget, not yet finished), runahead (sequences tagged run-ahead), nodes,
        global_nodes, hubs (nodes whose children are in a hash table), tokens (cached prompt
        + response tokens), bytes = prompt_bytes + global_bytes + record_bytes +
        detached_bytes, byte_budget, evicted_prompts, evicted_running, dropped_running
        (docs/cache.md, "Memory")."""
        return self._c.stats()

    def memory(self) -> dict[str, int]:
        """Where stats()["bytes"] are, part by part (they add up to it): for all prompt trees
        (``prompt_*``) and the global tree (``global_*``) nodes, node_slack, leaves,
        leaf_slack, texts, loci, seq_records, slot_map, child_tables, fixed; then
        prompt_entries, records, detached (docs/cache.md, "Memory"). Visits every sequence."""
        return self._c.memory()

    def check(self) -> None:
        """Verify every invariant of every tree (slow; for tests). Raises AssertionError."""
        err = self._c.check()
        if err:
            raise AssertionError(err)

    def dump(self, prompt_key: int | None = None) -> dict[tuple[int, ...], tuple[int, int]]:
        """{path: (count, continued count)} for every node of a prompt tree (or the global tree)."""
        glob = prompt_key is None
        key = 0 if glob else _int(prompt_key, "prompt_key", 0, (1 << 64) - 1)
        paths, counts, conts = _native(self._c.dump, glob, key)
        return {tuple(p): (c, k) for p, c, k in zip(paths, counts, conts)}

    # ------------------------------------------------------------------ state, snapshots
    def export_state(self) -> CacheState:
        """Everything a rebuild needs (config, prompts, sequences) as named arrays; see
        CacheState. One native call, GIL released."""
        return CacheState(config=self.config, **self._c.export_state())

    @classmethod
    def from_state(cls, state: CacheState, config: CacheConfig | None = None) -> TreeCache:
        """A new cache rebuilt from an exported state: identical trees, identical drafts.
        Every sequence comes back finished: nothing runs across a restore (no caller extends
        or finishes a sequence of the new cache; a running one would never finish).

        `config` (default: the state's own) is the new cache's: the state holds raw token
        sequences, so they are re-indexed under its max_depth, and under a smaller
        byte_budget the least recently used prompts are evicted as they are inserted; the
        drafting settings hold no data. So every setting can be honoured, none is refused.

        The state is checked whole before anything is inserted (array dtypes and lengths,
        prompt references, tags, token ids); a bad one raises ValueError saying what is
        wrong. No existing cache is touched either way."""
        if not isinstance(state, CacheState):
            raise ValueError(f"state must be a CacheState, got {type(state).__name__}")  # noqa: TRY004
        cache = cls(state.config if config is None else config)
        _native(cache._c.import_state, state.arrays())
        return cache

    def save(self, path: str | os.PathLike) -> None:
        """Write a snapshot of export_state() (atomic: temp file + os.replace); see
        openrlhf_srt.cache.snapshot."""
        snapshot.write(self.export_state(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, config: CacheConfig | None = None) -> TreeCache:
        """A new cache from a snapshot, under `config` (default: the snapshot's own; see
        from_state); corrupt, truncated, wrong-version or inconsistent files raise
        ValueError."""
        state = snapshot.read(path)
        try:
            return cls.from_state(state, config)
        except ValueError as e:
            raise ValueError(f"{path}: not a valid tree-cache snapshot: {e}") from None


def _small_ints(values, name: str, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{name} must be 1-D with one entry per sequence ({n}), got {arr.shape}")
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.dtype != np.int32:
        if int(arr.min()) < -(1 << 31) or int(arr.max()) > _I32_MAX:
            raise ValueError(f"{name} out of int32 range")
        arr = arr.astype(np.int32)
    if int(arr.min()) < 0:
        i = int(np.argmax(arr < 0))
        raise ValueError(f"{name}[{i}] is negative ({int(arr[i])})")
    return np.ascontiguousarray(arr)
