"""What recording traces costs: StepTraceWriter's throughput on synthetic rollouts.

    python tools/bench_trace_write.py --steps 4 --samples 2048 --engine-tokens-per-s 2000,20000

writes `--steps` step files of `--samples` records each (seeded; prompts of `--prompt-tokens`
tokens shared by `--n` samples, responses long-tailed: lognormal lengths capped at
`--max-tokens`; uniformly random token ids, the worst case for gzip), or with `--trace FILE`
that trace's records as each step, as an engine actor records them (the prompt key hashed
per record), and prints tokens written per second, bytes per token, and for each engine
generation rate the share of rollout time the writing would take on one core (write
seconds / generation seconds).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from openrlhf_srt.cache.keys import prompt_key
from openrlhf_srt.data.traces import STEP_FILE_COMPRESSLEVEL, StepTraceWriter, TraceRecord


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--samples", type=int, default=2048, help="records per step")
    p.add_argument("--n", type=int, default=16, help="samples per prompt")
    p.add_argument("--prompt-tokens", type=int, default=200)
    p.add_argument("--max-tokens", type=int, default=8192, help="response length cap")
    p.add_argument("--median-tokens", type=int, default=1500, help="median response length")
    p.add_argument("--compresslevel", type=int, default=STEP_FILE_COMPRESSLEVEL)
    p.add_argument("--engine-tokens-per-s", default="2000,20000,100000",
                   help="generation rates (tokens/s per engine) to price the writing against")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="folder for the files (default: a temporary one)")
    p.add_argument("--trace", type=Path, help="write this trace's records as each step "
                                              "instead of synthetic ones")
    args = p.parse_args(argv)
    for name in ("steps", "samples", "n", "prompt_tokens", "max_tokens", "median_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.compresslevel <= 9:
        p.error(f"--compresslevel must be in [0, 9], got {args.compresslevel}")
    try:
        args.rates = [float(x) for x in args.engine_tokens_per_s.split(",") if x.strip()]
    except ValueError:
        p.error(f"--engine-tokens-per-s must be numbers, got {args.engine_tokens_per_s!r}")
    if not args.rates or min(args.rates) <= 0:
        p.error("--engine-tokens-per-s must be positive numbers")
    return args


def synthetic_step(rng: np.random.Generator, args) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids) of one step: samples/n prompts, n samples each."""
    out = []
    sigma = 1.0  # long tail: the 99th percentile is ~10x the median
    for _ in range(max(args.samples // args.n, 1)):
        prompt = rng.integers(0, 50000, args.prompt_tokens).tolist()
        lengths = np.clip(rng.lognormal(np.log(args.median_tokens), sigma, args.n), 1,
                          args.max_tokens).astype(int)
        out.extend((prompt, rng.integers(0, 50000, int(k)).tolist()) for k in lengths)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    recorded = None
    if args.trace is not None:
        from openrlhf_srt.data.traces import read_traces

        recorded = [(r.prompt_token_ids, r.response_token_ids) for r in read_traces(args.trace)]
    prompt_tokens = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        writer = StepTraceWriter(folder, compresslevel=args.compresslevel)
        tokens = seconds = 0.0
        for step in tqdm(range(args.steps), desc="steps", file=sys.stderr):
            rollouts = recorded or synthetic_step(rng, args)  # made outside the clock
            start = time.perf_counter()
            writer.begin_step(step)
            for i, (prompt, response) in enumerate(rollouts):
                writer.write(TraceRecord(step=step, prompt_key=prompt_key(prompt),
                                         prompt_token_ids=prompt, sample_index=i % args.n,
                                         response_token_ids=response, finish_reason="stop",
                                         policy_version=step, label="1", reward=0.0))
            writer.end_step()
            seconds += time.perf_counter() - start
            tokens += sum(len(p) + len(r) for p, r in rollouts)
            prompt_tokens += sum(len(p) for p, _ in rollouts)
        size = sum(f.stat().st_size for f in folder.glob("step_*.jsonl.gz"))
    generated = tokens - prompt_tokens
    print(f"wrote {args.steps} steps, {tokens:.0f} tokens ({generated:.0f} generated) in "
          f"{seconds:.2f} s: {tokens / seconds / 1e6:.2f} M tokens/s, "
          f"{size / tokens:.2f} bytes per token (gzip level {args.compresslevel})")
    for rate in args.rates:
        share = seconds / (generated / rate)
        print(f"  engine at {rate:>9.0f} generated tokens/s: writing = {100 * share:.3f}% "
              "of rollout time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
