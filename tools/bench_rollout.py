"""Rollout benchmark: the same multi-step workload through vLLM with and without speculation.

    python tools/bench_rollout.py                       # 4 prompts x 8 samples, 4 steps,
                                                        # max 512 tokens, T=0.6 and T=1.0
    python tools/bench_rollout.py --methods none srt --temperatures 0.6 --steps 2

The same P prompts are sampled n times in each of S steps (the policy is fixed: each step is
a training step's rollout of the same prompts, the workload a per-prompt cache sees), with
each method in turn: no speculation, vLLM's `ngram`, vLLM's `suffix` (ArcticInference;
`make bench` installs it) and SRT. Each (temperature, method) runs in its own engine process,
one after another, so no two engines share the CPU; this process starts them and compares.

Printed per step and method: generation seconds, generated tokens, tokens per verification
step (vLLM's spec-decode counters: generated / (generated - accepted)), acceptance rate, and
the ratio of generation time per generated token to no speculation's (sampled responses
differ in length between runs, so time per token is the fair unit; the ratio of plain
generation seconds is printed too). For SRT also the drafter's share of engine time
(propose time / (propose time + time between propose calls)) and the step cost the drafter
fitted (drafting.cost_model: fixed + per token beyond a knee). Writes <out>/results.json
(per step and method: measured generation seconds, tokens, spec-decode counters),
<out>/bench_rollout.png and the traces of its own runs (docs/traces.md), one file per
temperature and method: <out>/traces/T<temperature>-<method>.jsonl, so the rollout-time
simulator can be checked against the very runs it predicts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("none", "ngram", "suffix", "srt")


def speculative_config(method: str, k: int) -> dict | None:
    if method == "none":
        return None
    if method == "ngram":  # vLLM's own default window when none is given: 5..5; 2..5 drafts more
        return {"method": "ngram", "num_speculative_tokens": k,
                "prompt_lookup_min": 2, "prompt_lookup_max": 5}
    if method == "suffix":  # ArcticInference's settings as vLLM ships them, K tokens at most
        return {"method": "suffix", "num_speculative_tokens": k}
    raise ValueError(f"unknown method {method!r}; one of {METHODS}")


# --------------------------------------------------------------------------- one engine
def run_one(a: argparse.Namespace) -> dict:
    """Child process: start the engine for one method, run every step, return figures."""
    from vllm import SamplingParams

    from openrlhf_srt.cache.keys import prompt_key
    from openrlhf_srt.cli.collect_traces import CollectSettings, choose_prompts
    from openrlhf_srt.data.prompts import render_prompt
    from openrlhf_srt.data.traces import TraceRecord, TraceWriter
    from openrlhf_srt.vllm.engine import start_engine
    from openrlhf_srt.vllm.engine_client import SRTEngineHandle
    from openrlhf_srt.vllm.spec_metrics import acceptance_rate, read_spec_counters, tokens_per_step
    from openrlhf_srt.vllm.srt_engine import start_srt_engine

    started = time.monotonic()
    common = {"seed": a.seed, "max_model_len": a.max_tokens + 512, "disable_log_stats": False}
    if a.method == "srt":
        llm = start_srt_engine(None, srt={"budget": a.srt_budget, "max_draft_tokens": a.k},
                               **common)
    else:
        llm = start_engine(None, speculative_config=speculative_config(a.method, a.k), **common)
    engine_seconds = time.monotonic() - started
    tok = llm.get_tokenizer()
    settings = CollectSettings(out=Path("unused.jsonl"), prompts=a.prompts, seed=a.seed)
    records = choose_prompts(settings)
    prompts = [{"prompt_token_ids": render_prompt(tok, r)} for r in records]
    keys = [prompt_key(p["prompt_token_ids"]) for p in prompts]
    params = SamplingParams(n=a.samples, temperature=a.temperature, max_tokens=a.max_tokens)
    steps = []
    writer = TraceWriter(a.trace)
    for step in range(a.steps):
        before = read_spec_counters(llm)
        if a.method == "srt":
            SRTEngineHandle(llm).stats(reset=True)
        t0 = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - t0
        c = read_spec_counters(llm) - before
        lengths = [len(o.token_ids) for out in outs for o in out.outputs]
        for rec, p, key, out in zip(records, prompts, keys, outs):
            for o in out.outputs:
                writer.write(TraceRecord(
                    step=step, prompt_key=key, prompt_token_ids=list(p["prompt_token_ids"]),
                    sample_index=o.index, response_token_ids=list(o.token_ids),
                    finish_reason=o.finish_reason or "abort", policy_version=0,
                    label=rec.get("label"), extra={"method": a.method,
                                                   "temperature": a.temperature}))
        tokens = sum(lengths)
        row = {"step": step, "seconds": seconds, "tokens": tokens,
               "longest": max(lengths), "drafts": c.drafts, "draft_tokens": c.draft_tokens,
               "accepted": c.accepted_tokens,
               "tokens_per_verify": tokens_per_step(tokens, c.accepted_tokens),
               "acceptance_rate": acceptance_rate(c)}
        if a.method == "srt":
            s = SRTEngineHandle(llm).stats()
            engine = s["propose_seconds"] + s["observed_step_seconds"]
            row.update(propose_seconds=s["propose_seconds"],
                       drafter_share=s["propose_seconds"] / engine if engine else 0.0,
                       budget_cut_tokens=s["budget_cut_tokens"], step_cost=s["step_cost"])
        steps.append(row)
        print(f"  step {step}: {seconds:6.1f} s {tokens:6d} tok {tokens / seconds:6.1f} tok/s "
              f"{row['tokens_per_verify']:.2f} tok/verify", file=sys.stderr, flush=True)
    writer.close()
    return {"method": a.method, "temperature": a.temperature, "engine_start_seconds":
            engine_seconds, "trace": str(a.trace), "steps": steps}


# ------------------------------------------------------------------------- comparison
def compare(results: list[dict]) -> list[dict]:
    """Per (temperature, method, step): ratios to no speculation's same step and overall."""
    rows = []
    base = {(r["temperature"], s["step"]): s for r in results if r["method"] == "none"
            for s in r["steps"]}
    for r in results:
        for s in r["steps"]:
            b = base.get((r["temperature"], s["step"]))
            rows.append({**s, "method": r["method"], "temperature": r["temperature"],
                         "time_ratio": s["seconds"] / b["seconds"] if b else None,
                         "per_token_ratio": (s["seconds"] / s["tokens"]) /
                         (b["seconds"] / b["tokens"]) if b else None})
    return rows


