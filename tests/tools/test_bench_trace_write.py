"""tools/bench_trace_write.py: a tiny run writes readable step files and prints the share."""

from __future__ import annotations

from openrlhf_srt.data.traces import read_traces


def test_tiny_run_writes_the_records_and_prices_them(tmp_path, capsys, load_tool):
    assert load_tool("bench_trace_write").main(["--steps", "2", "--samples", "8", "--n", "4", "--median-tokens", "16",
                       "--max-tokens", "64", "--engine-tokens-per-s", "1000",
                       "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "wrote 2 steps" in out and "engine at      1000 generated tokens/s" in out
    records = read_traces(tmp_path)
    assert [(r.step, r.sample_index) for r in records] == [
        (s, i) for s in range(2) for _ in range(2) for i in range(4)]
    assert all(1 <= len(r.response_token_ids) <= 64 for r in records)
