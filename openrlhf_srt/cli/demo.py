"""`make demo`: what the project does today, in about five minutes on 2 CPU cores.

Collects a small rollout trace set with the embedded model through the vLLM engine (the
same prompts sampled over several steps with the policy fixed) and prints what a
per-prompt cache could draft from: how much of each response already occurred in earlier
responses to the same prompt. Later issues replace this with the CPU training run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from openrlhf_srt.cli.collect_traces import CollectSettings, collect
from openrlhf_srt.vllm.engine import quiet_vllm_logs


def main(argv: list[str] | None = None) -> int:
    quiet_vllm_logs()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/demo/traces_t0.6.jsonl"))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--max-tokens", type=int, default=256)
    a = p.parse_args(argv)
    settings = CollectSettings(
        out=a.out, steps=a.steps, prompts=a.prompts, samples=a.samples,
        temperature=a.temperature, max_tokens=a.max_tokens,
    )
    from openrlhf_srt.data.trace_summary import format_summary
    from openrlhf_srt.data.traces import read_traces

    print(f"demo: {a.steps} steps x {a.prompts} prompts x {a.samples} samples, "
          f"temperature {a.temperature}, up to {a.max_tokens} tokens, embedded SmolLM2-135M")
    out = collect(settings)
    print()
    print(format_summary(read_traces(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
