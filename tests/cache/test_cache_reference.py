"""Property tests: the native cache against its pure-Python reference (openrlhf_srt.replay.reference_cache)."""

from __future__ import annotations

import os
import random
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openrlhf_srt.cache import RULES, CacheConfig, TreeCache
from openrlhf_srt.replay.reference_cache import ReferenceTree
from openrlhf_srt.replay.reference_cache import draft as ref_draft

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenarios(draw, vocab=(2, 5), length=(0, 24), nseqs=(1, 6), hot=False):
    """Small vocabularies so that matches happen. `hot` puts token 0 before every token, so
    the node of 0 gets one child per distinct token: a hub (>= 32 children) in big ones."""
    depth = draw(st.integers(2, 7))
    vocab = draw(st.integers(*vocab))
    tok = st.integers(0, vocab - 1)
    prompts = draw(st.lists(st.lists(tok, min_size=1, max_size=6), min_size=1, max_size=3))
    seqs = draw(st.lists(st.tuples(st.integers(0, len(prompts) - 1),
                                   st.lists(tok, min_size=length[0], max_size=length[1])),
                         min_size=nseqs[0], max_size=nseqs[1]))
    if hot:
        seqs = [(p, [x for t in resp for x in (0, t)]) for p, resp in seqs]
    return {"depth": depth, "vocab": vocab, "prompts": prompts, "seqs": seqs,
                "rule": draw(st.sampled_from(RULES)), "seed": draw(st.integers(0, 2**32 - 1)),
                "budget": draw(st.integers(0, 8)), "min_prob": draw(st.sampled_from([0.0, 0.1, 0.34])),
                "weight": draw(st.sampled_from([1.0, 0.5, 2.0]))}


def run_scenario(sc):
    """Insert sequences with random interleaving, finish and remove some; return state."""
    rng = random.Random(sc["seed"])
    cfg = CacheConfig(max_depth=sc["depth"], rule=sc["rule"], global_weight=sc["weight"])
    cache = TreeCache(cfg)
    seqs = {}
    for i, (p, resp) in enumerate(sc["seqs"]):
        cache.add_sequence(100 + i, 1000 + p, sc["prompts"][p], step=i % 3)
        seqs[100 + i] = {"p": p, "resp": resp, "done": 0, "running": True}
    pending = [s for s in seqs if seqs[s]["resp"]]
    while pending:  # online, interleaved chunks of 1..3 tokens
        s = rng.choice(pending)
        info = seqs[s]
        k = rng.randint(1, 3)
        chunk = info["resp"][info["done"] : info["done"] + k]
        cache.extend(s, chunk)
        info["done"] += len(chunk)
        if info["done"] == len(info["resp"]):
            pending.remove(s)
    for s, info in seqs.items():
        if rng.random() < 0.4:
            cache.finish_sequence(s)
            info["running"] = False
    for s in list(seqs):
        if rng.random() < 0.3:
            cache.remove_sequence(s)
            del seqs[s]
    return cache, seqs


def reference_trees(sc, seqs):
    ptrees = {}
    for p in range(len(sc["prompts"])):
        texts = [sc["prompts"][p] + info["resp"] for info in seqs.values() if info["p"] == p]
        if texts:
            ptrees[p] = ReferenceTree.build(texts, sc["depth"])
    gtree = ReferenceTree.build([info["resp"] for info in seqs.values()], sc["depth"])
    return ptrees, gtree


def assert_same_draft(got, want):
    path, probs, ttoks, tpar, tprobs, match_len, source = want
    assert got.tokens.tolist() == path
    np.testing.assert_allclose(got.probs, probs, rtol=1e-6)
    assert got.tree_tokens.tolist() == ttoks
    assert got.tree_parents.tolist() == tpar
    np.testing.assert_allclose(got.tree_probs, tprobs, rtol=1e-6)
    assert got.match_len == match_len
    assert got.source == source


def test_big_scenarios_exercise_hub_nodes():
    """Guard for the tests above: the big scenarios must create hub nodes."""
    rng = random.Random(4)
    c = TreeCache(CacheConfig(max_depth=4))
    for i in range(4):
        c.add_sequence(i, 1, [1], step=0)
        c.extend(i, [x for _ in range(30) for x in (0, rng.randrange(40, 90))])
    assert c.stats()["hubs"] > 0
    c.check()


