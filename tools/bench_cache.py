"""Benchmark of the tree cache on real rollout traces, side by side with ArcticInference.

Measures, per trace file:
  * engine step: `batch` running sequences each append their next recorded token and get a
    draft (max depth 32, budget 16) in one TreeCache.step call; cost per sequence per step
    (median over steps; sequences whose response ends drop out of the batch);
  * insertion throughput: add every trace record (prompt + whole response) to a fresh cache;
  * bytes per cached token: stats()["bytes"] / stats()["tokens"] (prompt tokens once per
    prompt + response tokens) against the target of 64, the global tree's share of them,
    the global tree alone per response token, and where the bytes are (TreeCache.memory());
  * how many prompts of the DAPO shape (16 samples per prompt, long-tailed responses of up
    to 8k tokens: mean --dapo-response tokens, prompt --dapo-prompt tokens, --dapo-steps
    steps of history kept per prompt) fit in --dapo-gib GiB at the worst bytes per cached
    token measured. An estimate: the per-sequence overheads are spread over the traces'
    shorter responses, so it errs low.
ArcticInference's SuffixDecodingCache (the design vLLM's `suffix` method uses: a local tree
per request, one global tree of responses) does the same work in the same run when
`arctic_inference` is importable; otherwise the comparison is reported as skipped.

    python tools/bench_cache.py [--traces FILE ...] [--batch 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from openrlhf_srt.cache import CacheConfig, TreeCache
from openrlhf_srt.data.traces import read_traces

TARGET_BYTES_PER_TOKEN = 64  # the whole forest's target (issue 16)
DEFAULT_TRACES = [  # the reference traces, tests/reference_traces/README.md
    Path(__file__).resolve().parents[1] / "tests/reference_traces/smollm2_math_t0.6.jsonl.gz",
    Path(__file__).resolve().parents[1] / "tests/reference_traces/smollm2_math_t1.0.jsonl.gz",
]

try:
    from arctic_inference.suffix_decoding import SuffixDecodingCache

    ARCTIC_ERROR = None
except Exception as e:  # noqa: BLE001 - any import failure means: skip the comparison
    SuffixDecodingCache = None
    ARCTIC_ERROR = f"{type(e).__name__}: {e}"


def load(path):
    recs = read_traces(path)
    recs.sort(key=lambda r: (r.step, r.prompt_key, r.sample_index))
    return [(r.prompt_key, np.asarray(r.prompt_token_ids, np.int32),
             np.asarray(r.response_token_ids, np.int32)) for r in recs]


# ------------------------------------------------------------------------------- srt
def srt_insert(recs, depth):
    cache = TreeCache(CacheConfig(max_depth=depth))
    t0 = time.perf_counter()
    for i, (key, prompt, resp) in enumerate(recs):
        cache.add_sequence(i, key, prompt, step=0)
        cache.extend(i, resp)
        cache.finish_sequence(i)
    dt = time.perf_counter() - t0
    return cache, dt


def srt_engine(recs, batch, depth, budget):
    """Per-step cost (wall us, thread-CPU us per sequence) of TreeCache.step, lockstep replay."""
    history, running = recs[: max(0, len(recs) - batch)], recs[-batch:]
    cache = TreeCache(CacheConfig(max_depth=depth))
    for i, (key, prompt, resp) in enumerate(history):
        cache.add_sequence(i, key, prompt, step=0)
        cache.extend(i, resp)
        cache.finish_sequence(i)
    ids = np.arange(len(history), len(history) + len(running), dtype=np.int64)
    for sid, (key, prompt, _) in zip(ids, running):
        cache.add_sequence(int(sid), key, prompt, step=1)
    resps = [r[2] for r in running]
    lengths = np.array([len(r) for r in resps])
    per_seq, pos = [], 0
    ones = np.ones(len(ids), np.int32)
    while True:
        alive = np.nonzero(lengths > pos)[0]
        if len(alive) == 0:
            break
        toks = np.fromiter((resps[i][pos] for i in alive), np.int32, len(alive))
        sel = ids[alive]
        n = len(alive)
        budgets = np.full(n, budget, np.int32)
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        cache.step(sel, toks, ones[:n], budgets)
        c1, t1 = time.thread_time_ns(), time.perf_counter_ns()
        per_seq.append(((t1 - t0) / n / 1e3, (c1 - c0) / n / 1e3))
        for i in np.nonzero(lengths == pos + 1)[0]:
            cache.finish_sequence(int(ids[i]))
        pos += 1
    return per_seq


# ---------------------------------------------------------------------------- arctic
def arctic_insert(recs, depth):
    cache = SuffixDecodingCache(max_tree_depth=depth)
    t0 = time.perf_counter()
    for i, (_, prompt, resp) in enumerate(recs):
        cache.start_request(i, prompt)
        cache.add_active_response(i, resp)
        cache.stop_request(i)
    dt = time.perf_counter() - t0
    return cache, dt


def arctic_engine(recs, batch, depth, budget):
    """The same replay through SuffixDecodingCache: one extend + one speculate per sequence."""
    history, running = recs[: max(0, len(recs) - batch)], recs[-batch:]
    cache = SuffixDecodingCache(max_tree_depth=depth)
    for i, (_, prompt, resp) in enumerate(history):
        cache.start_request(i, prompt)
        cache.add_active_response(i, resp)
        cache.stop_request(i)
    ids = list(range(len(history), len(history) + len(running)))
    ctx = []
    for sid, (_, prompt, resp) in zip(ids, running):
        cache.start_request(sid, prompt)
        ctx.append(np.concatenate([prompt, resp]))
    plen = [len(p) for _, p, _ in running]
    lengths = [len(r) for _, _, r in running]
    per_seq, pos = [], 0
    while True:
        alive = [i for i in range(len(ids)) if lengths[i] > pos]
        if not alive:
            break
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        for i in alive:
            end = plen[i] + pos + 1
            cache.add_active_response(ids[i], ctx[i][end - 1 : end])
            cache.speculate(ids[i], ctx[i][max(0, end - depth) : end], budget, 1.0, 0.0, 0.1)
        c1, t1 = time.thread_time_ns(), time.perf_counter_ns()
        per_seq.append(((t1 - t0) / len(alive) / 1e3, (c1 - c0) / len(alive) / 1e3))
        for i in alive:
            if lengths[i] == pos + 1:
                cache.stop_request(ids[i])
        pos += 1
    return per_seq


def arctic_bytes(cache):
    return cache._global_tree.estimate_memory()


# ------------------------------------------------------------------------------ main
def median_cost(runs):
    """Best (lowest) over repeated runs of the median per-step cost, wall and thread CPU."""
    wall = min(statistics.median(w for w, _ in r) for r in runs)
    cpu = min(statistics.median(c for _, c in r) for r in runs)
    return wall, cpu


def row(name, ours, theirs, unit, fmt="{:.2f}"):
    if theirs is None:
        return f"| {name} | {fmt.format(ours)} {unit} | skipped | - |"
    return f"| {name} | {fmt.format(ours)} {unit} | {fmt.format(theirs)} {unit} | {ours / theirs:.2f} |"


def memory_rows(cache, tokens):
    """Where the bytes are, largest first, per cached token (parts under 0.05 B left out)."""
    parts = sorted(cache.memory().items(), key=lambda kv: -kv[1])
    return [f"| {name} | {v / tokens:.1f} B |" for name, v in parts if v / tokens >= 0.05]


def dapo_fit(bytes_per_token, args):
    """Prompts of the DAPO shape whose history fits in --dapo-gib GiB."""
    per_prompt = args.dapo_prompt + args.dapo_samples * args.dapo_steps * args.dapo_response
    budget = args.dapo_gib * (1 << 30)
    return per_prompt, int(budget // (bytes_per_token * per_prompt))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--traces", nargs="+", default=[str(p) for p in DEFAULT_TRACES])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-arctic", action="store_true", help="skip ArcticInference")
    ap.add_argument("--dapo-gib", type=float, default=8.0, help="cache budget per engine, GiB")
    ap.add_argument("--dapo-samples", type=int, default=16, help="samples per prompt")
    ap.add_argument("--dapo-response", type=int, default=3000,
                    help="mean response tokens (DAPO: up to 8k, long-tailed)")
    ap.add_argument("--dapo-prompt", type=int, default=200, help="prompt tokens")
    ap.add_argument("--dapo-steps", type=int, default=1,
                    help="steps of history kept per prompt (samples x steps responses)")
    args = ap.parse_args(argv)
    for flag in ("dapo_gib", "dapo_samples", "dapo_response", "dapo_prompt", "dapo_steps"):
        if not getattr(args, flag) > 0:
            ap.error(f"--{flag.replace('_', '-')} must be > 0")
    arctic = SuffixDecodingCache is not None and not args.no_arctic
    if not arctic:
        why = "--no-arctic given" if args.no_arctic else f"arctic_inference not importable ({ARCTIC_ERROR})"
        print(f"ArcticInference comparison skipped: {why}")
    print(f"load average before the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    worst = 0.0
    for path in args.traces:
        recs = load(path)
        ntok = sum(len(p) + len(r) for _, p, r in recs)
        nresp = sum(len(r) for _, _, r in recs)
        ours_step = median_cost([srt_engine(recs, args.batch, args.depth, args.budget)
                                 for _ in range(args.repeat)])
        ins = [srt_insert(recs, args.depth) for _ in range(args.repeat)]
        cache = ins[0][0]
        st = cache.stats()
        ours_ins = ntok / min(dt for _, dt in ins)
        their_step = their_ins = their_bpt = None
        if arctic:
            their_step = median_cost([arctic_engine(recs, args.batch, args.depth, args.budget)
                                      for _ in range(args.repeat)])
            a_ins = [arctic_insert(recs, args.depth) for _ in range(args.repeat)]
            their_ins = ntok / min(dt for _, dt in a_ins)
            their_bpt = arctic_bytes(a_ins[0][0]) / nresp
        print(f"\n## {Path(path).name}: {len(recs)} responses, {nresp} response tokens, "
              f"{st['tokens']} cached tokens, batch {min(args.batch, len(recs))}, "
              f"depth {args.depth}, budget {args.budget}, rule {cache.config.rule}")
        print("| metric | openrlhf-srt | ArcticInference | ratio srt/arctic |")
        print("|---|---|---|---|")
        print(row("append+draft per sequence per step, wall (median)", ours_step[0],
                  their_step[0] if arctic else None, "us"))
        print(row("append+draft per sequence per step, thread CPU (median)", ours_step[1],
                  their_step[1] if arctic else None, "us"))
        print(row("insertion throughput", ours_ins / 1e6, their_ins / 1e6 if arctic else None,
                  "Mtok/s"))
        print(row("global tree bytes per response token", st["global_bytes"] / nresp, their_bpt,
                  "B", "{:.1f}"))
        bpt = st["bytes"] / st["tokens"]
        worst = max(worst, bpt)
        verdict = "yes" if bpt <= TARGET_BYTES_PER_TOKEN else "NO"
        print(f"| whole forest bytes per cached token (<= {TARGET_BYTES_PER_TOKEN}: {verdict}) "
              f"| {bpt:.1f} B | - | - |")
        print(f"| global tree share of the forest bytes | "
              f"{100 * st['global_bytes'] / st['bytes']:.0f}% | - | - |")
        print(f"| nodes (prompt trees + global) | {st['nodes']} | - | - |")
        print("\nWhere the bytes are, per cached token (TreeCache.memory()):\n")
        print("| part | bytes per cached token |\n|---|---|")
        print("\n".join(memory_rows(cache, st["tokens"])))
    per_prompt, fit = dapo_fit(worst, args)
    print(f"\nDAPO shape: {args.dapo_samples} samples x {args.dapo_steps} step(s) of "
          f"{args.dapo_response}-token responses (mean) + a {args.dapo_prompt}-token prompt = "
          f"{per_prompt} cached tokens per prompt; at {worst:.1f} B per cached token (the worst "
          f"trace above) {args.dapo_gib:g} GiB holds {fit} prompts' history.")


if __name__ == "__main__":
    main()
