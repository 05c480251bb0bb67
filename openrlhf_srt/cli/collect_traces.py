"""Generate rollout traces: S steps x P prompts x n samples through a vLLM engine.

    python -m openrlhf_srt.cli.collect_traces --steps 3 --prompts 12 --samples 8 \
        --temperature 0.6 --max-tokens 256 --out traces/math_t0.6.jsonl

The policy is fixed (no training), so every step samples the same prompts again; this is
the workload a per-prompt cache sees across RL steps. One JSON record per finished sample
(docs/traces.md), plus `<out>.meta.json` with the settings.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from openrlhf_srt.cache.keys import prompt_key
from openrlhf_srt.data.prompts import load_prompts, render_prompt
from openrlhf_srt.data.reward import math_reward
from openrlhf_srt.data.traces import TraceRecord, TraceWriter
from openrlhf_srt.vllm.engine import quiet_vllm_logs


@dataclass
class CollectSettings:
    out: Path
    model: str | None = None
    prompts_source: str = "builtin"
    input_key: str = "input"
    label_key: str = "label"
    steps: int = 3
    prompts: int = 12
    samples: int = 8
    temperature: float = 0.6
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int = 0
    dtype: str = "auto"

    def validate(self) -> None:
        for name in ("steps", "prompts", "samples", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not self.out.name.endswith((".jsonl", ".jsonl.gz")):
            raise ValueError(f"--out must end in .jsonl or .jsonl.gz, got {self.out}")


def choose_prompts(s: CollectSettings) -> list[dict]:
    pool = load_prompts(s.prompts_source, s.input_key, s.label_key)
    if len(pool) < s.prompts:
        raise ValueError(f"--prompts {s.prompts} but {s.prompts_source} has only {len(pool)}")
    return random.Random(s.seed).sample(pool, s.prompts)


def collect(s: CollectSettings, llm=None, log=print) -> Path:
    """Write the trace file for `s`; starts an engine unless one is passed."""
    from tqdm import tqdm
    from vllm import SamplingParams

    from openrlhf_srt.vllm.engine import start_engine

    s.validate()
    records = choose_prompts(s)
    if llm is None:
        log(f"collect: starting vLLM engine ({s.model or 'embedded model'})")
        llm = start_engine(s.model, dtype=s.dtype, seed=s.seed, max_model_len=4096)
    tokenizer = llm.get_tokenizer()
    prompt_ids = [render_prompt(tokenizer, r) for r in records]
    params = SamplingParams(
        n=s.samples, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens
    )
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(s).items()}
    s.out.parent.mkdir(parents=True, exist_ok=True)
    total_tokens, total_seconds = 0, 0.0
    with TraceWriter(s.out) as writer, tqdm(total=s.steps * s.prompts * s.samples,
                                           desc="collect", unit="sample") as bar:
        for step in range(s.steps):
            start = time.monotonic()
            outputs = llm.generate(
                [{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False
            )
            seconds = time.monotonic() - start
            step_tokens = 0
            for rec, ids, out in zip(records, prompt_ids, outputs):
                for comp in out.outputs:
                    step_tokens += len(comp.token_ids)
                    writer.write(TraceRecord(
                        step=step, prompt_key=prompt_key(ids), prompt_token_ids=list(ids),
                        sample_index=comp.index, response_token_ids=list(comp.token_ids),
                        finish_reason=comp.finish_reason or "abort", policy_version=0,
                        label=rec.get("label"), reward=math_reward(comp.text, rec.get("label")),
                    ))
            total_tokens += step_tokens
            total_seconds += seconds
            bar.update(s.prompts * s.samples)
            bar.set_postfix(step=step, tok_s=f"{step_tokens / seconds:.0f}")
    meta.update(generated_tokens=total_tokens, generation_seconds=round(total_seconds, 2))
    Path(str(s.out) + ".meta.json").write_text(json.dumps(meta, indent=1))
    log(f"collect: {total_tokens} tokens in {total_seconds:.0f} s "
        f"({total_tokens / total_seconds:.0f} tok/s) -> {s.out}")
    return s.out


def parse_args(argv: list[str] | None = None) -> CollectSettings:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--out", type=Path, required=True, help="trace file (.jsonl or .jsonl.gz)")
    p.add_argument("--model", default=None, help="HF folder or hub name (default: embedded)")
    p.add_argument("--prompts-source", default="builtin", help="'builtin', 'builtin:N' or a file")
    p.add_argument("--input-key", default="input")
    p.add_argument("--label-key", default="label")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--prompts", type=int, default=12, help="prompts per step (same every step)")
    p.add_argument("--samples", type=int, default=8, help="samples per prompt")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="auto")
    a = p.parse_args(argv)
    s = CollectSettings(**vars(a))
    try:
        s.validate()
    except ValueError as e:
        p.error(str(e))
    return s


def main(argv: list[str] | None = None) -> int:
    quiet_vllm_logs()
    from openrlhf_srt.data.trace_summary import format_summary
    from openrlhf_srt.data.traces import read_traces

    out = collect(parse_args(argv))
    print(format_summary(read_traces(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
