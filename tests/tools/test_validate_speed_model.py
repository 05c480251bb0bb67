"""tools/validate_speed_model.py: a bench_rollout folder's runs against the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openrlhf_srt.data.traces import TraceWriter, read_traces

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT / "tests/reference_traces/smollm2_math_t0.6.jsonl.gz"
CURVE = ROOT / "openrlhf_srt/drafting/curves/cpu-avx512bf16-smollm2-135m.json"


def test_each_run_is_compared_step_by_step_with_its_own_prediction(load_tool, tmp_path):
    records = [r for r in read_traces(TRACE) if r.prompt_key in
               sorted({r.prompt_key for r in read_traces(TRACE)})[:2]]
    (tmp_path / "traces").mkdir()
    results = []
    for method in ("none", "srt"):  # what bench_rollout leaves
        with TraceWriter(tmp_path / "traces" / f"T0.6-{method}.jsonl") as w:
            for r in records:
                w.write(r)
        results.append({"method": method, "temperature": 0.6,
                        "steps": [{"step": s, "seconds": 2.0 + s} for s in (0, 1, 2)]})
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = tmp_path / "rows.json"
    assert load_tool("validate_speed_model").main([str(tmp_path), "--curve", str(CURVE), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["method"], r["step"]) for r in rows] == [
        (m, s) for m in ("none", "srt") for s in (0, 1, 2)]
    for r in rows:
        assert r["measured"] == 2.0 + r["step"]
        assert r["error"] == pytest.approx(r["predicted"] / r["measured"] - 1)
    # the same responses: the baseline prediction of both runs is the same
    none, srt = rows[:3], rows[3:]
    for a, b in zip(none, srt):
        assert a["predicted"] == pytest.approx(b["predicted"] * b["srt_speedup"])


def test_a_missing_bench_folder_is_named(load_tool, tmp_path, capsys):
    assert load_tool("validate_speed_model").main([str(tmp_path / "nope"), "--curve", str(CURVE)]) == 2
    assert "nope" in capsys.readouterr().err
