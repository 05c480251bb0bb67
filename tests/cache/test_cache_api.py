"""TreeCache API: bad input, named results, limits and the default rule, byte budget and
eviction, state export/import, snapshots, threads."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from openrlhf_srt.cache import (
    DEFAULT_RULE,
    MAX_DEPTH_LIMIT,
    MAX_DRAFT_TOKENS,
    MIN_BYTE_BUDGET,
    MIN_DEPTH_LIMIT,
    SOURCES,
    BatchDrafts,
    CacheConfig,
    CacheState,
    Draft,
    TreeCache,
    _tree,
    snapshot,
)


def corpus(seed=0, n_prompts=6, samples=4, length=60, vocab=12):
    rng = random.Random(seed)
    out = []
    for p in range(n_prompts):
        prompt = [rng.randrange(vocab) for _ in range(8)] + [p + 100]
        base = [rng.randrange(vocab) for _ in range(length)]
        for s in range(samples):  # samples of a prompt share most of their text
            resp = [t if rng.random() > 0.15 else rng.randrange(vocab) for t in base]
            out.append((p, prompt, resp))
    return out


def fill(cache, data, first_id=0, step=0, finish=True):
    for i, (p, prompt, resp) in enumerate(data):
        cache.add_sequence(first_id + i, 1000 + p, prompt, step=step)
        cache.extend(first_id + i, resp)
        if finish:
            cache.finish_sequence(first_id + i)


# ------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("field,value", [
    ("max_depth", 1), ("max_depth", 256), ("max_depth", 3.0), ("byte_budget", 10),
    ("rule", "both"), ("min_prob", 1.5), ("min_prob", float("nan")),
    ("max_draft_tokens", -1), ("global_weight", -0.5),
])
def test_config_rejects_invalid_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        CacheConfig(**{field: value})


def test_bad_input_raises_value_error_saying_what():
    c = TreeCache()
    c.add_sequence(1, 7, [1, 2, 3], step=0)
    cases = [
        (lambda: c.extend(2, [1]), "unknown seq_id 2"),
        (lambda: c.add_sequence(1, 7, [1, 2, 3], step=0), "duplicate seq_id 1"),
        (lambda: c.add_sequence(3, 7, [], step=0), "prompt_token_ids is empty"),
        (lambda: c.add_sequence(3, 7, [9, 9], step=0), "differ from the prompt cached"),
        (lambda: c.add_sequence(3, 8, [1], step=0, tag="other"), "tag"),
        (lambda: c.extend(1, np.array([1.5])), "integer token ids"),
        (lambda: c.extend(1, [2**31]), "out of the int32 range"),
        (lambda: c.extend(1, [-1]), "out of the int32 range"),
        (lambda: c.extend(1, np.array([-3], dtype=np.int32)), "negative"),
        (lambda: c.extend(1, [[1, 2]]), "one-dimensional"),
        (lambda: c.draft(1, -1), "max_tokens"),
        (lambda: c.draft(1, 4, min_prob=2.0), "min_prob"),
        (lambda: c.draft_context(7, [], 4), "context_tokens is empty"),
        (lambda: c.step([1], np.array([5], np.int32), [1], [-1]), r"budgets\[0\] is negative"),
        (lambda: c.step([1], np.array([5, 6], np.int32), [1], [4]), "sum to 1 but 2"),
        (lambda: c.step([1, 1], np.array([], np.int32), [0, 0], [1, 1]), "contain 1 twice"),
        (lambda: c.step([1], np.array([5], np.int32), [1, 0], [4]), "one entry per sequence"),
        (lambda: c.step([9], np.array([5], np.int32), [1], [4]), "unknown seq_id 9"),
        (lambda: c.step([1], np.array([5], np.int32), [1.0], [4]), "must be integers"),
        (lambda: c.remove_sequence("x"), "seq_id must be an integer"),
        (lambda: c.resize(5), "byte_budget"),
    ]
    for call, msg in cases:
        with pytest.raises(ValueError, match=msg):
            call()
    c.finish_sequence(1)
    with pytest.raises(ValueError, match="already finished"):
        c.finish_sequence(1)
    with pytest.raises(ValueError, match="is finished"):
        c.extend(1, [4])
    with pytest.raises(ValueError, match="is finished"):
        c.draft(1, 4)
    c.check()  # nothing above changed the cache half-way
    assert c.stats()["sequences"] == 1 and c.stats()["running"] == 0


def test_failed_step_changes_nothing():
    c = TreeCache(CacheConfig(max_depth=6))
    c.add_sequence(1, 7, [1, 2, 3], step=0)
    c.add_sequence(2, 7, [1, 2, 3], step=0)
    before = c.dump(7)
    with pytest.raises(ValueError):
        c.step([1, 2], np.array([4, -5], np.int32), [1, 1], [3, 3])
    assert c.dump(7) == before


# ------------------------------------------------------------------- named results
def merged_cache():
    """Prompt 7 with two finished responses and one running sequence matched in both trees."""
    c = TreeCache(CacheConfig(max_depth=8, min_prob=0.0))
    for i, resp in enumerate(([4, 5, 6, 4, 5, 6], [4, 5, 6, 4, 5, 9])):
        c.add_sequence(i, 7, [1, 2, 3], step=0)
        c.extend(i, resp)
        c.finish_sequence(i)
    c.add_sequence(9, 7, [1, 2, 3], step=1)
    c.extend(9, [4, 5])
    return c


def test_draft_has_named_read_only_fields():
    d = merged_cache().draft(9, 4)
    assert isinstance(d, Draft)
    assert d.tokens.dtype == np.int32 and d.probs.dtype == np.float32
    assert d.tokens.tolist() == [6, 4, 5, 6]
    assert 0 < d.probs[-1] and np.all(np.diff(d.probs) <= 0) and d.probs[0] <= 1  # path probs
    assert d.tree_tokens.dtype == np.int32 and d.tree_parents.dtype == np.int32
    assert d.tree_probs.dtype == np.float32 and d.tree_tokens.size == 4
    assert d.tree_parents[0] == -1 and d.tree_tokens[0] == 6
    assert d.score == pytest.approx(float(d.probs.sum()))
    assert d.match_len >= 2 and d.source == "merged"
    with pytest.raises(ValueError, match="read-only"):
        d.tokens[0] = 1
    with pytest.raises(AttributeError):
        d.score = 0.0
    toks = d.tokens
    del d  # the arrays are views that keep their draft alive
    assert toks.tolist() == [6, 4, 5, 6]
    none = TreeCache().draft_context(1, [5], 4)
    assert none.source is None and none.match_len == 0 and none.tokens.size == 0


def test_batch_drafts_have_named_fields_in_csr_form():
    c = merged_cache()
    c.add_sequence(10, 8, [42], step=1)  # nothing cached for this prompt: empty draft
    out = c.step([9, 10], np.array([6], np.int32), [1, 0], [3, 3])
    assert isinstance(out, BatchDrafts) and len(out) == 2
    assert out.offsets.dtype == np.int64 and out.offsets.tolist() == [0, 3, 3]
    assert out.tokens.dtype == np.int32 and out.probs.dtype == np.float32
    assert out.match_len.dtype == np.int32 and out.score.dtype == np.float32
    assert out.source.dtype == np.int8
    assert [SOURCES[s] if s >= 0 else None for s in out.source] == ["merged", None]
    assert out.lists() == [out.tokens.tolist(), []]
    toks, probs = out[0]
    assert toks.tolist() == out.tokens.tolist() and probs.tolist() == out.probs.tolist()
    assert out.score[0] == pytest.approx(float(probs.sum())) and out.score[1] == 0
    assert out[-1][0].size == 0
    with pytest.raises(IndexError):
        out[2]
    with pytest.raises(ValueError, match="read-only"):
        out.offsets[0] = 1


def test_stats_are_a_dict_with_the_documented_keys():
    c = TreeCache(CacheConfig(byte_budget=1 << 20))
    s = c.stats()
    assert set(s) == {"prompts", "sequences", "running", "detached", "dropped", "runahead",
                      "nodes", "global_nodes", "hubs", "tokens", "bytes", "prompt_bytes",
                      "global_bytes", "record_bytes", "detached_bytes", "byte_budget",
                      "evicted_prompts", "evicted_running", "dropped_running"}
    assert all(isinstance(v, int) for v in s.values()) and s["byte_budget"] == 1 << 20
    c.resize(1 << 21)
    assert c.stats()["byte_budget"] == 1 << 21 == c.config.byte_budget


# ------------------------------------------------------------ limits, default rule
def test_one_default_rule():
    from openrlhf_srt.vllm.drafter_config import DrafterConfig

    assert DEFAULT_RULE == "merge"
    assert CacheConfig().rule == DEFAULT_RULE == DrafterConfig().cache_config().rule
    # The native core has no default of its own: it must be given the rule.
    with pytest.raises(TypeError):
        _tree.Cache(max_depth=8, byte_budget=1 << 20, global_weight=1.0)
    # ... and a default cache drafts with it: pooled from both trees.
    c = TreeCache()
    c.add_sequence(1, 7, [1, 2, 3], step=0)
    c.extend(1, [4, 5, 4, 5])
    assert c.draft(1, 2).source == "merged"


def test_limits_come_from_the_native_core_and_are_enforced_at_their_values():
    from openrlhf_srt.vllm.drafter_config import DrafterConfig, SRTConfigError

    assert (MIN_DEPTH_LIMIT, MAX_DEPTH_LIMIT, MAX_DRAFT_TOKENS, MIN_BYTE_BUDGET) == (
        _tree.MIN_DEPTH_LIMIT, _tree.MAX_DEPTH_LIMIT, _tree.MAX_DRAFT_TOKENS, _tree.MIN_BYTE_BUDGET)
    # What each limit stands for: 8-bit edge lengths, vLLM's num_speculative_tokens limit.
    assert (MAX_DEPTH_LIMIT, MAX_DRAFT_TOKENS, MIN_BYTE_BUDGET) == (255, 128, 64 * 1024)
    CacheConfig(max_depth=MIN_DEPTH_LIMIT, byte_budget=MIN_BYTE_BUDGET)
    c = TreeCache(CacheConfig(max_depth=MAX_DEPTH_LIMIT, max_draft_tokens=MAX_DRAFT_TOKENS))
    for bad in ({"max_depth": MIN_DEPTH_LIMIT - 1}, {"max_depth": MAX_DEPTH_LIMIT + 1},
                {"byte_budget": MIN_BYTE_BUDGET - 1},
                {"max_draft_tokens": MAX_DRAFT_TOKENS + 1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            CacheConfig(**bad)
    with pytest.raises(ValueError, match="byte_budget"):  # the native core checks it too
        _tree.Cache(max_depth=8, byte_budget=MIN_BYTE_BUDGET - 1, rule="merge", global_weight=1.0)
    c.add_sequence(1, 7, [1, 2, 3], step=0)
    assert c.draft(1, MAX_DRAFT_TOKENS).tokens.size == 0
    with pytest.raises(ValueError, match="max_tokens"):
        c.draft(1, MAX_DRAFT_TOKENS + 1)
    with pytest.raises(ValueError, match=rf"budgets\[0\] exceeds {MAX_DRAFT_TOKENS}"):
        c.step([1], np.array([], np.int32), [0], [MAX_DRAFT_TOKENS + 1])
    DrafterConfig(max_draft_tokens=MAX_DRAFT_TOKENS)
    with pytest.raises(SRTConfigError, match=rf"\[1, {MAX_DRAFT_TOKENS}\]"):
        DrafterConfig(max_draft_tokens=MAX_DRAFT_TOKENS + 1)


# ------------------------------------------------------------------ removal, window
def test_drop_steps_before_equals_rebuild_from_survivors():
    data = corpus(seed=3)
    c = TreeCache(CacheConfig(max_depth=12))
    for step in range(3):
        fill(c, data[step::3], first_id=1000 * step, step=step)
    assert c.drop_steps_before(2) == len(data[0::3]) + len(data[1::3])
    fresh = TreeCache(CacheConfig(max_depth=12))
    fill(fresh, data[2::3], first_id=2000, step=2)
    c.check()
    assert c.dump() == fresh.dump()
    for p in {p for p, _, _ in data[2::3]}:
        assert c.dump(1000 + p) == fresh.dump(1000 + p)
    assert c.drop_steps_before(3) == len(data[2::3])
    assert c.stats()["prompts"] == 0 and c.stats()["nodes"] == 0


# -------------------------------------------------------------- budget and eviction
def test_byte_budget_never_exceeded_and_lru_prompts_evicted_exactly():
    data = corpus(seed=5, n_prompts=12, samples=3, length=120)
    unlimited = TreeCache(CacheConfig(max_depth=16))
    fill(unlimited, data)
    budget = unlimited.stats()["bytes"] // 3
    c = TreeCache(CacheConfig(max_depth=16, byte_budget=max(budget, MIN_BYTE_BUDGET)))
    for i, (p, prompt, resp) in enumerate(data):
        c.add_sequence(i, 1000 + p, prompt, step=0)
        for k in range(0, len(resp), 7):
            c.extend(i, resp[k : k + 7])
            assert c.stats()["bytes"] <= c.config.byte_budget
        c.finish_sequence(i)
    st = c.stats()
    assert st["evicted_prompts"] > 0 and st["evicted_running"] == 0
    c.check()
    # What survived is exactly the most recently used prompts, with exact counts.
    kept = [p for p in range(12) if _has(c, p)]
    assert 1 <= len(kept) < 12 and kept == list(range(12 - len(kept), 12))
    fresh = TreeCache(CacheConfig(max_depth=16))
    fill(fresh, [d for d in data if d[0] in kept])
    assert c.dump() == fresh.dump()
    # Shrinking the budget evicts more; growing it evicts nothing.
    c.resize(max(st["bytes"] // 2, MIN_BYTE_BUDGET))
    assert c.stats()["bytes"] <= c.config.byte_budget
    c.check()


def _has(cache, p):
    try:
        cache.dump(1000 + p)
        return True
    except ValueError:
        return False


def test_running_prompt_evicted_only_when_unavoidable_then_detached():
    c = TreeCache(CacheConfig(max_depth=8, byte_budget=MIN_BYTE_BUDGET))
    c.add_sequence(1, 7, list(range(50)), step=0)
    rng = random.Random(0)
    while c.stats()["evicted_running"] == 0:  # one running sequence outgrows the budget
        c.extend(1, [rng.randrange(1000) for _ in range(200)])
        assert c.stats()["bytes"] <= c.config.byte_budget
    st = c.stats()
    assert st["detached"] == 1 and st["prompts"] == 0 and st["sequences"] == 0
    c.extend(1, [1, 2, 3])  # a detached sequence is accepted but not indexed
    assert c.draft(1, 4).tokens.size == 0
    out = c.step([1], np.array([5], np.int32), [1], [4])
    assert out.lists() == [[]]
    c.finish_sequence(1)
    assert c.stats()["detached"] == 0


def test_detached_records_count_toward_the_budget_and_are_dropped_last():
    """Running sequences whose prompts were evicted keep a record (detached), counted in
    the budget; when the records alone outgrow it they are dropped (no record): calls naming
    them are accepted and ignored until the caller finishes them. New prompts are cached
    all along (before, the records held the budget and every new prompt was evicted)."""
    budget = MIN_BYTE_BUDGET
    c = TreeCache(CacheConfig(max_depth=8, byte_budget=budget))
    rng = random.Random(1)
    n = 1500
    for i in range(n):  # every sequence its own prompt, all running
        c.add_sequence(i, i, [rng.randrange(5000) for _ in range(30)], step=0)
        c.extend(i, [rng.randrange(5000) for _ in range(30)])
        assert c.stats()["bytes"] <= budget
    c.check()
    s = c.stats()
    assert s["dropped"] > 0 and s["detached"] > 0 and s["detached_bytes"] > 0
    assert s["running"] + s["detached"] + s["dropped"] == n
    assert s["dropped_running"] == s["dropped"] and s["evicted_running"] >= s["detached"]
    # every running id is still accepted: nothing indexed, no draft for the uncached ones
    out = c.step(list(range(n)), np.ones(n, np.int32), [1] * n, [4] * n)
    assert out.lists()[0] == [] and c.draft(0, 4).tokens.size == 0
    c.extend(0, [1, 2])
    assert c.stats()["bytes"] <= budget
    # a new prompt is cached and drafted from while all of them still run
    c.add_sequence(n, 10**6, [1, 2, 3], step=1)
    c.extend(n, [4, 5, 6, 4, 5, 6])
    c.finish_sequence(n)
    c.add_sequence(n + 1, 10**6, [1, 2, 3], step=1)
    c.extend(n + 1, [4, 5])
    assert c.draft(n + 1, 3).tokens.tolist() == [6, 4, 5]
    for i in range(n):
        c.finish_sequence(i)
    s = c.stats()
    assert s["detached"] == s["dropped"] == 0 and s["detached_bytes"] == 0
    with pytest.raises(ValueError, match="unknown seq_id 0"):  # exact again: none outstanding
        c.finish_sequence(0)
    c.check()


# --------------------------------------------------------------- state export/import
def test_state_export_import_round_trip():
    data = corpus(seed=4)
    c = TreeCache(CacheConfig(max_depth=10, global_weight=0.5))
    fill(c, data[:-3], step=1)
    fill(c, data[-3:], first_id=500, step=2, finish=False)  # still running
    c.add_sequence(900, 1000, data[0][1], step=3, tag="runahead")
    st = c.export_state()
    assert isinstance(st, CacheState) and st.config == c.config
    dtypes = {"prompt_keys": np.uint64, "prompt_lens": np.uint32, "prompt_tokens": np.int32,
              "seq_ids": np.int64, "seq_keys": np.uint64, "steps": np.int64, "tags": np.uint8,
              "running": np.uint8, "response_lens": np.uint32, "response_tokens": np.int32}
    assert {k: v.dtype for k, v in st.arrays().items()} == {k: np.dtype(t) for k, t in dtypes.items()}
    assert len(st.prompt_keys) == 6 and len(st.seq_ids) == len(data) + 1
    assert st.prompt_keys[-1] == 1000  # the most recently used prompt comes last
    assert int(st.running.sum()) == 4 and int(st.tags.sum()) == 1
    assert int(st.response_lens.sum()) == len(st.response_tokens) == sum(len(r) for *_, r in data)
    d = TreeCache.from_state(st)
    d.check()
    counts = ("prompts", "sequences", "runahead", "nodes", "global_nodes", "hubs", "tokens")
    assert d.config == c.config and [d.stats()[k] for k in counts] == [c.stats()[k] for k in counts]
    assert d.stats()["running"] == 0  # every sequence comes back finished
    assert d.dump() == c.dump()
    for p in range(6):
        assert d.dump(1000 + p) == c.dump(1000 + p)
    running = {500: data[-3], 501: data[-2], 502: data[-1], 900: (0, data[0][1], [])}
    for i, (p, prompt, resp) in running.items():  # the same draft from their contexts
        got = d.draft_context(1000 + p, prompt + resp, 6, response_start=len(prompt))
        assert got.tokens.tolist() == c.draft(i, 6).tokens.tolist()
    again = d.export_state()  # same prompts in the same order, same sequences, none running
    for k, v in st.arrays().items():
        assert np.array_equal(getattr(again, k), np.zeros_like(v) if k == "running" else v), k


def test_nothing_restored_runs():
    """A state exported with running sequences (a snapshot taken while requests ran, or one
    holding requests that had ended unseen) comes back with none running: no caller extends
    or finishes a sequence of the new cache, so a restored running one would outlive every
    window drop, be evicted last and, evicted, leave a detached record nobody frees."""
    data = corpus(seed=6, n_prompts=3, samples=2, length=20)
    c = TreeCache(CacheConfig(max_depth=8))
    fill(c, data, step=0, finish=False)
    st = c.export_state()
    assert st.running.all()  # the export says what ran
    d = TreeCache.from_state(st)
    s = d.stats()
    assert (s["running"], s["sequences"]) == (0, len(data))
    with pytest.raises(ValueError, match="is finished"):
        d.extend(0, [1])
    assert d.drop_steps_before(1) == len(data)  # the window takes them like any other
    assert d.stats()["sequences"] == d.stats()["prompts"] == 0
    d.check()


def test_a_state_is_restored_under_another_config():
    """from_state(state, config): the contents under the new cache's settings. The state
    holds raw token sequences: a smaller budget evicts the least recently used prompts as
    usual, another depth re-indexes every text; each tree equals one built under that config."""
    data = corpus(seed=8, n_prompts=12, samples=3, length=80)
    c = TreeCache(CacheConfig(max_depth=16))
    fill(c, data)  # prompts used in order 0..11
    st = c.export_state()
    small = CacheConfig(max_depth=6, byte_budget=MIN_BYTE_BUDGET, rule="prompt", min_prob=0.3,
                        max_draft_tokens=5, global_weight=2.0)
    d = TreeCache.from_state(st, small)
    d.check()
    s = d.stats()
    assert d.config == small and s["byte_budget"] == MIN_BYTE_BUDGET >= s["bytes"]
    kept = [p for p in range(12) if _has(d, p)]
    assert 1 <= len(kept) < 12 and kept == list(range(12 - len(kept), 12))  # LRU evicted
    assert s["evicted_prompts"] > 0 and s["detached"] == s["running"] == 0
    fresh = TreeCache(CacheConfig(max_depth=6))
    fill(fresh, [x for x in data if x[0] in kept])
    assert d.dump() == fresh.dump()
    assert all(d.dump(1000 + p) == fresh.dump(1000 + p) for p in kept)
    deeper = CacheConfig(max_depth=24)  # a larger budget and depth: everything, re-indexed
    e = TreeCache.from_state(st, deeper)
    fresh = TreeCache(deeper)
    fill(fresh, data)
    assert e.stats()["evicted_prompts"] == 0 and e.dump() == fresh.dump()
    assert all(e.dump(1000 + p) == fresh.dump(1000 + p) for p in range(12))


def test_bad_states_are_refused_whole():
    c = TreeCache(CacheConfig(max_depth=8))
    fill(c, corpus(seed=2, n_prompts=2, samples=2, length=10))
    st = c.export_state()
    before = c.dump()
    a = st.arrays()

    def with_(**changed):
        return CacheState(config=st.config, **{**a, **changed})

    cases = [
        (with_(seq_keys=np.full_like(a["seq_keys"], 5)), "names a prompt key"),
        (with_(prompt_lens=a["prompt_lens"] + 1), "do not add up"),
        (with_(response_lens=a["response_lens"][:-1]), "differ in length"),
        (with_(tags=np.full_like(a["tags"], 7)), "unknown tag"),
        (with_(seq_ids=np.zeros_like(a["seq_ids"])), "listed twice"),
        (with_(prompt_keys=np.full_like(a["prompt_keys"], 1000)), "listed twice"),
        (with_(response_tokens=-a["response_tokens"] - 1), "negative"),
        (with_(steps=a["steps"].astype(np.int32)), "steps must be a 1-D contiguous int64"),
        (with_(seq_ids=a["seq_ids"][::-1][::2]), "seq_ids must be a 1-D contiguous int64"),
    ]
    for state, msg in cases:
        with pytest.raises(ValueError, match=msg):
            TreeCache.from_state(state)
    with pytest.raises(ValueError, match="CacheState"):
        TreeCache.from_state(a)
    assert c.dump() == before  # the exporting cache is never touched


# ------------------------------------------------------------------------ snapshot
def test_snapshot_round_trip_gives_identical_drafts(tmp_path):
    data = corpus(seed=7)
    c = TreeCache(CacheConfig(max_depth=10, rule="merge", global_weight=0.5))
    fill(c, data[:-3], step=1)
    fill(c, data[-3:], first_id=500, step=2, finish=False)  # still running
    path = tmp_path / "cache.srt"
    c.save(path)
    d = TreeCache.load(path)
    assert d.config == c.config
    d.check()
    assert d.dump() == c.dump() and d.stats()["running"] == 0  # restored finished
    for i, (p, prompt, resp) in zip(range(500, 503), data[-3:]):
        a = c.draft(i, 6)
        b = d.draft_context(1000 + p, prompt + resp, 6, response_start=len(prompt))
        assert a.tokens.tolist() == b.tokens.tolist()
        assert a.tree_tokens.tolist() == b.tree_tokens.tolist()
    for p, prompt, resp in data[:5]:
        a = c.draft_context(1000 + p, prompt + resp[:20], 8)
        b = d.draft_context(1000 + p, prompt + resp[:20], 8)
        assert a.tokens.tolist() == b.tokens.tolist() and a.tokens.size > 0
    assert not list(tmp_path.glob(".*tmp*"))  # the temp file was renamed away


def test_corrupt_truncated_and_wrong_version_snapshots_are_rejected(tmp_path):
    c = TreeCache()
    fill(c, corpus(seed=1, n_prompts=2, samples=2, length=20))
    good = tmp_path / "good.srt"
    c.save(good)
    raw = good.read_bytes()
    cases = {
        "truncated": raw[: len(raw) // 2],
        "flipped": raw[:100] + bytes([raw[100] ^ 0xFF]) + raw[101:],
        "magic": b"NOTCACHE" + raw[8:],
        "empty": b"",
        "version": raw[:8] + (2).to_bytes(4, "little") + raw[12:],
    }
    msgs = {"truncated": "checksum", "flipped": "checksum", "magic": "magic",
            "empty": "magic", "version": "version 2 is not supported"}
    for name, blob in cases.items():
        p = tmp_path / f"{name}.srt"
        p.write_bytes(blob)
        with pytest.raises(ValueError, match=msgs[name]):
            TreeCache.load(p)


# A version-1 snapshot written by commit 727cb74, before the state export/import existed:
# prompts 9 and 7, sequence 1 finished, 2 (run-ahead) and -3 running.
V1_SNAPSHOT = bytes.fromhex(
    "535254434143484501000000c60000007b22636f6e666967223a207b22627974655f627564676574223a2031"
    "3034383537362c2022676c6f62616c5f776569676874223a20302e352c20226d61785f6465707468223a2036"
    "2c20226d61785f64726166745f746f6b656e73223a20342c20226d696e5f70726f62223a20302e32352c2022"
    "72756c65223a202262657374227d2c202270726f6d70745f746f6b656e73223a20352c202270726f6d707473"
    "223a20322c2022726573706f6e73655f746f6b656e73223a20392c202273657173223a20337d090000000000"
    "0000070000000000000002000000030000000800000008000000010000000200000003000000020000000000"
    "00000100000000000000fdffffffffffffff0900000000000000070000000000000007000000000000000100"
    "0000000000000000000000000000020000000000000001000001000103000000040000000200000004000000"
    "0500000006000000040000000500000004000000050000000400000005000000f05cf2fe5feba274dc40e518"
    "b31a55a604e3244da38eebd504cc4bd05d2ec839"
)


def test_snapshot_format_version_1_is_unchanged():
    st = snapshot.decode(V1_SNAPSHOT)
    assert snapshot.encode(st) == V1_SNAPSHOT  # byte for byte
    assert st.seq_ids.tolist() == [2, 1, -3] and st.running.tolist() == [1, 0, 1]
    c = TreeCache.from_state(st)
    c.check()
    assert c.config == CacheConfig(max_depth=6, byte_budget=1 << 20, rule="best", min_prob=0.25,
                                   max_draft_tokens=4, global_weight=0.5)
    again = c.export_state()  # same prompts and sequences, restored finished
    assert again.seq_ids.tolist() == [2, 1, -3] and again.running.tolist() == [0, 0, 0]
    assert again.tags.tolist() == [1, 0, 0] and again.prompt_keys.tolist() == [9, 7]
    for k in ("prompt_tokens", "steps", "response_lens", "response_tokens"):
        assert np.array_equal(getattr(again, k), getattr(st, k)), k


def test_inconsistent_snapshot_is_refused_naming_the_file(tmp_path):
    c = TreeCache()
    fill(c, corpus(seed=1, n_prompts=2, samples=2, length=20))
    st = c.export_state()
    bad = CacheState(config=st.config, **{**st.arrays(), "seq_keys": st.seq_keys + 1})
    path = tmp_path / "bad.srt"
    snapshot.write(bad, path)  # framing is fine, the contents are not
    with pytest.raises(ValueError, match=f"{path}: not a valid tree-cache snapshot: .*prompt key"):
        TreeCache.load(path)


# ------------------------------------------------------------------------- threads
def test_concurrent_use_from_two_threads_on_different_prompts():
    data = corpus(seed=11, n_prompts=2, samples=6, length=300)
    c = TreeCache(CacheConfig(max_depth=16))
    errors = []

    def work(p):
        try:
            mine = [(i, d) for i, d in enumerate(data) if d[0] == p]
            for i, (_, prompt, _) in mine:
                c.add_sequence(i, 1000 + p, prompt, step=0)
            for k in range(0, 300, 3):
                ids = [i for i, _ in mine]
                toks = np.array([t for _, d in mine for t in d[2][k : k + 3]], np.int32)
                c.step(ids, toks, [3] * len(ids), [4] * len(ids))
                c.draft(ids[0], 8)
            for i, _ in mine:
                c.finish_sequence(i)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(p,)) for p in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    c.check()
    fresh = TreeCache(CacheConfig(max_depth=16))
    fill(fresh, data)
    assert c.dump() == fresh.dump()
    for p in (0, 1):
        assert c.dump(1000 + p) == fresh.dump(1000 + p)


def test_stats_are_live_figures():
    c = TreeCache(CacheConfig(max_depth=8))
    s0 = c.stats()
    c.add_sequence(1, 7, [1, 2, 3], step=0)
    c.extend(1, [4, 5, 6])
    c.add_sequence(2, 7, [1, 2, 3], step=0, tag="runahead")
    c.finish_sequence(2)
    s1 = c.stats()
    assert (s1["prompts"], s1["sequences"], s1["running"], s1["runahead"]) == (1, 2, 1, 1)
    assert s1["tokens"] == 6
    assert s1["nodes"] > 0 and s1["bytes"] > s0["bytes"] and 0 < s1["global_bytes"] < s1["bytes"]
    c.clear()
    assert c.stats()["prompts"] == 0 and c.stats()["nodes"] == 0


def test_memory_breakdown_adds_up_to_the_byte_figures():
    c = TreeCache(CacheConfig(max_depth=8))
    fill(c, corpus(), finish=False)
    for finish in (False, True):
        if finish:
            for sid in range(len(corpus())):
                c.finish_sequence(sid)
        m, s = c.memory(), c.stats()
        assert sum(m.values()) == s["bytes"]
        assert sum(v for k, v in m.items() if k.startswith("global_")) == s["global_bytes"]
        assert sum(v for k, v in m.items() if k.startswith("prompt_")) == s["prompt_bytes"]
        assert m["records"] == s["record_bytes"] and m["detached"] == s["detached_bytes"]
        assert m["prompt_leaves"] > 0 and m["global_leaves"] > 0 and m["global_nodes"] > 0
        assert (m["global_loci"] > 0) == (not finish)  # loci only while running
    c.remove_sequence(0)
    assert sum(c.memory().values()) == c.stats()["bytes"]


# ------------------------------------------------------------- the budget, a hard bound
BYTE_PARTS = ("prompt_bytes", "global_bytes", "record_bytes", "detached_bytes")


@pytest.mark.parametrize("seed", range(6))
def test_byte_budget_is_a_hard_bound_under_random_calls(seed):
    """Many prompts under a tiny budget, every public call in random order (step, window
    drops and resizes included): after each call `bytes` is within the budget, detached
    records included, `check()` passes, the byte figures add up to `bytes`, and every
    sequence the caller still runs is cached, detached or dropped."""
    rng = random.Random(seed)
    c = TreeCache(CacheConfig(max_depth=rng.choice([4, 8, 16]), byte_budget=MIN_BYTE_BUDGET))
    prompts = {k: [rng.randrange(40) for _ in range(rng.randint(1, 60))] for k in range(60)}
    running, finished = [], []  # the caller's sequences
    next_id, step = 0, 0
    ops = ["add", "extend", "step", "finish", "remove", "drop", "resize", "draft", "next_step"]
    for call in range(4000):  # far more adds than finishes: running sequences pile up
        op = rng.choices(ops, weights=[10, 6, 2, 1, 1, 1, 1, 1, 1])[0]
        if op == "add" or not running and op in ("extend", "step", "finish", "draft"):
            key = rng.randrange(len(prompts))
            c.add_sequence(next_id, key, prompts[key], step=step,
                           tag=rng.choice(("rollout", "runahead")))
            running.append(next_id)
            next_id += 1
        elif op == "extend":
            n = rng.choice((0, 1, 5, 50, 400))
            c.extend(rng.choice(running), [rng.randrange(rng.choice((8, 3000))) for _ in range(n)])
        elif op == "step":
            ids = rng.sample(running, rng.randint(1, len(running)))
            counts = [rng.randint(0, 6) for _ in ids]
            toks = np.array([rng.randrange(40) for _ in range(sum(counts))], np.int32)
            out = c.step(ids, toks, counts, [rng.randint(0, 8) for _ in ids])
            assert len(out) == len(ids)
        elif op == "finish":
            sid = running.pop(rng.randrange(len(running)))
            c.finish_sequence(sid)
            finished.append(sid)
        elif op == "remove":
            held = set(c.export_state().seq_ids.tolist())  # evicted finished ones are gone
            finished = [s for s in finished if s in held]
            pool = running + finished
            if pool:
                sid = rng.choice(pool)
                c.remove_sequence(sid)
                (running if sid in running else finished).remove(sid)
        elif op == "drop":
            c.drop_steps_before(rng.randint(0, step + 1))
        elif op == "resize":
            c.resize(rng.randint(MIN_BYTE_BUDGET, 4 * MIN_BYTE_BUDGET))
        elif op == "draft":
            c.draft(rng.choice(running), rng.randint(0, 8))
        else:
            step += 1
        s = c.stats()
        assert s["bytes"] <= s["byte_budget"], (op, s)
        c.check()
        assert sum(s[k] for k in BYTE_PARTS) == s["bytes"], s
        if call % 50 == 0:  # the finer breakdown adds up too
            assert sum(c.memory().values()) == s["bytes"], (op, c.memory(), s)
        assert s["running"] + s["detached"] + s["dropped"] == len(running), (op, s)
    s = c.stats()
    # the run exercised what it is about: evictions, detached and dropped sequences
    assert s["evicted_prompts"] > 0 and s["evicted_running"] > 0 and s["dropped_running"] > 0
    for sid in running:  # the caller finishes what it runs, dropped ones included
        c.finish_sequence(sid)
    assert c.stats()["detached"] == c.stats()["dropped"] == 0
