"""tools/collect_traces.py end to end on the shared engine: a readable trace file whose
records match what was asked, its metadata, and the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openrlhf_srt.cache.keys import prompt_key
from openrlhf_srt.cli.collect_traces import CollectSettings, collect, parse_args
from openrlhf_srt.data.trace_summary import format_summary, summarize_steps
from openrlhf_srt.data.traces import read_traces


@pytest.mark.engine
def test_collect_writes_valid_traces(tmp_path, float32_engine):
    s = CollectSettings(out=tmp_path / "t.jsonl.gz", steps=2, prompts=3, samples=2,
                        temperature=0.6, max_tokens=24)
    out = collect(s, llm=float32_engine, log=lambda m: None)
    records = read_traces(out)
    assert len(records) == 2 * 3 * 2
    assert {(r.step, r.sample_index) for r in records} == {(t, i) for t in range(2) for i in range(2)}
    assert len({r.prompt_key for r in records}) == 3
    for r in records:
        assert r.prompt_key == prompt_key(r.prompt_token_ids)
        assert r.prompt_token_ids[-4:] == [1, 520, 9531, 198]  # chat template's assistant turn
        assert 1 <= len(r.response_token_ids) <= 24
        assert r.finish_reason in ("stop", "length") and r.reward in (0.0, 1.0)
        assert r.label is not None
    meta = json.loads(Path(str(out) + ".meta.json").read_text())
    assert meta["generated_tokens"] == sum(len(r.response_token_ids) for r in records)
    steps = summarize_steps(records)
    assert [st.step for st in steps] == [0, 1]
    assert "responses to 3 prompts over 2 steps" in format_summary(records)


def test_summary_counts_earlier_contexts_by_hand():
    from openrlhf_srt.data.traces import TraceRecord

    def rec(step, i, resp):
        return TraceRecord(step=step, prompt_key=prompt_key([9]), prompt_token_ids=[9],
                           sample_index=i, response_token_ids=resp, finish_reason="stop",
                           policy_version=0)

    a = [1, 2, 3, 4, 5, 6]
    b = [1, 2, 3, 4, 5, 7]  # same first 5 tokens: 2 positions after a 4-token context
    steps = summarize_steps([rec(0, 0, a), rec(0, 1, b)], k=4)
    # a: no earlier context; b: contexts (1,2,3,4)->5 seen (top-1 right), (2,3,4,5)->7 seen (wrong)
    assert steps[0].seen_fraction == pytest.approx(2 / 4)
    assert steps[0].top1_fraction == pytest.approx(1 / 2)


def test_bad_settings_name_the_flag(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--out", "x.jsonl", "--samples", "0"])
    assert "--samples must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--out", "x.txt"])
    assert "--out must end in .jsonl" in capsys.readouterr().err
