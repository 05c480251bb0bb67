"""make demo's prediction: the rollout-time simulator replays both runs' recorded traces."""

from __future__ import annotations

import re
from pathlib import Path

from openrlhf_srt.cli.demo import predicted_report
from openrlhf_srt.data.traces import StepTraceWriter, read_traces
from openrlhf_srt.srt_config import SRTConfig

TRACE = Path(__file__).resolve().parents[1] / "reference_traces/smollm2_math_t0.6.jsonl.gz"


def test_prediction_is_printed_beside_the_measured_figures(tmp_path):
    records = read_traces(TRACE)
    keep = sorted({r.prompt_key for r in records})[:2]
    for name in ("baseline", "srt"):  # what the demo's two runs record
        w = StepTraceWriter(tmp_path / name)
        for step in sorted({r.step for r in records}):
            w.begin_step(step)
            for r in records:
                if r.step == step and r.prompt_key in keep:
                    w.write(r)
            w.end_step()
        w.close()
    text = predicted_report(tmp_path, SRTConfig(), {"baseline": (12.0, 4000),
                                                    "srt": (10.0, 4100)})
    assert "curve cpu-" in text  # this CPU machine's packaged curve
    base = float(re.search(r"baseline run: predicted ([\d.]+) s, measured 12.0 s", text)[1])
    srt = float(re.search(r"SRT run: +predicted ([\d.]+) s, measured 10.0 s", text)[1])
    pred, oracle = (float(x) for x in re.search(
        r"predicted ([\d.]+)x, oracle budget ([\d.]+)x; measured 1.20x", text).groups())
    assert base > 0 and srt > 0
    assert oracle >= pred * 0.99  # the oracle is never meaningfully slower than the policy
