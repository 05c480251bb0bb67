"""Replay simulator: lockstep semantics, cache visibility, run-ahead, CLI (docs/replay.md)."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import random
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from openrlhf_srt.cache import CacheConfig, TreeCache, prompt_key
from openrlhf_srt.data.traces import TraceFormatError, TraceRecord, read_traces
from openrlhf_srt.replay.cache_drafter import CacheDrafter
from openrlhf_srt.replay.drafters import DraftTree, NgramDrafter, RunAheadRollout, SeqState
from openrlhf_srt.replay.reference_cache import ReferenceCache
from openrlhf_srt.replay.rounds import accepted_lengths, flat_gather, replay
from openrlhf_srt.replay.simulator import RunAhead, Strategy, verify
from openrlhf_srt.replay.strategies import CACHE_DESIGNS, Common, make_strategies
from openrlhf_srt.replay.stream import count_response_tokens, iter_steps, steps_from_records

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "reference_traces"  # tests/reference_traces/README.md
TRACES = [DATA / "smollm2_math_t0.6.jsonl.gz", DATA / "smollm2_math_t1.0.jsonl.gz"]
ARCTIC = "arctic_inference.suffix_decoding._C"
# The per-prompt online cache on each implementation: the native cache, its pure-Python
# reference (same rules) and ArcticInference's trees (vLLM's suffix rules; make bench).
IMPLEMENTATIONS = ["native", "reference", "arctic"]


def cli_main(argv):
    spec = importlib.util.spec_from_file_location("replay_cli", ROOT / "tools" / "replay.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def rec(step, prompt, sample, response, key=None):
    return TraceRecord(step=step, prompt_key=key if key is not None else prompt[0],
                       prompt_token_ids=list(prompt), sample_index=sample,
                       response_token_ids=list(response), finish_reason="stop",
                       policy_version=step)


def srt(implementation, name="srt", history=False):
    """Per-prompt trees filled online (or, with ``history``, after each step), no length or
    probability cut."""
    if implementation == "arctic":
        pytest.importorskip(ARCTIC, reason="arctic-inference is not installed (make bench)")
        from openrlhf_srt.replay.arctic import ArcticDrafter

        make = partial(ArcticDrafter, name=name, prompt_mode="history" if history else "online",
                       factor=100.0, min_prob=0.0)
    else:
        make = partial(CacheDrafter, name, rule="prompt", min_prob=0.0, history=history,
                       reference=implementation == "reference")
    return Strategy(name, make)


def tokens_per_step(records, strategy, order="engine"):
    # engine order by default: the hand-computed cases below walk a round sequence by sequence
    return replay(records, [strategy], order=order, progress=False)[0]


@pytest.mark.parametrize("implementation", ["native", "reference"])
def test_lockstep_siblings_by_hand(implementation):
    # Two samples A, B of prompt [9], both answering 5 6 7 2; the cache's per-prompt tree
    # (prompt + responses), engine order (A's tokens reach the cache before B drafts in the
    # same round).
    # round 1: A: [9] occurs twice (both prompts), never continued -> no draft, produces 5.
    #   B: [9] now continues with A's 5 -> draft [5], accepted, + 6: 2 tokens.
    # round 2: A: [9 5] continues with B's 6 -> draft [6], accepted, + 7: 2 tokens.
    #   B: [9 5 6] continues with A's 7 -> draft [7], accepted, + 2 (the end): 2 tokens.
    # round 3: A: [9 5 6 7] continues with B's 2 -> draft [2], accepted, it ends the response.
    # A: 1 + 2 + 1, B: 2 + 2 -> 8 tokens in 5 verification steps, 4 accepted, 4 hits.
    records = [rec(0, [9], 0, [5, 6, 7, 2]), rec(0, [9], 1, [5, 6, 7, 2])]
    res = tokens_per_step(records, srt(implementation))
    assert (res.total.tokens, res.total.steps) == (8, 5)
    assert res.total.accepted == 4 and res.total.hits == 4
    # sync order: nobody sees a sibling's tokens of the same round -> one token per step.
    res = tokens_per_step(records, srt(implementation), order="sync")
    assert (res.total.tokens, res.total.steps) == (8, 8)


def test_lockstep_siblings_by_hand_arctic():
    # The same with ArcticInference's rules: per-prompt trees of responses only, and the
    # whole context is never matched.
    # round 1: the context is the prompt alone (no suffix shorter than it to match): A and B
    #   draft nothing and produce 5 each.
    # round 2: A: [5] occurs twice (A, B) without continuation -> no draft, produces 6.
    #   B: [5] now continues with A's 6 -> draft [6], accepted, + bonus 7: 2 tokens.
    # round 3: A: [6] continues with B's 7 -> draft [7], accepted, + 2 (end): 2 tokens.
    #   B: [7] continues with A's 2 -> draft [2], accepted, it ends the response: 1 token.
    # A: 1 + 1 + 2, B: 1 + 2 + 1 -> 8 tokens in 6 verification steps, 3 accepted, 3 hits.
    records = [rec(0, [9], 0, [5, 6, 7, 2]), rec(0, [9], 1, [5, 6, 7, 2])]
    res = tokens_per_step(records, srt("arctic"))
    assert (res.total.tokens, res.total.steps) == (8, 6)
    assert res.total.accepted == 3 and res.total.hits == 3
    res = tokens_per_step(records, srt("arctic"), order="sync")
    assert (res.total.tokens, res.total.steps) == (8, 8)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_tokens_per_step_counts_end_of_response(implementation):
    # A later step replays the same response with the earlier one cached: the whole
    # response is drafted at once; the last step produces only the tokens that were left.
    records = [rec(0, [9], 0, [5, 6, 7, 2]), rec(1, [9], 0, [5, 6, 7, 2])]
    res = tokens_per_step(records, srt(implementation))
    assert res.by_step[0].steps == 4
    # step 1: the project's cache indexes the prompt, so round 1 drafts 5 6 7 2 from it;
    # ArcticInference has no match in round 1 (the context is the prompt alone) and drafts
    # 6 7 2 in round 2.
    want = (2, 4, 3) if implementation == "arctic" else (1, 4, 4)
    assert (res.by_step[1].steps, res.by_step[1].tokens, res.by_step[1].accepted) == want


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_history_never_sees_the_current_step(implementation):
    # identical siblings of one step give no drafts at all; the next step drafts from them
    # (all of the response, or with ArcticInference all but a first token without a match)
    records = [rec(0, [9], i, [5, 6, 7, 2]) for i in range(3)] + [rec(1, [9], 0, [5, 6, 7, 2])]
    res = tokens_per_step(records, srt(implementation, history=True))
    assert res.by_step[0].hits == 0
    assert res.by_step[1].hits > 0 and res.by_step[1].accepted >= 3


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_runahead_uses_next_step_and_never_changes_responses(implementation):
    records = [rec(s, [9], i, [5, 6, 7, 8, 2]) for s in range(2) for i in range(2)]
    records[3] = rec(1, [9], 1, [4, 3, 4, 3, 2])
    before = copy.deepcopy(records)
    ra = RunAhead(prompt_fraction=1.0, samples=1, token_fraction=0.6)
    plain = tokens_per_step(records, srt(implementation))
    ahead = tokens_per_step(records, Strategy("srt-runahead", srt(implementation).make,
                                              runahead=ra))
    assert records == before
    assert ahead.total.tokens == plain.total.tokens == sum(len(r.response_token_ids)
                                                          for r in records)
    # step 0 drafts 6 7 after 5 from step 1's sample 0 cut to 3 tokens (5 6 7)
    assert ahead.by_step[0].steps < plain.by_step[0].steps
    assert ahead.by_step[0].accepted > plain.by_step[0].accepted
    later = steps_from_records([r for r in records if r.step == 1])[0]
    assert ra.partials([9], later) == [RunAheadRollout(9, [9], [5, 6, 7])]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_runahead_rollouts_feed_their_step_only(implementation):
    d = srt(implementation).make()

    def sibling(step, seq_id):
        seq = SeqState(seq_id, step, 7, [9], [1, 2, 3], response=[1])
        d.start(seq)
        d.extend(seq, [1])
        return seq

    d.begin_step(0, [RunAheadRollout(7, [9], [1, 2, 3])])
    seq = sibling(0, 0)
    assert d.draft(seq, 4).token_ids == [2, 3]  # from the run-ahead rollout
    d.finish(seq)
    d.end_step(0)
    d.begin_step(1)
    assert d.draft(sibling(1, 1), 4).token_ids == []  # gone with its step


def test_verify_tree_and_path():
    path = DraftTree([5, 6, 9], [-1, 0, 1])
    assert verify(path, [5, 6, 7, 8], 0) == 2
    tree = DraftTree([5, 4, 7, 6, 8], [-1, -1, 0, 0, 3])  # 5 -> {7, 6 -> 8}, 4
    assert verify(tree, [5, 6, 8, 2], 0) == 3
    assert verify(tree, [4, 6], 0) == 1
    assert verify(tree, [5, 6], 0) == 2  # never beyond the response


def test_ngram_proposes_what_followed_the_last_occurrence():
    d = NgramDrafter(min_n=1, max_n=2)
    seq = SeqState(0, 0, 1, [1, 2, 3, 1, 2], [4, 1, 2, 9], response=[4, 1, 2])
    assert d.draft(seq, 2).token_ids == [4, 1]  # [1, 2] occurred last at positions 3-4


def test_bad_input():
    with pytest.raises(ValueError, match="no records"):
        replay([], make_strategies(["native-srt"]), progress=False)
    with pytest.raises(ValueError, match="unknown strategies"):
        make_strategies(["nope"])
    with pytest.raises(ValueError, match="duplicate"):
        replay([rec(0, [9], 0, [1]), rec(0, [9], 0, [2])], make_strategies(["native-srt"]),
               progress=False)


def test_arctic_strategies_need_arctic_inference(tmp_path, capsys):
    try:
        importlib.import_module(ARCTIC)
    except ImportError:
        with pytest.raises(RuntimeError, match="make bench"):
            make_strategies(["arctic-global"])
        trace = tmp_path / "t.jsonl"
        trace.write_text("")
        assert cli_main([str(trace), "--strategies", "arctic-global", "--quiet"]) == 2
        assert "make bench" in capsys.readouterr().err
    else:
        assert [s.name for s in make_strategies(["arctic-global"])] == ["arctic-global"]


def test_cli_errors(tmp_path, capsys):
    assert cli_main([str(tmp_path / "missing.jsonl"), "--quiet"]) == 2
    assert "not found" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert cli_main([str(empty), "--quiet"]) == 2
    assert "no records" in capsys.readouterr().err


def test_cli_on_shared_traces_writes_plot(tmp_path, capsys):
    png, js = tmp_path / "replay.png", tmp_path / "replay.json"
    argv = [str(p) for p in TRACES] + ["--prompts", "1", "--strategies",
                                       "ngram,native-srt-runahead",
                                       "--plot", str(png), "--json", str(js), "--quiet"]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "tok/step" in out and "native-srt-runahead" in out and "ngram" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figures = json.loads(js.read_text())
    assert len(figures) == 2
    for results in figures.values():
        assert all(r["total"]["tokens_per_step"] >= 1.0 for r in results)
    # the replay reproduces every recorded token: tokens equal the responses' lengths
    first = read_traces(TRACES[0])
    n = sum(len(r.response_token_ids) for r in first if r.prompt_key == first[0].prompt_key)
    assert figures[str(TRACES[0])][0]["total"]["tokens"] == n


def test_default_strategy_drafts_a_tree():
    # One step, two identical samples: the recommended rule drafts a token tree from the
    # sibling's tokens and reproduces every recorded token in no more steps than SRT.
    records = [rec(0, [9], 0, [5, 6, 7, 8, 2]), rec(0, [9], 1, [5, 6, 7, 8, 2])]
    strategies = make_strategies(["native-srt", "native-default"])
    results = replay(records, strategies, progress=False)
    assert all(r.total.tokens == 10 for r in results)
    by_name = {r.strategy: r.total for r in results}
    assert by_name["native-default"].steps <= by_name["native-srt"].steps
    assert strategies[1].settings()["tree_spec"] is True


# ------------------------------------------------------------- the project's cache, replayed
def random_trace(seed, steps=3, prompts=3, samples=3, vocab=4, length=(0, 14)):
    """Short responses over a few tokens, so that trees match and drafts get accepted."""
    rng = random.Random(seed)
    heads = [[10 + p] + [rng.randrange(vocab) for _ in range(rng.randint(0, 2))]
             for p in range(prompts)]
    return [rec(s, heads[p], i, [rng.randrange(vocab) for _ in range(rng.randint(*length))],
                key=10 + p)
            for s in range(steps) for p in range(prompts) for i in range(samples)]


def figures(result):
    def rows(stats):
        return {k: vars(v) for k, v in sorted(stats.items())}

    return vars(result.total), rows(result.by_step), rows(result.by_position)


@pytest.mark.parametrize("order", ["sync", "engine"])
@pytest.mark.parametrize("tree", [False, True], ids=["path", "tree"])
@pytest.mark.parametrize("design", sorted(CACHE_DESIGNS))
def test_native_and_reference_caches_replay_the_same(design, tree, order):
    # In sync order the native path designs (all but history) run on the batched loop (one
    # TreeCache.step per round, numpy verification); the reference always runs the simple
    # per-sequence loop, so equal figures check the fast loop against it.
    common = Common(max_depth=6, budget=3, min_prob=0.1, tree=tree)
    strategies = make_strategies([f"native-{design}", f"reference-{design}"], common=common)
    settings = CACHE_DESIGNS[design][1]
    batched = not settings.get("tree", tree) and not settings.get("history")
    assert [s.loop for s in strategies] == ["batched" if batched else "per-sequence",
                                            "per-sequence"]
    for seed in range(4):
        records = random_trace(seed)
        native, reference = replay(records, strategies, order=order, progress=False)
        assert native.total.accepted > 0, "the trace must exercise drafting"
        assert figures(native) == figures(reference), (design, seed)


def test_batched_loop_equals_per_sequence_loop_on_shared_traces():
    records = [r for r in read_traces(TRACES[0]) if r.step < 2]
    fast = make_strategies(["native-merge", "native-das", "native-srt-runahead"])
    slow = make_strategies(["native-merge", "native-das", "native-srt-runahead"])
    for s in slow:
        s.loop = "per-sequence"
    assert {s.loop for s in fast} == {"batched"}
    for a, b in zip(replay(records, fast, progress=False), replay(records, slow, progress=False)):
        assert a.total.hits > 0
        assert figures(a) == figures(b), a.strategy


def test_numpy_verification_and_gather():
    # drafts [5 6 9] [] [7 7] [1]; recorded tokens from starts 0, 4, 4, 8 with 3, 2, 1, 5 left
    data = np.array([5, 6, 7, 8, 7, 2, 9, 9, 1, 0], dtype=np.int32)
    draft = np.array([5, 6, 9, 7, 7, 1], dtype=np.int32)
    offsets = np.array([0, 3, 3, 5, 6])
    starts, left = np.array([0, 4, 4, 8]), np.array([3, 2, 1, 5])
    # 5 6 match, 9 != 7 -> 2; empty -> 0; 7 matches, second 7 beyond the 1 token left -> 1; 1
    assert accepted_lengths(draft, offsets, data, starts, left).tolist() == [2, 0, 1, 1]
    assert flat_gather(data, starts, np.array([3, 0, 1, 2])).tolist() == [5, 6, 7, 7, 1, 0]


def write_trace(path, records):
    """The records as a trace file; the reader derives each prompt_key from the prompt."""
    lines = []
    for r in records:
        obj = json.loads(r.to_json())
        del obj["prompt_key"]
        lines.append(json.dumps(obj) + "\n")
    path.write_text("".join(lines))


def test_stream_reads_step_by_step_and_refuses_steps_going_back(tmp_path):
    records = [rec(0, [9], 0, [1, 2]), rec(0, [8], 0, [3]), rec(0, [9], 1, [4]),
               rec(1, [9], 0, [5, 6, 7])]
    trace = tmp_path / "t.jsonl"
    write_trace(trace, records)
    steps = list(iter_steps(trace))
    assert [s.step for s in steps] == [0, 1]
    # prompts in order of first appearance, samples by index within a prompt
    k9, k8 = (prompt_key([p]) for p in (9, 8))
    assert steps[0].prompt_keys.tolist() == [k9, k9, k8]
    assert [steps[0].response(i).tolist() for i in range(3)] == [[1, 2], [4], [3]]
    assert steps[1].tokens == 3
    assert count_response_tokens(trace) == 7
    assert [s.prompt_keys.tolist() for s in iter_steps(trace, prompts=1)] == [[k9, k9], [k9]]
    write_trace(trace, records + [rec(0, [9], 2, [1])])
    with pytest.raises(TraceFormatError, match=r"t\.jsonl:5: step 0 after step 1"):
        list(iter_steps(trace))
    write_trace(trace, records[:3] + [rec(0, [9], 1, [1])])
    with pytest.raises(TraceFormatError, match=r"t\.jsonl:4: duplicate record"):
        list(iter_steps(trace))


def test_reference_cache_counts_equal_native_under_insert_remove_and_window():
    rng = random.Random(3)
    config = CacheConfig(max_depth=5, rule="merge")
    native, reference = TreeCache(config), ReferenceCache(config)
    running, done = set(), set()
    for op in range(400):
        kind = rng.random()
        if kind < 0.15 or not running:
            sid = op
            key, step = rng.randrange(3), op // 100
            for c in (native, reference):
                c.add_sequence(sid, key, [50 + key, rng.randrange(3)][:1], step=step)
            running.add(sid)
        elif kind < 0.8:
            sid = rng.choice(sorted(running))
            toks = [rng.randrange(3) for _ in range(rng.randint(1, 3))]
            for c in (native, reference):
                c.extend(sid, toks)
        elif kind < 0.9:
            sid = rng.choice(sorted(running))
            for c in (native, reference):
                c.finish_sequence(sid)
            running.discard(sid)
            done.add(sid)
        elif kind < 0.97 and done:
            sid = rng.choice(sorted(done))
            for c in (native, reference):
                c.remove_sequence(sid)
            done.discard(sid)
        else:
            step = op // 100
            assert native.drop_steps_before(step) == reference.drop_steps_before(step)
            done = {s for s in done if s // 100 >= step}
        assert native.dump() == reference.dump()
        for key in range(3):
            try:
                want = native.dump(key)
            except ValueError:  # no sequence of this prompt is cached
                continue
            assert reference.dump(key) == want
        for sid in running:
            a, b = native.draft(sid, 3, 0.0), reference.draft(sid, 3, 0.0)
            assert a.tree_tokens.tolist() == b.tree_tokens.tolist()
            assert a.tree_parents.tolist() == b.tree_parents.tolist()
            assert (a.match_len, a.source) == (b.match_len, b.source)


def test_recorded_runahead_outputs_are_not_replayed_as_samples(tmp_path):
    """A training run's trace holds its run-ahead outputs too (tag "runahead", sample index
    possibly equal to a rollout's): they never were samples of the step and are skipped."""
    from dataclasses import replace

    records = [rec(0, [9], 0, [1, 2]), replace(rec(0, [9], 0, [5, 5, 5]), tag="runahead"),
               rec(1, [9], 0, [3])]
    trace = tmp_path / "t.jsonl"
    write_trace(trace, records)
    for steps in (list(iter_steps(trace)), steps_from_records(records)):
        assert [(s.step, s.tokens) for s in steps] == [(0, 2), (1, 1)]

