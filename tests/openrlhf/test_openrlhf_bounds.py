"""What the OpenRLHF integration keeps grows with nothing but its bounds in a long run: the
engine actor's per-prompt structures (the actor lives for the whole run; multi-turn prompts
grow every turn) and the cache snapshots on disk."""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="ray==2.55.0 is installed by `make setup` (cpu extra)")
pytest.importorskip("openrlhf", reason="openrlhf 0.11.2 is installed by `make setup`")


def test_prompt_counts_keep_the_most_recent_prompts_only():
    from openrlhf_srt.openrlhf.engine_group import PROMPT_COUNTS_LIMIT, PromptCounts

    assert PROMPT_COUNTS_LIMIT == PromptCounts().limit
    counts = PromptCounts(limit=100)
    for key in range(1000):  # ten times the bound, each prompt generated twice
        counts.add(key)
        counts.add(key)
    assert len(counts) == 100
    assert counts.as_dict() == {k: 2 for k in range(900, 1000)}
    counts.add(900)  # used again: now the most recent, survives the next insertion
    counts.add(5000)
    assert 900 in counts.as_dict() and 901 not in counts.as_dict()
    assert len(counts) == 100


def test_only_the_newest_snapshot_set_is_kept(tmp_path):
    from openrlhf_srt.openrlhf.trainer_mixin import SNAPSHOTS_KEPT, prune_snapshots, snapshot_dir

    assert SNAPSHOTS_KEPT == 1
    for step in (20, 40, 60):
        d = snapshot_dir(str(tmp_path), step)
        d.mkdir(parents=True)
        (d / "engine0.snap").write_bytes(b"x")
    (tmp_path / "_srt" / "notes").mkdir()  # not a snapshot set: left alone
    prune_snapshots(str(tmp_path))
    assert sorted(p.name for p in (tmp_path / "_srt").iterdir()) == ["global_step60", "notes"]


def test_runahead_requests_in_flight_stay_below_the_limit():
    """srt_runahead starts no more run-ahead requests than --srt.runahead_max_requests in
    flight, whatever it is asked; finished or aborted ones leave (the actor's run-ahead map
    is bounded by the flag). The actor's method on a stand-in engine (no Ray, no vLLM)."""
    import asyncio
    from types import SimpleNamespace

    from vllm import SamplingParams

    from openrlhf_srt.openrlhf.engine_group import _SRTRolloutActor

    class ParkedEngine:  # every request runs until aborted
        def __init__(self):
            self.aborted = []

        async def generate(self, prompt, params, request_id, priority=0):
            await asyncio.Event().wait()
            yield SimpleNamespace(outputs=[SimpleNamespace(token_ids=[])])

        async def abort(self, rids):
            self.aborted += list(rids)

    async def scenario():
        actor = _SRTRolloutActor.__new__(_SRTRolloutActor)
        actor.llm, actor._ra_tasks, actor._ra_limit = ParkedEngine(), {}, 4
        actor._ra_requests = actor._ra_tokens = actor._srt_priority = 0
        params = SamplingParams(temperature=1.0, max_tokens=8)
        prompts = [[1, 2, i] for i in range(10)]
        first = await actor.srt_runahead(prompts, params, 2)  # 20 asked, 4 fit
        again = await actor.srt_runahead(prompts, params, 2)  # none fits
        in_flight = len(actor._ra_tasks)
        aborted = await actor.srt_abort_runahead()
        after = len(actor._ra_tasks)
        refill = await actor.srt_runahead(prompts[:1], params, 2)
        await actor.srt_abort_runahead()
        return first, again, in_flight, aborted, after, refill, len(actor.llm.aborted)

    assert asyncio.run(scenario()) == (4, 0, 4, 4, 0, 2, 6)
