"""Predict rollout time per training step from traces and a step-cost curve: without
speculation, with SRT as configured, and with an oracle draft budget (docs/replay.md,
"Predicting rollout time").

    python tools/predict_speedup.py traces.jsonl.gz --curve curve.json --plot time.png

prints per training step the predicted generation seconds of each method, SRT's and the
oracle's speedup over the baseline, SRT's share of the oracle's speedup, and each method's
share of time in the long tail (rounds with at most --tail-running running sequences); the
PNG shows seconds per round against round for one step, the JSON every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from openrlhf_srt.cache import MIN_BYTE_BUDGET, CacheConfig
from openrlhf_srt.data.traces import trace_files
from openrlhf_srt.drafting.budget import BUDGET_RULES, BudgetConfig
from openrlhf_srt.drafting.step_curve import StepCurve
from openrlhf_srt.replay.rollout_time import (
    METHODS,
    POLICY_COSTS,
    RolloutTimeConfig,
    StepTime,
    predict,
)
from openrlhf_srt.replay.stream import count_response_tokens, iter_steps


def parse_args(argv=None) -> argparse.Namespace:
    c, b = CacheConfig(), BudgetConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("traces", nargs="+", type=Path, help="trace files (.jsonl or .jsonl.gz)")
    p.add_argument("--curve", type=Path, required=True, help="step-cost curve (JSON)")
    p.add_argument("--rule", default=c.rule, help="cache rule (CacheConfig.rule)")
    p.add_argument("--max-depth", type=int, default=c.max_depth)
    p.add_argument("--min-prob", type=float, default=c.min_prob)
    p.add_argument("--cache-bytes", type=int, default=c.byte_budget)
    p.add_argument("--budget-rule", default=b.rule, choices=BUDGET_RULES)
    p.add_argument("--budget", type=int, default=b.max_draft_tokens,
                   help="draft tokens per sequence and round at most")
    p.add_argument("--policy-cost", default="hinge", choices=POLICY_COSTS,
                   help="the step cost the budget rule sees: the curve's hinge fit (what the "
                        "engine starts from) or the curve at the round's batch")
    p.add_argument("--tail-running", type=int, default=8,
                   help="rounds with at most this many running sequences are the long tail")
    p.add_argument("--drafter-time", action="store_true",
                   help="add the drafter's measured native call + policy time to SRT rounds "
                        "(a CPU engine's drafter shares its cores)")
    p.add_argument("--prompts", type=int, default=0, help="first N prompts only (0: all)")
    p.add_argument("--plot", type=Path, help="PNG: seconds per round against round")
    p.add_argument("--plot-step", type=int, default=None,
                   help="training step plotted (default: the last of the first file)")
    p.add_argument("--json", type=Path, help="write every figure as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if a.cache_bytes < MIN_BYTE_BUDGET:
        p.error(f"--cache-bytes must be >= {MIN_BYTE_BUDGET}, got {a.cache_bytes}")
    if a.prompts < 0:
        p.error(f"--prompts must be >= 0, got {a.prompts}")
    try:
        a.config = RolloutTimeConfig(
            cache=CacheConfig(max_depth=a.max_depth, byte_budget=a.cache_bytes, rule=a.rule,
                              min_prob=a.min_prob, max_draft_tokens=a.budget),
            budget=BudgetConfig(rule=a.budget_rule, max_draft_tokens=a.budget),
            policy_cost=a.policy_cost, tail_running=a.tail_running,
            drafter_time=a.drafter_time)
    except ValueError as e:
        p.error(str(e))
    return a


def table(steps: list[StepTime], tail: int) -> str:
    head = (f"{'step':>5} {'seqs':>5} {'tokens':>9} {'base s':>9} {'srt s':>9} {'oracle s':>9} "
            f"{'srt x':>6} {'orac x':>6} {'srt/or':>6} "
            + " ".join(f"{'tail ' + m[:4]:>9}" for m in METHODS))
    lines = [head, "-" * len(head)]
    rows = [(str(s.step), s.sequences, s.tokens, s.methods) for s in steps]
    if len(steps) > 1:
        rows.append(("all", sum(s.sequences for s in steps), sum(s.tokens for s in steps),
                     None))
    for name, seqs, tokens, methods in rows:
        if methods is None:
            secs = {m: sum(s.seconds(m) for s in steps) for m in METHODS}
            tails = {m: sum(s.methods[m].tail_seconds(tail) for s in steps) for m in METHODS}
        else:
            secs = {m: methods[m].total for m in METHODS}
            tails = {m: methods[m].tail_seconds(tail) for m in METHODS}
        sx = secs["baseline"] / secs["srt"]
        ox = secs["baseline"] / secs["oracle"]
        share = (sx - 1) / (ox - 1) if ox > 1 else float("nan")
        lines.append(f"{name:>5} {seqs:>5} {tokens:>9} {secs['baseline']:>9.2f} "
                     f"{secs['srt']:>9.2f} {secs['oracle']:>9.2f} {sx:>6.3f} {ox:>6.3f} "
                     f"{share:>6.2f} "
                     + " ".join(f"{tails[m] / secs[m]:>9.1%}" for m in METHODS))
    return "\n".join(lines)


def to_json(path: Path, steps: list[StepTime], tail: int) -> dict:
    return {"trace": str(path), "steps": [
        {"step": s.step, "sequences": s.sequences, "tokens": s.tokens,
         **{m: {"seconds": s.seconds(m), "rounds": s.methods[m].rounds,
                "tail_seconds": s.methods[m].tail_seconds(tail),
                "round_seconds": s.methods[m].seconds.tolist(),
                "round_running": s.methods[m].running.tolist()} for m in METHODS}}
        for s in steps]}


def plot(step: StepTime, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for m in METHODS:
        t = step.methods[m]
        ax.plot(t.seconds * 1e3, linewidth=0.8, label=f"{m} ({t.total:.1f} s, {t.rounds} rounds)")
        ax2.plot(t.running, linewidth=0.8, label=m)
    ax.set_xlabel("round (engine step)")
    ax.set_ylabel("ms per round")
    ax.set_title(f"{title}, step {step.step}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax2.set_xlabel("round (engine step)")
    ax2.set_ylabel("running sequences")
    ax2.set_yscale("log")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        curve = StepCurve.load(a.curve)
        for t in a.traces:
            trace_files(t)  # a file or a training run's trace directory; names what is missing
    except (OSError, ValueError) as e:
        print(f"predict_speedup: error: {e}", file=sys.stderr)
        return 2
    cfg = a.config
    hw = curve.header.get("hardware", "?")
    if isinstance(hw, dict):  # a structured header: its first named part
        hw = next((v for v in hw.values() if isinstance(v, str)), "?")
    print(f"curve {a.curve} ({curve.header.get('source')}, {hw}, "
          f"{curve.header.get('model', '?')})")
    print(f"SRT: cache rule {cfg.cache.rule}, depth {cfg.cache.max_depth}, min_prob "
          f"{cfg.cache.min_prob}; budget {cfg.budget.rule} <= {cfg.budget.max_draft_tokens}, "
          f"policy cost {cfg.policy_cost}"
          + (f" {curve.to_step_cost()}" if cfg.policy_cost == "hinge" else "")
          + (", drafter time added" if cfg.drafter_time else ""))
    out = []
    for path in a.traces:
        total = None if a.quiet or a.prompts else count_response_tokens(path)
        bar = tqdm(total=total, desc=f"predict {path.name}", unit="tok", unit_scale=True,
                   disable=a.quiet, file=sys.stderr, leave=False)
        try:
            steps = predict(iter_steps(path, a.prompts), curve, cfg, progress=bar.update)
        except ValueError as e:
            msg = str(e) if str(path) in str(e) else f"{path}: {e}"
            print(f"predict_speedup: error: {msg}", file=sys.stderr)
            return 2
        finally:
            bar.close()
        print(f"\n{path.name}: predicted generation seconds per training step (tail: rounds "
              f"with <= {cfg.tail_running} running)")
        print(table(steps, cfg.tail_running))
        out.append((path, steps))
    if a.plot:
        path, steps = out[0]
        chosen = [s for s in steps if a.plot_step is None or s.step == a.plot_step]
        if not chosen:
            print(f"predict_speedup: error: --plot-step {a.plot_step} is not a step of "
                  f"{path}", file=sys.stderr)
            return 2
        plot(chosen[-1], path.name, a.plot)
        print(f"\nplot: {a.plot}")
    if a.json:
        a.json.write_text(json.dumps([to_json(p, s, cfg.tail_running) for p, s in out]))
        print(f"json: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
