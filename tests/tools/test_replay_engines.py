"""tools/replay_engines.py: a multi-engine replay with sticky routing and a group change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from openrlhf_srt.openrlhf.routing import home_engine
from openrlhf_srt.replay.stream import iter_steps

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT / "tests/reference_traces/smollm2_math_t0.6.jsonl.gz"


def test_scenarios_move_the_right_prompts_and_a_snapshot_restart_loses_nothing(load_tool, tmp_path):
    out = tmp_path / "engines.json"
    assert load_tool("replay_engines").main([str(TRACE), "--engines", "4", "--change-at", "1", "--json",
                        str(out)]) == 0
    res = {r["scenario"]: r for r in json.loads(out.read_text())}
    step0 = next(iter_steps(TRACE))
    prompts = {k: step0.prompt(i).tolist() for i, k in enumerate(step0.prompt_keys.tolist())}
    moved_by_add = sum(home_engine(p, 5) != home_engine(p, 4) for p in prompts.values())
    on_engine0 = sum(home_engine(p, 4) == 0 for p in prompts.values())
    on_last = sum(home_engine(p, 4) == 3 for p in prompts.values())
    assert res["add"]["moved_prompts"] == moved_by_add > 0
    assert res["remove"]["moved_prompts"] == on_last > 0
    assert res["restart"]["moved_prompts"] == res["restart-snapshot"]["moved_prompts"] == on_engine0
    for name, r in res.items():  # before the change every scenario is the steady run
        assert r["steps"][0]["tokens_per_verify"] == res["restart-snapshot"]["steps"][0][
            "tokens_per_verify"], name
    snap, cold = res["restart-snapshot"]["steps"][1], res["restart"]["steps"][1]
    # from a snapshot the restarted engine drafts exactly as if it had never restarted
    assert snap["moved_tokens_per_verify"] == snap["moved_if_warm"]
    # restarted cold, its prompts lose their history in the step of the restart
    assert cold["moved_tokens_per_verify"] < cold["moved_if_warm"]
    assert np.isclose(cold["moved_if_warm"], snap["moved_if_warm"])


def test_bad_change_step_is_named(load_tool, capsys):
    assert load_tool("replay_engines").main([str(TRACE), "--change-at", "9"]) == 2
    assert "--change-at 9 is past the trace's last step 2" in capsys.readouterr().err
