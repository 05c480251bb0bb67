"""Run-ahead building blocks: bubble detector, look-ahead window, budget, prompt choice."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openrlhf_srt.runahead import BubbleDetector, LookaheadPrompts, RunaheadBudget, select_runahead

# ---------------------------------------------------------------- bubble detector


def feed(det, samples, lookahead=1):
    return [det.observe(r, t, lookahead) for t, r in samples]


def test_bubble_starts_after_min_duration_and_samples():
    det = BubbleDetector(threshold=0.25, min_seconds=1.0, min_samples=2)
    det.begin_step(dispatched=16, now=0.0)  # limit = 4
    assert det.limit == 4
    got = feed(det, [(0.0, 16), (1.0, 10), (2.0, 3), (2.5, 3), (3.0, 2), (3.5, 1)])
    # below from t=2.0; confirmed at t=3.0 (1 s and 3 samples)
    assert got == [False, False, False, False, True, True]
    assert det.in_bubble
    assert det.end_step(4.0) == pytest.approx(2.0)


def test_bubble_needs_lookahead_and_resets_on_recovery():
    det = BubbleDetector(threshold=0.5, min_seconds=0.0, min_samples=1)
    det.begin_step(dispatched=8, now=0.0)
    assert feed(det, [(0.0, 8), (1.0, 2)], lookahead=0) == [False, False]
    assert det.observe(2, 1.5, lookahead=3)
    assert not det.observe(6, 2.0)  # back above (e.g. replacement prompts arrived)
    assert det.observe(1, 3.0)
    det.end_step(3.5)
    assert det.bubble_seconds == pytest.approx(1.0 + 0.5)


def test_bubble_not_armed_before_requests_arrive():
    det = BubbleDetector(threshold=0.25, min_seconds=0.0, min_samples=1)
    det.begin_step(dispatched=8, now=0.0)
    assert not det.observe(0, 0.0)  # requests not yet in the engine
    assert not det.observe(0, 0.5)
    assert not det.observe(8, 1.0)
    assert det.observe(0, 2.0)
    assert det.end_step(2.0) == 0.0


def test_idle_engine_is_in_bubble_from_start_and_step_resets():
    det = BubbleDetector(threshold=0.25, min_seconds=0.5, min_samples=2)
    det.begin_step(dispatched=0, now=10.0)
    assert det.observe(0, 10.6)
    assert det.end_step(11.0) == pytest.approx(1.0)
    det.begin_step(dispatched=4, now=20.0)
    assert det.bubble_seconds == 0.0
    assert not det.observe(0, 21.0)
    assert det.end_step(22.0) == 0.0
    assert not det.observe(0, 23.0)  # closed until the next begin_step


def test_long_tail_batch():
    """64 samples, long-tailed lengths: 62 finish by t=10, two run to t=60."""
    lengths = [5 + i % 6 for i in range(62)] + [60, 60]
    det = BubbleDetector(threshold=0.25, min_seconds=2.0, min_samples=3)
    det.begin_step(dispatched=64, now=0.0)
    first = None
    for t in range(61):
        running = sum(1 for L in lengths if L > t)
        if det.observe(running, float(t)) and first is None:
            first = t
    det.end_step(60.0)
    # running at t=8: 20 (+2 long), t=9: 10 (+2) < 16 -> below from t=9; confirmed at t=11
    # (2 s and 3 samples); bubble from t=9 to the end of the step at t=60
    assert first == 11
    assert det.bubble_seconds == pytest.approx(51.0)


@pytest.mark.parametrize("kw", [{"threshold": 0.0}, {"threshold": 1.5},
                                {"min_seconds": -1}, {"min_samples": 0}])
def test_bubble_rejects_bad_settings(kw):
    with pytest.raises(ValueError):
        BubbleDetector(**kw)


# ---------------------------------------------------------------- look-ahead window

def batches(n, per=1):
    """Items shaped like OpenRLHF's prompt dataloader: (datasources, prompts, labels, images)."""
    return [(["d"] * per, [f"p{i}.{j}" for j in range(per)], [f"l{i}.{j}" for j in range(per)],
             [None] * per) for i in range(n)]


