"""The rollout-time simulator (replay/rollout_time.py, tools/predict_speedup.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from openrlhf_srt.data.traces import TraceRecord
from openrlhf_srt.drafting.step_curve import StepCurve
from openrlhf_srt.replay.rollout_time import (
    RolloutTimeConfig,
    baseline_time,
    oracle_lengths,
    predict,
)
from openrlhf_srt.replay.stream import steps_from_records

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT / "tests" / "reference_traces" / "smollm2_math_t0.6.jsonl.gz"


def rec(step, response, sample=0):
    return TraceRecord(step=step, prompt_key=7, prompt_token_ids=[9], sample_index=sample,
                       response_token_ids=response, finish_reason="stop", policy_version=step)


# One sequence costs 1.0 s per baseline round, 2.0 s per speculative round with no draft and
# 1.0 s more per draft token (4 tokens: 6.0 s); the curve's hinge is then exactly
# 1 + tokens (tokens = running + drafts), which is what the goodput rule sees.
CURVE = StepCurve({"source": "roofline", "hardware": "hand-made"}, [1, 2], [0, 4],
                  [1.0, 1.5], [[2.0, 6.0], [3.0, 11.0]])


def test_hand_computed_case():
    # step 0: prompt 9, response 5 6 7 8; step 1: same prompt, response 5 6 0 8.
    steps = predict(steps_from_records([rec(0, [5, 6, 7, 8]), rec(1, [5, 6, 0, 8])]), CURVE)
    s0, s1 = ({m: t.seconds.tolist() for m, t in s.methods.items()} for s in steps)
    # baseline: 4 rounds of one sequence, 1.0 s each, in both steps: 4.0 s.
    assert s0["baseline"] == s1["baseline"] == [1.0] * 4
    # step 0 is cold: every token is new, no draft ever; SRT and oracle pay the speculative
    # path with empty drafts, 2.0 s a round: 8.0 s (slower than the baseline).
    assert s0["srt"] == s0["oracle"] == [2.0] * 4
    # step 1, round 1: the cache drafts 5 6 7 8 from step 0 (conditionals 1.0, calibrator
    # still empty so calibrated = raw). SRT: goodput (1 + X) / (1 + (1 + X)) grows with X, so
    # all 4 tokens are verified: 2 + 4 = 6.0 s; 5 6 accepted, 7 != 0 rejected, 3 tokens.
    # Oracle: the full draft would get A = 2 accepted; X in [0, 2] maximising
    # (1 + X) / (2 + X) is 2: 2 + 2 = 4.0 s, the same 3 tokens.
    # round 2: context ... 6 0, never seen before: no draft, 2.0 s, the last token 8.
    assert s1["srt"] == [6.0, 2.0]
    assert s1["oracle"] == [4.0, 2.0]
    assert [s.seconds("srt") for s in steps] == [8.0, 8.0]
    assert [s.seconds("oracle") for s in steps] == [8.0, 6.0]
    # the long tail: every round has one running sequence
    assert steps[1].methods["srt"].tail_seconds(1) == 8.0
    assert steps[1].methods["srt"].tail_seconds(0) == 0.0


def test_drafter_time_is_added_to_srt_only():
    records = [rec(0, [5, 6, 7, 8]), rec(1, [5, 6, 0, 8])]
    with_time = predict(steps_from_records(records), CURVE,
                        RolloutTimeConfig(drafter_time=True))
    assert with_time[1].seconds("srt") > 8.0
    assert with_time[1].seconds("oracle") == 6.0


def test_baseline_rounds_follow_the_lengths():
    # lengths 1, 3, 3: round 0 runs 3, rounds 1-2 run 2 (1.5 s at 2 per the curve)
    t = baseline_time(np.array([1, 3, 3]), CURVE)
    assert t.running.tolist() == [3, 2, 2]
    assert t.seconds.tolist() == pytest.approx([2.0, 1.5, 1.5])  # 3 beyond the grid: slope
    assert t.tokens == 7


def test_oracle_gives_tokens_to_the_longest_first():
    # 2 running at s=2 of CURVE: 3.0 + 1.0 per draft token (k=4 each: 11.0); goodput
    # (2 + X) / (3 + X) grows with X: every accepted token is taken
    assert oracle_lengths(np.array([3, 2]), np.array([5, 9]), 2, CURVE).tolist() == [3, 2]
    # a knee: one draft token per sequence is free (3.0 s), beyond it 9.0 s per token per
    # sequence: X = 2 gives 4 / 3.0, X = 3 gives 5 / 7.5, so X = 2, and both go to the
    # sequence with 9 tokens left (at most its 2 accepted)
    knee = StepCurve({"source": "roofline"}, [1, 2], [0, 1, 4], [1.0, 1.0],
                     [[1.0, 1.0, 10.0], [3.0, 3.0, 30.0]])
    assert oracle_lengths(np.array([3, 2]), np.array([5, 9]), 2, knee).tolist() == [0, 2]
    # nothing accepted: nothing drafted
    assert oracle_lengths(np.array([0, 0]), np.array([5, 9]), 2, knee).tolist() == [0, 0]


def test_cli_prints_table_plot_and_json(tmp_path, capsys, load_tool):
    module = load_tool("predict_speedup")
    curve = tmp_path / "curve.json"
    CURVE.save(curve)
    png, js = tmp_path / "t.png", tmp_path / "t.json"
    argv = [str(TRACE), "--curve", str(curve), "--prompts", "1", "--plot", str(png),
            "--json", str(js), "--quiet"]
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    assert "srt x" in out and "oracle s" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    steps = json.loads(js.read_text())[0]["steps"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    for s in steps:  # drafts never add rounds: each round produces at least one token
        assert s["baseline"]["rounds"] >= max(s["srt"]["rounds"], s["oracle"]["rounds"])
        assert len(s["srt"]["round_seconds"]) == s["srt"]["rounds"]
    assert module.main([str(TRACE), "--curve", str(tmp_path / "none.json"), "--quiet"]) == 2
    assert "not a step curve" in capsys.readouterr().err