def big_scenarios():
    return scenarios(vocab=(40, 90), length=(30, 60), nseqs=(4, 10), hot=True)


@SETTINGS
@given(st.one_of(scenarios(), big_scenarios()))
def test_counts_and_nodes_match_reference(sc):
    cache, seqs = run_scenario(sc)
    cache.check()
    ptrees, gtree = reference_trees(sc, seqs)
    assert cache.dump() == gtree.nodes()
    for p, ref in ptrees.items():
        assert cache.dump(1000 + p) == ref.nodes()
    st_ = cache.stats()
    assert st_["sequences"] == len(seqs)
    assert st_["running"] == sum(info["running"] for info in seqs.values())
    assert st_["prompts"] == len(ptrees)


@SETTINGS
@given(st.one_of(scenarios(), big_scenarios()), st.lists(st.integers(0, 30), min_size=1, max_size=10))
def test_drafts_match_reference(sc, probe):
    cache, seqs = run_scenario(sc)
    ptrees, gtree = reference_trees(sc, seqs)
    kw = {"rule": sc["rule"], "max_depth": sc["depth"], "budget": sc["budget"],
              "min_prob": sc["min_prob"], "w": sc["weight"]}
    for s, info in seqs.items():
        prompt = sc["prompts"][info["p"]]
        want = ref_draft(ptrees[info["p"]], gtree, prompt + info["resp"], len(prompt), **kw)
        if info["running"]:
            assert_same_draft(cache.draft(s, sc["budget"], sc["min_prob"]), want)
        got = cache.draft_context(1000 + info["p"], prompt + info["resp"], sc["budget"],
                                  sc["min_prob"], response_start=len(prompt))
        assert_same_draft(got, want)
    # arbitrary contexts, known and unknown prompts
    probe = [t % sc["vocab"] for t in probe]
    for p in range(len(sc["prompts"]) + 1):
        want = ref_draft(ptrees.get(p), gtree, probe, 0, **kw)
        assert_same_draft(cache.draft_context(1000 + p, probe, sc["budget"], sc["min_prob"]), want)


@SETTINGS
@given(scenarios())
def test_batched_step_equals_extend_then_draft(sc):
    """step() = extend every sequence, then draft each one's best path."""
    cache_a, seqs = run_scenario(sc)
    cache_b, _ = run_scenario(sc)
    running = [s for s, info in seqs.items() if info["running"]]
    rng = random.Random(sc["seed"] + 1)
    for _ in range(3):
        new = {s: [rng.randrange(sc["vocab"]) for _ in range(rng.randint(0, 2))] for s in running}
        budgets = [rng.randint(0, 6) for _ in running]
        flat = np.array([t for s in running for t in new[s]], dtype=np.int32)
        out = cache_a.step(running, flat, [len(new[s]) for s in running], budgets, sc["min_prob"])
        for s in running:
            cache_b.extend(s, new[s])
        for i, s in enumerate(running):
            d = cache_b.draft(s, budgets[i], sc["min_prob"], tree=False)
            toks, probs = out[i]
            assert toks.tolist() == d.tokens.tolist()
            np.testing.assert_allclose(probs, d.probs)
            assert out.match_len[i] == (d.match_len if budgets[i] else 0)
            assert out.score[i] == pytest.approx(d.score, rel=1e-6)
    cache_a.check()
    assert cache_a.dump() == cache_b.dump()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_snapshot_round_trip_on_random_scenarios(sc):
    cache, seqs = run_scenario(sc)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "snap.srt")
        cache.save(path)
        loaded = TreeCache.load(path)
    loaded.check()
    assert loaded.dump() == cache.dump()
    for p in range(len(sc["prompts"])):
        if any(info["p"] == p for info in seqs.values()):
            assert loaded.dump(1000 + p) == cache.dump(1000 + p)
    assert loaded.stats()["running"] == 0  # nothing runs across a restart
    for s, info in seqs.items():
        if info["running"]:  # restored finished: the same draft from its context
            prompt = sc["prompts"][info["p"]]
            a = cache.draft(s, sc["budget"])
            b = loaded.draft_context(1000 + info["p"], prompt + info["resp"], sc["budget"],
                                     response_start=len(prompt))
            assert a.tokens.tolist() == b.tokens.tolist()
            assert a.tree_tokens.tolist() == b.tree_tokens.tolist()
