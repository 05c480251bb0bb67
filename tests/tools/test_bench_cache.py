"""tools/bench_cache.py's memory report on the reference traces: the whole forest within the
target bytes per cached token (issue 16), the breakdown adding up, the DAPO-shape estimate
(timings are printed, not asserted)."""

from __future__ import annotations

import re

import pytest


@pytest.fixture(scope="module")
def bench(load_tool):
    return load_tool("bench_cache")


@pytest.mark.parametrize("trace", [0, 1])
def test_forest_within_the_target_on_the_reference_traces(bench, trace):
    recs = bench.load(bench.DEFAULT_TRACES[trace])
    cache, _ = bench.srt_insert(recs, 32)
    st = cache.stats()
    prompts = {k: p for k, p, _ in recs}  # cached tokens: each prompt once, every response
    assert st["tokens"] == sum(len(p) for p in prompts.values()) + sum(len(r) for _, _, r in recs)
    assert st["bytes"] / st["tokens"] <= bench.TARGET_BYTES_PER_TOKEN
    assert sum(cache.memory().values()) == st["bytes"]


def test_report_prints_the_verdict_the_share_and_the_dapo_fit(bench, capsys):
    bench.main(["--traces", str(bench.DEFAULT_TRACES[0]), "--repeat", "1", "--batch", "32",
                "--no-arctic", "--dapo-gib", "8", "--dapo-steps", "2"])
    out = capsys.readouterr().out
    bpt = float(re.search(r"whole forest bytes per cached token \(<= 64: yes\) \| ([\d.]+) B", out)[1])
    assert re.search(r"global tree share of the forest bytes \| \d+% \|", out)
    m = re.search(r"= (\d+) cached tokens per prompt; at ([\d.]+) B per cached token .* holds "
                  r"(\d+) prompts' history", out)
    per_prompt, at, fit = int(m[1]), float(m[2]), int(m[3])
    assert per_prompt == 200 + 16 * 2 * 3000 and at == bpt
    budget = 8 * 2**30  # `at` is printed to 0.1 B
    assert budget // ((at + 0.05) * per_prompt) <= fit <= budget // ((at - 0.05) * per_prompt)


def test_dapo_flags_are_validated(bench):
    with pytest.raises(SystemExit):
        bench.main(["--dapo-steps", "0"])
