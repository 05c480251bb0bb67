"""What the OpenRLHF integration keeps grows with nothing but its bounds in a long run: the
engine actor's per-prompt structures (the actor lives for the whole run; multi-turn prompts
grow every turn) and the cache snapshots on disk."""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="ray==2.55.0 is installed by `make setup` (cpu extra)")
pytest.importorskip("openrlhf", reason="openrlhf 0.11.2 is installed by `make setup`")


def test_prompt_counts_keep_the_most_recent_prompts_only():
    from openrlhf_srt.openrlhf.engines import PROMPT_COUNTS_LIMIT, PromptCounts

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
    from openrlhf_srt.openrlhf.trainer import SNAPSHOTS_KEPT, prune_snapshots, snapshot_dir

    assert SNAPSHOTS_KEPT == 1
    for step in (20, 40, 60):
        d = snapshot_dir(str(tmp_path), step)
        d.mkdir(parents=True)
        (d / "engine0.snap").write_bytes(b"x")
    (tmp_path / "_srt" / "notes").mkdir()  # not a snapshot set: left alone
    prune_snapshots(str(tmp_path))
    assert sorted(p.name for p in (tmp_path / "_srt").iterdir()) == ["global_step60", "notes"]
