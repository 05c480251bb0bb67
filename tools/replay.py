"""Replay rollout traces with model-free drafters and compare cache designs (docs/replay.md).

    python tools/replay.py tests/reference_traces/smollm2_math_t0.6.jsonl.gz \
        tests/reference_traces/smollm2_math_t1.0.jsonl.gz --plot replay.png

prints, per trace file, tokens per verification step (mean accepted + 1), hit rate, acceptance
rate, draft tokens per step and replay speed (tokens/s, reading excluded) for each strategy,
the peak resident memory, and plots tokens per step against response position (one panel per
trace file, one line per strategy). Trace files are streamed step by step (docs/replay.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from openrlhf_srt.cache import MIN_BYTE_BUDGET, CacheConfig
from openrlhf_srt.data.traces import trace_files
from openrlhf_srt.replay.rounds import replay_steps
from openrlhf_srt.replay.simulator import ORDERS, Result
from openrlhf_srt.replay.strategies import (
    DEFAULT_STRATEGIES,
    STRATEGIES,
    Common,
    describe,
    make_strategies,
)
from openrlhf_srt.replay.stream import count_response_tokens, iter_steps

LEFT_OUT = {  # strategies outside the default set, and why (printed with the defaults)
    "native-history": "per-sequence loop (draft_context per sequence and round)",
    "native-default": "per-sequence loop (token-tree drafts)",
    "ngram": "per-token Python n-gram search",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("traces", nargs="+",
                   help="trace files (.jsonl or .jsonl.gz) or a training run's trace "
                        "directory (its step files in step order: docs/traces.md)")
    p.add_argument("--strategies", default=None,
                   help=f"comma-separated, from: {', '.join(STRATEGIES)} (default: "
                        f"{','.join(DEFAULT_STRATEGIES)})")
    p.add_argument("--order", default="sync", choices=ORDERS,
                   help="when a sequence's new tokens reach the caches within a round: sync "
                        "(after every draft of the round; the batched loop) or engine (right "
                        "after its own verification; per-sequence loop)")
    p.add_argument("--cache-bytes", type=int, default=CacheConfig.byte_budget,
                   help="byte budget of each strategy's cache (the native cache evicts least "
                        "recently used prompts beyond it)")
    p.add_argument("--max-depth", type=int, default=Common.max_depth)
    p.add_argument("--budget", type=int, default=Common.budget, help="draft tokens per step")
    p.add_argument("--min-prob", type=float, default=Common.min_prob)
    p.add_argument("--factor", type=float, default=Common.factor,
                   help="arctic-* only: draft at most factor x match length tokens")
    p.add_argument("--tree", action="store_true",
                   help="draft token trees (best-first, --budget nodes) instead of paths")
    p.add_argument("--prompts", type=int, default=0,
                   help="replay only the first N prompts of each file (0: all)")
    p.add_argument("--bucket", type=int, default=32, help="response positions per plot bucket")
    p.add_argument("--plot", type=Path, help="write the PNG plot here")
    p.add_argument("--json", type=Path, help="write all figures as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    args.default_strategies = args.strategies is None
    if args.strategies is None:
        args.strategies = ",".join(DEFAULT_STRATEGIES)
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not args.strategies:
        p.error("--strategies is empty")
    if args.cache_bytes < MIN_BYTE_BUDGET:
        p.error(f"--cache-bytes must be >= {MIN_BYTE_BUDGET}, got {args.cache_bytes}")
    for name in ("max_depth", "budget", "prompts", "bucket"):
        if getattr(args, name) < (0 if name in ("budget", "prompts") else 1):
            p.error(f"--{name.replace('_', '-')} is out of range: {getattr(args, name)}")
    return args


def table(results: list[Result]) -> str:
    steps = sorted({s for r in results for s in r.by_step})
    w = max(len("strategy"), *(len(r.strategy) for r in results))
    head = (f"{'strategy':<{w}} {'tok/step':>8} {'hit':>6} {'accept':>7} {'draft/st':>8} "
            f"{'tok/s':>9} " + " ".join(f"{'step' + str(s):>7}" for s in steps))
    lines = [head, "-" * len(head)]
    for r in results:
        t = r.total
        per = " ".join(f"{r.by_step[s].tokens_per_step:>7.3f}" for s in steps)
        lines.append(f"{r.strategy:<{w}} {t.tokens_per_step:>8.3f} {t.hit_rate:>6.3f} "
                     f"{t.acceptance:>7.3f} {t.draft_per_step:>8.2f} "
                     f"{r.tokens_per_second:>9.0f} {per}")
    return "\n".join(lines)


def to_json(results: list[Result]) -> list[dict]:
    def stats(s):
        return {"tokens_per_step": s.tokens_per_step, "hit_rate": s.hit_rate,
                "acceptance": s.acceptance, "draft_per_step": s.draft_per_step,
                "steps": s.steps, "tokens": s.tokens}

    return [{"strategy": r.strategy, "settings": r.settings, "total": stats(r.total),
             "seconds": r.seconds, "tokens_per_second": r.tokens_per_second,
             "by_step": {str(k): stats(v) for k, v in sorted(r.by_step.items())},
             "by_position": {str(k * r.bucket): stats(v) for k, v in sorted(r.by_position.items())}}
            for r in results]


def plot(all_results: list[tuple[Path, list[Result]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(all_results), figsize=(6 * len(all_results), 4.2),
                             squeeze=False, sharey=True)
    colors = plt.get_cmap("tab20").colors
    for ax, (trace, results) in zip(axes[0], all_results):
        for i, r in enumerate(results):
            keys = sorted(r.by_position)
            xs = [k * r.bucket + r.bucket / 2 for k in keys]
            ys = [r.by_position[k].tokens_per_step for k in keys]
            ax.plot(xs, ys, marker="o", markersize=3, color=colors[(2 * i) % 20 + (i // 10) % 2],
                    linestyle="-" if i < 10 else "--",
                    label=f"{r.strategy} ({r.total.tokens_per_step:.2f})")
        ax.set_title(trace.name)
        ax.set_xlabel(f"response position (buckets of {results[0].bucket} tokens)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("tokens per verification step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv=None) -> int:
    args = parse_args(argv)
    common = Common(args.max_depth, args.budget, args.min_prob, args.factor, args.tree,
                    args.cache_bytes)
    try:
        strategies = make_strategies(args.strategies, common)
        for t in args.traces:
            trace_files(t)  # a missing file, or a directory without step files
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        print(f"replay: error: {e}", file=sys.stderr)
        return 2
    print(f"order {args.order}, cache budget {args.cache_bytes} bytes per strategy")
    for s in strategies:
        print(f"  {s.name}: {describe(s.name)}")
        print("    " + ", ".join(f"{k}={v}" for k, v in s.settings().items()))
    if args.default_strategies:
        print("  not in the default set (name them with --strategies): "
              + "; ".join(f"{k}: {v}" for k, v in LEFT_OUT.items()))
    all_results = []
    for t in args.traces:
        path = Path(t)
        # the bar's total (for its ETA): a quick scan, only when every prompt is replayed
        total = None if args.quiet or args.prompts else count_response_tokens(path)
        start = time.perf_counter()
        try:
            results = replay_steps(iter_steps(path, args.prompts), strategies,
                                   order=args.order, bucket=args.bucket,
                                   progress=not args.quiet, total_tokens=total,
                                   desc=f"replay {path.name}")
        except ValueError as e:  # file errors name file and line already
            msg = str(e) if str(path) in str(e) else f"{path}: {e}"
            print(f"replay: error: {msg}", file=sys.stderr)
            return 2
        wall = time.perf_counter() - start
        tokens = results[0].total.tokens
        print(f"\n{path.name}: {tokens} tokens, {len(results[0].by_step)} steps; "
              f"{wall:.1f} s wall for {len(results)} strategies (reading included), "
              f"peak RSS {peak_rss_mib():.0f} MiB so far")
        print(table(results))
        all_results.append((path, results))
    if args.plot:
        plot(all_results, args.plot)
        print(f"\nplot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps({str(p): to_json(r) for p, r in all_results}, indent=1))
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