def unpack(item):
    return list(zip(item[1], item[2]))


def test_peek_does_not_consume():
    la = LookaheadPrompts(batches(5), unpack=unpack)
    assert la.peek(3) == [("p0.0", "l0.0"), ("p1.0", "l1.0"), ("p2.0", "l2.0")]
    assert la.peek(2) == [("p0.0", "l0.0"), ("p1.0", "l1.0")]
    assert next(la)[1] == ["p0.0"]
    assert la.peek(10) == [(f"p{i}.0", f"l{i}.0") for i in range(1, 5)]
    assert [b[1][0] for b in la] == ["p1.0", "p2.0", "p3.0", "p4.0"]
    assert la.peek(3) == [] and la.exhausted
    with pytest.raises(StopIteration):
        la.next_batch()


def test_peek_counts_prompts_across_multi_prompt_items():
    la = LookaheadPrompts(batches(3, per=2), unpack=unpack)
    assert [p for p, _ in la.peek(3)] == ["p0.0", "p0.1", "p1.0"]
    assert la.buffered == 2


def test_works_with_openrlhf_collect_prompt_batch():
    pytest.importorskip("openrlhf", reason="openrlhf 0.11.2 is installed by make setup")
    sg = pytest.importorskip("openrlhf.trainer.ppo_utils.samples_generator",
                             reason="needs ray (make setup installs it)")
    la = LookaheadPrompts(batches(6), unpack=unpack)
    la.peek(4)
    prompts, _labels, _, exhausted = sg._collect_prompt_batch(la, 3)
    assert prompts == ["p0.0", "p1.0", "p2.0"] and not exhausted
    prompts, _, _, exhausted = sg._collect_prompt_batch(la, 5)
    assert prompts == ["p3.0", "p4.0", "p5.0"] and exhausted


ops = st.lists(st.one_of(
    st.tuples(st.just("peek"), st.integers(0, 7)),
    st.tuples(st.just("next"), st.integers(1, 3)),
    st.tuples(st.just("save_restore"), st.booleans()),
), max_size=40)


class StatefulSource:
    """Stands in for a stateful dataloader: its state is how many items it has yielded."""

    def __init__(self, items, start=0):
        self.items, self.pos = items, start

    def __iter__(self):
        return self

    def __next__(self):
        if self.pos >= len(self.items):
            raise StopIteration
        self.pos += 1
        return self.items[self.pos - 1]


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 25), per=st.integers(1, 3), program=ops)
def test_every_prompt_exactly_once_in_order(n, per, program):
    items = batches(n, per)
    src = StatefulSource(items)
    la = LookaheadPrompts(src, unpack=unpack)
    got = []
    for op, arg in program:
        if op == "peek":
            peeked = la.peek(arg)
            upcoming = [r for it in items[len(got):] for r in unpack(it)]
            assert peeked == upcoming[:arg]
        elif op == "next":
            for _ in range(arg):
                try:
                    got.append(next(la))
                except StopIteration:
                    break
        else:  # checkpoint, then resume in a fresh process
            state = la.state_dict()
            if arg:  # the dataloader restores its own position (OpenRLHF's case)
                src = StatefulSource(items, start=src.pos)
                la = LookaheadPrompts(src, unpack=unpack)
                la.load_state_dict(state, source_restored=True)
            else:  # the source is re-created from the start in the same order
                src = StatefulSource(items)
                la = LookaheadPrompts(src, unpack=unpack)
                la.load_state_dict(state)
    got.extend(la)
    assert got == items


def test_restore_rejects_used_window_and_short_source():
    la = LookaheadPrompts(batches(2), unpack=unpack)
    next(la)
    with pytest.raises(RuntimeError):
        la.load_state_dict({"consumed": 0, "buffer": []})
    with pytest.raises(ValueError):
        LookaheadPrompts(batches(1)).load_state_dict({"consumed": 3, "buffer": []})


# ---------------------------------------------------------------- budget and choice

def test_budget_grant():
    b = RunaheadBudget(max_tokens=1000, max_requests=4, max_new_tokens=100, samples_per_prompt=2)
    assert b.grant(0, 0) == 4
    assert b.grant(0, 3) == 1
    assert b.grant(700, 2) == 1
    assert b.grant(950, 0) == 0
    assert b.prompts_to_start(0, 1) == 1


