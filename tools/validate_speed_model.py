"""Check the rollout-time simulator against a measured rollout benchmark (issue 15, item 3).

`tools/bench_rollout.py` leaves, per temperature and method, the traces of its runs
(<bench>/traces/T<temp>-<method>.jsonl) and each step's measured generation seconds
(<bench>/results.json). This replays every run's own traces through the simulator
(replay/rollout_time.py) with a step-cost curve measured on the same machine and compares,
per training step: the run without speculation against the predicted baseline, the SRT run
against the predicted SRT time (its own policy and cache, with the drafter's own time on
the cores). It also prints the predicted speedup of SRT and of the oracle budget on the SRT
run's responses, and writes the table as JSON.

    .venv/bin/python tools/bench_rollout.py --methods none srt --steps 3 --out runs/bench
    .venv/bin/python tools/validate_speed_model.py runs/bench \
        --curve openrlhf_srt/drafting/curves/cpu-avx512bf16-smollm2-135m.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench_rollout import trace_path  # tools/ is on sys.path, as for any script run from it

from openrlhf_srt.drafting.step_curve import StepCurve
from openrlhf_srt.replay.rollout_time import RolloutTimeConfig, predict
from openrlhf_srt.replay.stream import iter_steps
from openrlhf_srt.vllm.drafter_config import DrafterConfig

PREDICTED = {"none": "baseline", "srt": "srt"}  # bench method -> simulator method



def validate(bench: Path, curve: StepCurve, k: int) -> list[dict]:
    drafter = DrafterConfig(max_draft_tokens=k)
    cfg = RolloutTimeConfig(cache=drafter.cache_config(), budget=drafter.budget_config(),
                            drafter_time=True)
    rows = []
    for run in json.loads((bench / "results.json").read_text()):
        method = run["method"]
        if method not in PREDICTED:
            continue
        traces = trace_path(bench, run["temperature"], method)
        measured = {s["step"]: s["seconds"] for s in run["steps"]}
        for st in predict(iter_steps(traces), curve, cfg):
            predicted = st.seconds(PREDICTED[method])
            rows.append({"temperature": run["temperature"], "method": method, "step": st.step,
                         "tokens": st.tokens, "measured": measured[st.step],
                         "predicted": predicted,
                         "error": predicted / measured[st.step] - 1,
                         "srt_speedup": st.seconds("baseline") / st.seconds("srt"),
                         "oracle_speedup": st.seconds("baseline") / st.seconds("oracle")})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("bench", type=Path, help="tools/bench_rollout.py's --out folder")
    p.add_argument("--curve", type=Path, required=True, help="a step-cost curve (JSON)")
    p.add_argument("--k", type=int, default=8, help="the bench's --k (draft cap)")
    p.add_argument("--json", type=Path, help="write the rows here")
    a = p.parse_args(argv)
    try:
        rows = validate(a.bench, StepCurve.load(a.curve), a.k)
    except (OSError, ValueError, KeyError) as e:
        print(f"validate_speed_model: error: {e}", file=sys.stderr)
        return 2
    print(f"{'T':>4} {'method':6} {'step':>4} {'tokens':>7} {'measured s':>10} "
          f"{'predicted s':>11} {'error':>7} {'pred srt x':>10} {'pred oracle x':>13}")
    for r in rows:
        print(f"{r['temperature']:>4} {r['method']:6} {r['step']:>4} {r['tokens']:>7} "
              f"{r['measured']:>10.2f} {r['predicted']:>11.2f} {r['error']:>+7.1%} "
              f"{r['srt_speedup']:>10.3f} {r['oracle_speedup']:>13.3f}")
    worst = max(abs(r["error"]) for r in rows)
    print(f"\nlargest error {worst:.1%} over {len(rows)} (temperature, method, step) cells")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
