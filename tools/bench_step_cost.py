"""Step-cost curve of a running vLLM engine: seconds per engine step against running
sequences and draft tokens per sequence (drafting/step_curve.py's format).

    flock /tmp/srt-engine.lock python tools/bench_step_cost.py            # CPU defaults
    flock /tmp/srt-engine.lock python tools/bench_step_cost.py --seqs 1 8 64 --draft-tokens 0 4 \
        --reps 3 --out runs/step_cost

Two engines, each in its own child process, one after the other: a non-speculative engine
(the `baseline` column) and SRT's speculative engine whose draft source drafts exactly k
tokens for every running sequence (vllm/fixed_drafts.py; k = 0 is the speculative path with
every draft empty, the floor a speculative engine costs before it verifies anything). For
each number of running sequences s: s requests with the same prompt length (--context) are
added, stepped until every one is past its prefill, then for each k the engine is stepped
--warmup times untimed and --reps times timed, one `llm_engine.step()` at a time (the engine
core runs in this process, VLLM_ENABLE_V1_MULTIPROCESSING=0, so one call is exactly one
engine step: schedule, forward, sampling or verification, and the drafter's propose);
the curve takes the median. Requests never stop (ignore_eos, max_tokens beyond the steps
taken) and are not detokenised (the front end does that in another process in real runs).
Cells with s * (1 + k) > --max-batch-tokens are not measured; the curve extends them from
the row's last measured cell at the per-token slope of the largest measured batches, and
lists them in extra.extrapolated.

Writes <out>/<machine>-<model>.json (the curve; header: hardware with the CPU model and its
native-bf16 flags, model, dtype, versions, date, command, context) and <out>/<same>.png
(seconds per step and seconds per processed token against running sequences, one line per
k and the baseline). Run it under `flock /tmp/srt-engine.lock` where engines share a machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_SEQS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DEFAULT_DRAFT_TOKENS = (0, 1, 2, 4, 8)
STATISTICS = {"median": statistics.median, "min": min}  # over a cell's timed steps
PROMPT_TOKEN_BASE = 1000  # prompt ids: PROMPT_TOKEN_BASE + (i mod 500), plain vocabulary


# --------------------------------------------------------------------------- one engine
def run_engine(a: argparse.Namespace) -> dict:
    """Child process: one engine, every (seqs, k) cell it measures; returns the samples."""
    from tqdm import tqdm
    from vllm import SamplingParams

    from openrlhf_srt.vllm.engine import start_engine
    from openrlhf_srt.vllm.fixed_drafts import set_draft_tokens
    from openrlhf_srt.vllm.spec_metrics import read_spec_counters
    from openrlhf_srt.vllm.srt_engine import start_srt_engine

    speculative = a.child == "speculative"
    ks = a.draft_tokens if speculative else [None]
    steps_per_row = len(ks) * (a.warmup + a.reps)
    common = {"seed": 0, "max_num_seqs": max(a.seqs),
              "max_model_len": a.context + (max(a.draft_tokens) + 1) * steps_per_row + 64,
              "max_num_batched_tokens": max(a.max_batch_tokens, a.context + 1),
              "disable_log_stats": False}
    t0 = time.monotonic()
    if speculative:
        llm = start_srt_engine(None, srt={"source": "openrlhf_srt.vllm.fixed_drafts:FixedDrafts",
                                          "budget": "fixed",
                                          "max_draft_tokens": max(a.draft_tokens)}, **common)
    else:
        llm = start_engine(None, **common)
    start_seconds = time.monotonic() - t0
    engine = llm.llm_engine
    params = SamplingParams(temperature=a.temperature, ignore_eos=True, detokenize=False,
                            max_tokens=(max(a.draft_tokens) + 1) * steps_per_row + 32)
    prompt = [PROMPT_TOKEN_BASE + i % 500 for i in range(a.context)]
    cells = [(s, k) for s in a.seqs for k in ks if s * (1 + (k or 0)) <= a.max_batch_tokens]
    out = {"kind": a.child, "engine_start_seconds": start_seconds, "cells": [],
           "model_config": {"model": llm.llm_engine.model_config.model,
                            "dtype": str(llm.llm_engine.model_config.dtype)}}
    bar = tqdm(total=len(cells), desc=f"{a.child} cells", file=sys.stderr)
    serial = 0
    for s in a.seqs:
        row = [k for (s2, k) in cells if s2 == s]
        if not row:
            continue
        if speculative:  # prefill without drafts: the last row's k would slow it down
            llm.collective_rpc(set_draft_tokens, args=(0,))
        ids = [f"s{s}-{serial + i}" for i in range(s)]
        serial += s
        for rid in ids:
            engine.add_request(rid, {"prompt_token_ids": prompt}, params)
        started: set[str] = set()
        prefill_steps = 0
        most = 2 * (s * a.context // a.max_batch_tokens + s) + 16  # prefill cannot need more
        while len(started) < s:  # until every request has its first token (prefill done)
            started.update(o.request_id for o in engine.step() if o.outputs[0].token_ids)
            prefill_steps += 1
            if prefill_steps > most:
                raise RuntimeError(f"{s} prompts of {a.context} tokens not prefilled after "
                                   f"{most} steps: raise --max-batch-tokens or --kv-cache-gib")
        for k in row:
            if speculative:
                llm.collective_rpc(set_draft_tokens, args=(k,))
            for _ in range(a.warmup):
                engine.step()
            before = read_spec_counters(llm)
            seconds, rows = [], []
            for _ in range(a.reps):
                t = time.perf_counter()
                stepped = engine.step()
                seconds.append(time.perf_counter() - t)
                rows.append(len(stepped))
            c = read_spec_counters(llm) - before
            out["cells"].append({"seqs": s, "draft_tokens": k, "seconds": seconds,
                                 "rows_out": rows, "prefill_steps": prefill_steps,
                                 "draft_tokens_verified": c.draft_tokens,
                                 "accepted_tokens": c.accepted_tokens})
            bar.update()
            bar.set_postfix_str(f"s={s} k={k} {1000 * statistics.median(seconds):.1f} ms")
        engine.abort_request(ids)
        while engine.has_unfinished_requests():
            engine.step()
    bar.close()
    return out


# ------------------------------------------------------------------------- the curve
def machine_header() -> dict:
    """Hardware of this machine: the machine kind curves are chosen by, and the details."""
    from openrlhf_srt.vllm.engine import cpu_model_name, native_bf16_flags
    from openrlhf_srt.vllm.proposer import engine_machine

    kind = engine_machine()
    cpu_model = cpu_model_name()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"machine": kind.to_dict(),
            "hardware": {"cpu_model": cpu_model, "cores": cores,
                         "native_bf16_flags": native_bf16_flags(),
                         "platform": platform.platform()}}


def build_curve(base: dict, spec: dict, a: argparse.Namespace, command: str):
    import numpy as np

    from openrlhf_srt.drafting.step_curve import MachineKind, StepCurve

    seqs = [s for s in a.seqs if s <= a.max_batch_tokens]
    ks = list(a.draft_tokens)
    pick = STATISTICS[a.statistic]
    med = {(c["seqs"], c["draft_tokens"]): pick(c["seconds"])
           for c in base["cells"] + spec["cells"]}
    baseline = np.array([med[(s, None)] for s in seqs])
    grid = np.full((len(seqs), len(ks)), np.nan)
    for i, s in enumerate(seqs):
        for j, k in enumerate(ks):
            grid[i, j] = med.get((s, k), np.nan)
    # per-token slope of the largest measured batches: least squares over the measured cells
    # with at least half the largest measured batch's tokens
    tokens = np.array(seqs)[:, None] * (1 + np.array(ks))[None, :]
    measured = np.isfinite(grid)
    big = measured & (tokens >= tokens[measured].max() / 2)
    slope = float(np.polyfit(tokens[big], grid[big], 1)[0]) if big.sum() >= 2 else 0.0
    slope = max(slope, 0.0)
    extrapolated = []
    for i, s in enumerate(seqs):
        last = int(np.flatnonzero(measured[i]).max())
        for j in range(last + 1, len(ks)):
            grid[i, j] = grid[i, last] + slope * s * (ks[j] - ks[last])
            extrapolated.append([s, ks[j]])
    import torch
    import vllm

    hw = machine_header()
    model = spec["model_config"]["model"]
    header = {
        "source": "vllm",
        **hw,
        "model": model,
        "dtype": spec["model_config"]["dtype"].replace("torch.", ""),
        "versions": {"vllm": vllm.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "context_tokens": a.context,
        "temperature": a.temperature,
        "reps": a.reps, "warmup_steps": a.warmup,
        "max_batch_tokens": a.max_batch_tokens,
        "statistic": a.statistic,
        "timing": f"{a.statistic} of --reps llm_engine.step() calls with the engine core in process "
                  "(VLLM_ENABLE_V1_MULTIPROCESSING=0), after --warmup untimed steps per cell; "
                  "prefill steps excluded; detokenisation off",
        "speculative_engine": "SRT proposer with vllm/fixed_drafts.py: exactly k draft tokens "
                              "per running sequence, budget 'fixed', num_speculative_tokens "
                              f"{max(ks)}",
        "intel_openmp_preloaded": "libiomp5" in child_env(a).get("LD_PRELOAD", ""),
        "notes": a.notes,
    }
    extra = {"extrapolated": extrapolated, "extrapolation_seconds_per_token": slope,
             "engine_start_seconds": {"baseline": base["engine_start_seconds"],
                                      "speculative": spec["engine_start_seconds"]},
             "samples": base["cells"] + spec["cells"]}
    curve = StepCurve(header=header, seqs=seqs, draft_tokens=ks, baseline=baseline,
                      speculative=grid, extra=extra)
    name = f"{MachineKind.from_dict(hw['machine']).slug()}-{model_slug(model)}"
    return curve, name


def model_slug(model: str) -> str:
    return Path(model).name.lower().replace("_", "-").replace(".", "")


def plot(curve, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    s = curve.seqs
    extra = {tuple(x) for x in curve.extra.get("extrapolated", [])}
    ax1.plot(s, 1000 * curve.baseline, "k-o", lw=2, label="baseline (no speculation)")
    ax2.plot(s, 1000 * curve.baseline / s, "k-o", lw=2, label="baseline (no speculation)")
    for j, k in enumerate(curve.draft_tokens):
        y = 1000 * curve.speculative[:, j]
        line, = ax1.plot(s, y, "-o", ms=4, label=f"speculative, k={int(k)}")
        tokens = s * (1 + k)
        ax2.plot(s, y / tokens, "-o", ms=4, color=line.get_color(), label=f"k={int(k)}")
        ext = np.array([(si, k) in extra for si in s.astype(int).tolist()])
        if ext.any():
            ax1.plot(s[ext], y[ext], "x", color=line.get_color(), ms=8)
            ax2.plot(s[ext], (y / tokens)[ext], "x", color=line.get_color(), ms=8)
    h = curve.header
    title = (f"{Path(str(h.get('model', ''))).name}, {h.get('dtype', '')}, "
             f"{h['machine']['name'] or h['machine']['device']}, source {h['source']}")
    ax1.set(xscale="log", yscale="log", xlabel="running sequences",
            ylabel="ms per engine step", title=title)
    ax2.set(xscale="log", yscale="log", xlabel="running sequences",
            ylabel="ms per processed token (s x (1+k))", title="per token (x: extrapolated)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(curve) -> None:
    ks = [int(k) for k in curve.draft_tokens]
    print(f"{'seqs':>5} {'base ms':>8} " + " ".join(f"{'k=' + str(k) + ' ms':>9}" for k in ks))
    for i, s in enumerate(curve.seqs.astype(int)):
        print(f"{s:5d} {1000 * curve.baseline[i]:8.1f} "
              + " ".join(f"{1000 * curve.speculative[i, j]:9.1f}" for j in range(len(ks))))


# ------------------------------------------------------------------------------ main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--seqs", nargs="+", type=int, default=list(DEFAULT_SEQS),
                   help="running sequences per measured step (ascending)")
    p.add_argument("--draft-tokens", nargs="+", type=int, default=list(DEFAULT_DRAFT_TOKENS),
                   help="draft tokens per sequence (ascending, from 0)")
    p.add_argument("--context", type=int, default=128, help="prompt tokens per sequence")
    p.add_argument("--reps", type=int, default=5, help="timed steps per cell (median)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps per cell (>= 1: the step after k changes still "
                        "verifies the drafts proposed before the change)")
    p.add_argument("--max-batch-tokens", type=int, default=1024,
                   help="cells with seqs * (1 + k) above this are extrapolated, not measured")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--kv-cache-gib", type=int, default=4, help="CPU KV cache (GiB)")
    p.add_argument("--statistic", choices=sorted(STATISTICS), default="median",
                   help="a cell's seconds from its timed steps (min: on a machine that other "
                        "jobs share, the least disturbed step)")
    p.add_argument("--from-samples", action="store_true",
                   help="rebuild the curve from <out>/*.samples.json of an earlier run, "
                        "starting no engine")
    p.add_argument("--notes", default="", help="free text for the curve header")
    p.add_argument("--out", type=Path, default=Path("runs/step_cost"))
    p.add_argument("--name", help="file name stem (default: <machine kind>-<model>)")
    p.add_argument("--child", choices=("baseline", "speculative"), help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for name in ("context", "reps", "max_batch_tokens"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.warmup < 1:
        p.error("--warmup must be >= 1")
    if not (a.temperature >= 0):
        p.error("--temperature must be >= 0")
    if a.seqs != sorted(set(a.seqs)) or a.seqs[0] < 1:
        p.error("--seqs must be ascending, distinct and >= 1")
    if a.draft_tokens != sorted(set(a.draft_tokens)) or a.draft_tokens[0] != 0 \
            or len(a.draft_tokens) < 2:
        p.error("--draft-tokens must be ascending, distinct, start at 0 and have a k > 0")
    if a.max_batch_tokens < max(a.seqs):
        p.error("--max-batch-tokens must be >= the largest --seqs (every baseline cell and "
                "k = 0 is measured)")
    if not a.kv_cache_gib > 0:
        p.error("--kv-cache-gib must be > 0")
    return a


def child_env(a: argparse.Namespace) -> dict:
    """The engine core runs in the child (one step() is one engine step); Intel OpenMP is
    preloaded into it as start_engine does for spawned workers (vLLM's CPU speculative path
    wants it)."""
    from openrlhf_srt.vllm.engine import intel_openmp_path

    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
           "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "ERROR"),
           "VLLM_CPU_KVCACHE_SPACE": str(a.kv_cache_gib)}
    lib = intel_openmp_path()
    if lib is not None and str(lib) not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(x for x in (str(lib), env.get("LD_PRELOAD")) if x)
    return env


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.child:
        a.child_out.write_text(json.dumps(run_engine(a)))
        return 0
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    a.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for kind in ("baseline", "speculative"):
        child_out = a.out / f"{kind}.samples.json"
        if a.from_samples:
            results[kind] = json.loads(child_out.read_text())
            continue
        print(f"bench_step_cost: {kind} engine", file=sys.stderr, flush=True)
        args = [a_ for a_ in (argv if argv is not None else sys.argv[1:])]
        proc = subprocess.run([sys.executable, __file__, *args, "--child", kind,
                               "--child-out", str(child_out)], env=child_env(a), check=False)
        if proc.returncode != 0:
            print(f"bench_step_cost: the {kind} engine failed (exit {proc.returncode})",
                  file=sys.stderr)
            return 1
        results[kind] = json.loads(child_out.read_text())
    curve, name = build_curve(results["baseline"], results["speculative"], a, command)
    name = a.name or name
    curve.save(a.out / f"{name}.json")
    plot(curve, a.out / f"{name}.png")
    print_table(curve)
    print(f"\nwrote {a.out / (name + '.json')} and {a.out / (name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