def overall(results: list[dict]) -> dict[tuple[float, str], dict]:
    out = {}
    for r in results:
        sec = sum(s["seconds"] for s in r["steps"])
        tok = sum(s["tokens"] for s in r["steps"])
        out[(r["temperature"], r["method"])] = {"seconds": sec, "tokens": tok}
    for (temp, method), v in out.items():
        b = out.get((temp, "none"))
        v["speedup"] = (b["seconds"] / b["tokens"]) / (v["seconds"] / v["tokens"]) if b else None
        v["time_speedup"] = b["seconds"] / v["seconds"] if b else None
    return out


def print_report(results: list[dict]) -> None:
    print(f"{'T':>4} {'method':7} {'step':>4} {'gen s':>7} {'tokens':>7} {'tok/s':>6} "
          f"{'tok/verify':>10} {'accept':>7} {'s/tok vs none':>13} {'s vs none':>9}")
    for row in compare(results):
        ratio = row["per_token_ratio"]
        tr = row["time_ratio"]
        print(f"{row['temperature']:>4} {row['method']:7} {row['step']:>4} {row['seconds']:7.1f} "
              f"{row['tokens']:7d} {row['tokens'] / row['seconds']:6.1f} "
              f"{row['tokens_per_verify']:10.2f} {row['acceptance_rate']:7.1%} "
              f"{'' if ratio is None else f'{ratio:13.3f}'} {'' if tr is None else f'{tr:9.3f}'}")
    print("\noverall (speedup = no speculation's time per token / the method's):")
    for (temp, method), v in overall(results).items():
        sp = "" if v["speedup"] is None else f"speedup {v['speedup']:.3f}x " \
             f"(generation seconds {v['time_speedup']:.3f}x)"
        print(f"  T={temp} {method:7} {v['tokens']:7d} tokens in {v['seconds']:7.1f} s  {sp}")
    for r in results:
        if r["method"] == "srt":
            share = [s["drafter_share"] for s in r["steps"]]
            print(f"  T={r['temperature']} srt drafter share of engine time per step: "
                  + " ".join(f"{x:.1%}" for x in share))
            print(f"  T={r['temperature']} srt fitted step cost after each step: " + "; ".join(
                f"{1000 * c['fixed']:.0f} ms + {1000 * c['per_token']:.2f} ms/token beyond "
                f"{c['knee']:.0f}" for c in (s["step_cost"] for s in r["steps"])))


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temps = sorted({r["temperature"] for r in results})
    fig, axes = plt.subplots(2, len(temps), figsize=(5.5 * len(temps), 7), squeeze=False)
    for j, temp in enumerate(temps):
        for r in (r for r in results if r["temperature"] == temp):
            steps = [s["step"] for s in r["steps"]]
            axes[0][j].plot(steps, [s["tokens"] / s["seconds"] for s in r["steps"]], "o-",
                            label=r["method"])
            axes[1][j].plot(steps, [s["tokens_per_verify"] for s in r["steps"]], "o-",
                            label=r["method"])
        axes[0][j].set_title(f"temperature {temp}")
        axes[0][j].set_ylabel("generated tokens / s")
        axes[1][j].set_ylabel("tokens per verification step")
        axes[1][j].set_xlabel("step (same prompts revisited)")
        for ax in axes[:, j]:
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------------------ main
def trace_path(out: Path, temperature: float, method: str) -> Path:
    """Where the run of one (temperature, method) writes its trace."""
    return out / "traces" / f"T{temperature:g}-{method}.jsonl"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--temperatures", nargs="+", type=float, default=[0.6, 1.0])
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--k", type=int, default=8, help="num_speculative_tokens (draft cap)")
    p.add_argument("--srt-budget", default="goodput", help="SRT budget rule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/bench_rollout"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--temperature", type=float, help=argparse.SUPPRESS)
    p.add_argument("--trace", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for name in ("prompts", "samples", "steps", "max_tokens", "k"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if "none" not in a.methods:
        p.error("--methods must include 'none' (every ratio is to it)")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.child:
        from openrlhf_srt.vllm.engine import quiet_vllm_logs

        quiet_vllm_logs()
        print(json.dumps(run_one(a)))
        return 0
    if "suffix" in a.methods:
        try:
            import arctic_inference  # noqa: F401
        except ImportError:
            print("bench_rollout: vLLM's suffix method needs ArcticInference: run `make bench`",
                  file=sys.stderr)
            return 2
    a.out.mkdir(parents=True, exist_ok=True)
    results = []
    for temp in a.temperatures:
        for method in a.methods:
            print(f"bench_rollout: T={temp} {method}: {a.steps} steps x {a.prompts} prompts x "
                  f"{a.samples} samples, max {a.max_tokens} tokens", file=sys.stderr, flush=True)
            cmd = [sys.executable, __file__, "--child", "--method", method, "--temperature",
                   str(temp), "--prompts", str(a.prompts), "--samples", str(a.samples),
                   "--steps", str(a.steps), "--max-tokens", str(a.max_tokens), "--k", str(a.k),
                   "--srt-budget", a.srt_budget, "--seed", str(a.seed),
                   "--trace", str(trace_path(a.out, temp, method))]
            proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"})
            if proc.returncode != 0:
                print(f"bench_rollout: {method} at T={temp} failed (exit {proc.returncode})",
                      file=sys.stderr)
                return 1
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            (a.out / "results.json").write_text(json.dumps(results, indent=1))
    print_report(results)
    plot(results, a.out / "bench_rollout.png")
    print(f"\nwrote {a.out / 'results.json'} and {a.out / 'bench_rollout.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
