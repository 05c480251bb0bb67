"""`make demo`: the same short GRPO run twice from one seed, without and with SRT.

Both runs train the embedded SmolLM2-135M on CPU (openrlhf_srt.local) with the same
prompts, seed and settings; the first generates its rollouts with plain vLLM, the second
with the SRT drafter (tree cache kept across steps, run-ahead in end-of-step bubbles).
Prints a per-step table, the generation speedup measured from the two runs and, beside it,
what the rollout-time simulator predicts from the runs' own traces and this machine's
step-cost curve (SRT's speedup and an oracle budget's), and writes
runs/<name>/{baseline,srt}/ (metrics.jsonl, TensorBoard events, an offline W&B run),
runs/<name>/compare.png and the traces (the trainer's `--trace_dir`) in
runs/<name>/traces/{baseline,srt} (`--trace-dir DIR` to put them elsewhere).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from openrlhf_srt.vllm.engine import quiet_vllm_logs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--name", default="demo", help="runs/<name>/ holds both runs")
    p.add_argument("--runs-root", type=Path, default=Path("runs"))
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--prompts", default="builtin:4",
                   help="prompt set (a small pool: every prompt returns every other step, as "
                        "in multi-epoch RL training)")
    p.add_argument("--prompts-per-step", type=int, default=2)
    p.add_argument("--samples", type=int, default=8, help="samples per prompt (GRPO group)")
    p.add_argument("--max-new-tokens", type=int, default=512,
                   help="long enough for a long tail: a few samples run on after most ended")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--lr", type=float, default=2e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runahead", type=int, choices=(0, 1), default=1)
    p.add_argument("--only", choices=("baseline", "srt"), default=None,
                   help="run one of the two (the table then reads the other from disk)")
    p.add_argument("--trace-dir", type=Path, default=None, metavar="DIR",
                   help="record each run's rollouts and run-ahead outputs as traces in "
                        "DIR/baseline and DIR/srt, one gzip file per step (docs/traces.md; "
                        "default runs/<name>/traces): the prediction replays them")
    return p


def per_step_table(base: list[dict], srt: list[dict]) -> str:
    head = (f"{'step':>4} {'reward base':>11} {'reward srt':>10} {'gen s base':>10} "
            f"{'gen s srt':>9} {'tok/verify':>10} {'run-ahead tok':>13} {'speedup':>7}")
    lines = [head, "-" * len(head)]
    by_step = {r["step"]: r for r in srt}
    for b in base:
        s = by_step.get(b["step"])
        if s is None:
            continue
        speed = b["timing/generation"] / max(s["timing/generation"], 1e-9)
        lines.append(f"{b['step']:>4} {b['rollout/reward']:>11.3f} {s['rollout/reward']:>10.3f} "
                     f"{b['timing/generation']:>10.1f} {s['timing/generation']:>9.1f} "
                     f"{s.get('srt/accept_len', 1.0):>10.2f} "
                     f"{s.get('srt/runahead_tokens', 0.0):>13.0f} {speed:>6.2f}x")
    return "\n".join(lines)


def predicted_report(trace_root: Path, srt, measured: dict[str, tuple[float, float]]) -> str:
    """What the rollout-time simulator (replay.rollout_time) predicts for the two runs from
    their own traces and this machine's closest step-cost curve, beside what was measured:
    each run's generation seconds, and the speedup SRT and an oracle budget would give on
    the SRT run's responses."""
    from openrlhf_srt.drafting.step_curve import closest_curve
    from openrlhf_srt.replay.rollout_time import RolloutTimeConfig, baseline_time, predict
    from openrlhf_srt.replay.stream import iter_steps
    from openrlhf_srt.vllm.proposer import engine_machine

    found = closest_curve(engine_machine())
    if found is None:
        return "prediction: no step-cost curve is packaged (openrlhf_srt/drafting/curves/)"
    path, curve = found
    drafter = srt.drafter_config()
    cfg = RolloutTimeConfig(cache=drafter.cache_config(), budget=drafter.budget_config(),
                            drafter_time=True)  # on a CPU the drafter shares the cores
    # the baseline run needs only its plain rounds; the SRT run is replayed three ways
    base = {"baseline": sum(baseline_time(s.lengths, curve).total
                            for s in iter_steps(trace_root / "baseline"))}
    steps = predict(iter_steps(trace_root / "srt"), curve, cfg)
    run = {m: sum(s.seconds(m) for s in steps) for m in ("baseline", "srt", "oracle")}
    lines = [f"predicted by the rollout-time simulator from the runs' own traces and the step-cost "
             f"curve {path.name} (decoding rounds only: no prefill, no run-ahead):",
             f"  baseline run: predicted {base['baseline']:.1f} s, measured "
             f"{measured['baseline'][0]:.1f} s",
             f"  SRT run:      predicted {run['srt']:.1f} s, measured {measured['srt'][0]:.1f} s",
             f"  speedup on the SRT run's responses: predicted "
             f"{run['baseline'] / run['srt']:.2f}x, oracle budget {run['baseline'] / run['oracle']:.2f}x; "
             f"measured {measured['baseline'][0] / max(measured['srt'][0], 1e-9):.2f}x by "
             f"generation seconds"]
    gain, best = run["baseline"] / run["srt"] - 1, run["baseline"] / run["oracle"] - 1
    if best > 0:
        lines.append(f"  SRT's predicted gain is {gain / best:.0%} of the oracle's")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # the demo prints its own progress
    quiet_vllm_logs()
    parser = build_parser()
    a = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    from openrlhf_srt.cli.compare_runs import format_table, generation_totals, plot
    from openrlhf_srt.data.traces import check_trace_dir
    from openrlhf_srt.local.policy_training import cpu_precision
    from openrlhf_srt.local.train_config import TrainConfig
    from openrlhf_srt.local.trainer import LocalTrainer
    from openrlhf_srt.run_logger import read_metrics
    from openrlhf_srt.srt_config import SRTConfig

    hf_logging.disable_progress_bar()
    root = a.runs_root / a.name
    try:  # traces are always recorded: the prediction below replays them
        a.trace_dir = check_trace_dir(a.trace_dir or root / "traces", "--trace-dir")
    except ValueError as e:
        parser.error(str(e))
    common = {"prompts": a.prompts, "steps": a.steps, "prompts_per_step": a.prompts_per_step,
              "samples_per_prompt": a.samples, "max_new_tokens": a.max_new_tokens,
              "temperature": a.temperature, "lr": a.lr, "seed": a.seed, "algo": "grpo"}
    print(f"demo: GRPO on the embedded SmolLM2-135M (CPU: {cpu_precision()}), {a.steps} steps x "
          f"{a.prompts_per_step} prompts x {a.samples} samples, up to {a.max_new_tokens} "
          f"tokens, temperature {a.temperature}, seed {a.seed}; twice: plain vLLM, then SRT",
          flush=True)
    walls = {}
    srt_config = SRTConfig(runahead=bool(a.runahead))
    for name, srt in (("baseline", SRTConfig(enable=False)), ("srt", srt_config)):
        if a.only and a.only != name:
            continue
        start = time.monotonic()
        print(f"\n== {name}: starting the engine", flush=True)
        cfg = TrainConfig(run_dir=root / name, srt=srt, **common,
                          trace_dir=a.trace_dir / name)
        trainer = LocalTrainer(cfg, log_fn=lambda msg, tag=name: print(f"[{tag}] {msg}", flush=True))
        try:
            trainer.run()
        finally:
            trainer.close()
        walls[name] = time.monotonic() - start
        print(f"== {name}: {walls[name]:.0f} s", flush=True)
    runs = [("baseline", read_metrics(root / "baseline")), ("srt", read_metrics(root / "srt"))]
    print()
    print(per_step_table(runs[0][1], runs[1][1]))
    gen, toks = zip(*(generation_totals(rows) for _, rows in runs))
    per_tok = [1000 * g / max(t, 1) for g, t in zip(gen, toks)]
    print(f"\ngeneration: baseline {gen[0]:.1f} s for {toks[0]:.0f} tokens, SRT {gen[1]:.1f} s "
          f"for {toks[1]:.0f} tokens -> measured generation speedup "
          f"{gen[0] / max(gen[1], 1e-9):.2f}x")
    print(f"time per generated token: baseline {per_tok[0]:.2f} ms, SRT {per_tok[1]:.2f} ms -> "
          f"{per_tok[0] / max(per_tok[1], 1e-9):.2f}x (the two runs sample different responses "
          "from the same distribution, so their token counts differ)")
    try:
        print(predicted_report(a.trace_dir, srt_config,
                               {"baseline": (gen[0], toks[0]), "srt": (gen[1], toks[1])}))
    except (OSError, ValueError) as e:  # e.g. --only with the other run's traces missing
        print(f"prediction: not available ({e})")
    print()
    print(format_table(runs))
    png = root / "compare.png"
    plot(runs, png)
    print(f"\nwrote {root}/baseline and {root}/srt (metrics.jsonl, tensorboard/, wandb/), {png}")
    if walls:
        print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items())
              + f", total {sum(walls.values()):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