def test_cli_replays_a_trace_directory_as_its_step_files_in_order(tmp_path, capsys):
    """A training run's trace directory (one file per step, docs/traces.md) replays exactly
    as the same records in one file."""
    from openrlhf_srt.data.traces import StepTraceWriter, TraceWriter

    records = read_traces(TRACES[0])
    keep = sorted({r.prompt_key for r in records})[:2]
    records = [r for r in records if r.prompt_key in keep]
    with TraceWriter(tmp_path / "one.jsonl.gz") as w:
        for r in records:
            w.write(r)
    run = StepTraceWriter(tmp_path / "run")
    for step in sorted({r.step for r in records}, reverse=True):  # written out of order
        run.begin_step(step)
        for r in records:
            if r.step == step:
                run.write(r)
        run.end_step()
    figures = []
    for src in ("one.jsonl.gz", "run"):
        out = tmp_path / f"{src}.json"
        assert cli_main([str(tmp_path / src), "--strategies", "native-srt", "--quiet",
                         "--json", str(out)]) == 0
        results = json.loads(out.read_text())[str(tmp_path / src)]
        figures.append([{k: v for k, v in r.items() if k not in ("seconds", "tokens_per_second")}
                        for r in results])  # all but the timing
    assert figures[0] == figures[1]
    assert figures[0][0]["total"]["tokens"] == sum(len(r.response_token_ids) for r in records)
    assert "run: " in capsys.readouterr().out  # the directory is named in the report