@settings(max_examples=200, deadline=None)
@given(max_tokens=st.integers(0, 5000), max_req=st.integers(0, 20), mnt=st.integers(1, 600),
       outputs=st.lists(st.floats(0, 1), max_size=200))
def test_budget_never_exceeds_token_cap(max_tokens, max_req, mnt, outputs):
    """Simulate: start what grant() allows, finish requests with arbitrary output lengths."""
    b = RunaheadBudget(max_tokens=max_tokens, max_requests=max_req, max_new_tokens=mnt)
    used, in_flight = 0, 0
    for frac in outputs:
        in_flight += b.grant(used, in_flight)
        assert in_flight <= max_req
        if in_flight:
            in_flight -= 1
            used += int(frac * mnt)
        assert used + in_flight * mnt <= max_tokens or (used == 0 and in_flight == 0)
    assert used <= max_tokens


def test_budget_rejects_bad_values():
    with pytest.raises(ValueError):
        RunaheadBudget(max_tokens=-1)
    with pytest.raises(ValueError):
        RunaheadBudget(max_new_tokens=0)


def test_select_runahead():
    up = ["a", "b", "a", "c", "d", "e"]
    assert select_runahead(up, 3) == ["a", "b", "c"]
    assert select_runahead(up, 2, skip={"a"}) == ["b", "c"]
    assert select_runahead(up, 3, cached={"b": 10, "c": 2}, saturated=5) == ["a", "c", "d"]
    assert select_runahead(up, 0) == []


# ---------------------------------------------------------------- cost check (planner)

def _bubble_planner(max_slowdown):
    from openrlhf_srt.runahead import RunaheadPlanner

    plan = RunaheadPlanner(BubbleDetector(threshold=0.5, min_seconds=0.0, min_samples=1),
                           RunaheadBudget(max_tokens=10_000, max_requests=32,
                                          max_new_tokens=100, samples_per_prompt=2),
                           max_slowdown=max_slowdown)
    plan.begin_step(dispatched=16, now=0.0)
    return plan


def test_runahead_only_where_the_step_cost_has_room():
    from openrlhf_srt.drafting.cost_model import CPU_PRIOR, StepCost

    upcoming = list(range(10))
    # a GPU-like engine: up to 256 tokens per step cost the same; 2 rollouts left
    gpu = _bubble_planner(0.1)
    gpu.set_step_cost({"fixed": 0.02, "per_token": 1e-4, "knee": 256.0})
    assert gpu.poll(2, 1.0, upcoming, used_tokens=0, in_flight=0) == list(range(10))
    # this CPU (37 ms + 3.6 ms per token, no knee): two more rows beside two is +16%
    cpu = _bubble_planner(0.1)
    cpu.set_step_cost(CPU_PRIOR)
    assert cpu.affordable_requests(2) == 1 and cpu.poll(2, 1.0, upcoming, used_tokens=0,
                                                        in_flight=0) == []
    # ... allowed with a looser bound: 0.4 x 44.2 ms / 3.6 ms = 4.9 rows -> 2 prompts
    loose = _bubble_planner(0.4)
    loose.set_step_cost(CPU_PRIOR)
    assert loose.poll(2, 1.0, upcoming, used_tokens=0, in_flight=0) == [0, 1]
    # the run-ahead rows already in flight use up that room: none more start
    assert loose.affordable_requests(2, in_flight=4) == 0
    assert loose.poll(2, 2.0, upcoming, used_tokens=0, in_flight=4) == []
    # no cost known, or no bound: only the budget limits
    free = _bubble_planner(float("inf"))
    free.set_step_cost(CPU_PRIOR)
    assert free.affordable_requests(2) is None
    unknown = _bubble_planner(0.1)
    assert unknown.affordable_requests(2) is None
    assert StepCost(**{"fixed": 0.037, "per_token": 0.0036, "knee": 0.0}) == CPU_PRIOR
    with pytest.raises(ValueError, match="max_slowdown"):
        _bubble_planner(-0.1)
