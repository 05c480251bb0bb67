"""tools/bench_rollout.py's comparison on recorded results (no engine: the arithmetic, the
report and the plot; the benchmark's figures come from running it, docs/vllm.md)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def bench(load_tool):
    return load_tool("bench_rollout")


def _run(method, temp, steps):
    return {"method": method, "temperature": temp, "engine_start_seconds": 1.0,
            "steps": [{"step": i, "seconds": s, "tokens": t, "tokens_per_verify": v,
                       "acceptance_rate": 0.5, "drafter_share": 0.01,
                       "step_cost": {"fixed": 0.0625, "per_token": 0.0017, "knee": 2.0}}
                      for i, (s, t, v) in enumerate(steps)]}


RESULTS = [
    _run("none", 0.6, [(10.0, 1000, 1.0), (12.0, 1200, 1.0)]),
    _run("srt", 0.6, [(10.0, 1250, 1.5), (6.0, 1200, 2.0)]),
    _run("none", 1.0, [(8.0, 800, 1.0)]),
    _run("ngram", 1.0, [(10.0, 800, 1.2)]),
]


def test_ratios_are_per_token_and_per_step(bench):
    rows = {(r["temperature"], r["method"], r["step"]): r for r in bench.compare(RESULTS)}
    assert rows[(0.6, "srt", 0)]["per_token_ratio"] == pytest.approx((10 / 1250) / (10 / 1000))
    assert rows[(0.6, "srt", 1)]["time_ratio"] == pytest.approx(0.5)
    assert rows[(1.0, "ngram", 0)]["per_token_ratio"] == pytest.approx(1.25)
    total = bench.overall(RESULTS)
    # none: 22 s / 2200 tok; srt: 16 s / 2450 tok
    assert total[(0.6, "srt")]["speedup"] == pytest.approx((22 / 2200) / (16 / 2450))
    assert total[(0.6, "srt")]["time_speedup"] == pytest.approx(22 / 16)
    assert total[(1.0, "ngram")]["speedup"] == pytest.approx(0.8)


def test_report_and_plot(bench, tmp_path, capsys):
    bench.print_report(RESULTS)
    out = capsys.readouterr().out
    assert "T=0.6 srt" in out and "speedup 1.531x" in out
    assert "fitted step cost after each step: 62 ms + 1.70 ms/token beyond 2; 62 ms" in out
    bench.plot(RESULTS, tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 10_000


def test_arguments_are_checked(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--methods", "srt"])  # no baseline to compare with
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "0"])
    with pytest.raises(ValueError, match="unknown method"):
        bench.speculative_config("eagle", 4)
