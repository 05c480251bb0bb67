"""One rollout batch: P prompts x n samples from the vLLM engine, with rewards and the
speculative figures of that generation."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from openrlhf_srt.data.reward import math_reward
from openrlhf_srt.vllm.spec_metrics import (
    acceptance_rate,
    read_spec_counters,
    tokens_per_step,
)


@dataclass
class RolloutBatch:
    prompt_ids: list[list[int]]  # one per sample (prompts repeated n times, grouped)
    response_ids: list[list[int]]
    finish_reasons: list[str]
    rewards: np.ndarray  # [P, n] correctness reward before penalties
    seconds: float
    spec: dict[str, float] = field(default_factory=dict)

    @property
    def response_lengths(self) -> np.ndarray:
        return np.array([len(r) for r in self.response_ids])

    @property
    def tokens(self) -> int:
        return int(self.response_lengths.sum())


def generate_batch(llm, prompts: list[dict], prompt_ids: list[list[int]], *, n: int,
                   temperature: float, top_p: float, max_new_tokens: int) -> RolloutBatch:
    from vllm import SamplingParams

    params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens)
    before = read_spec_counters(llm)
    start = time.monotonic()
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params,
                           use_tqdm=False)
    seconds = time.monotonic() - start
    spec = read_spec_counters(llm) - before
    p_ids, r_ids, reasons, rewards = [], [], [], []
    for rec, ids, out in zip(prompts, prompt_ids, outputs):
        comps = sorted(out.outputs, key=lambda c: c.index)
        for c in comps:
            p_ids.append(list(ids))
            r_ids.append(list(c.token_ids))
            reasons.append(c.finish_reason or "abort")
        rewards.append([math_reward(c.text, rec.get("label")) for c in comps])
    batch = RolloutBatch(p_ids, r_ids, reasons, np.array(rewards, dtype=np.float64), seconds)
    batch.spec = {
        "accept_len": tokens_per_step(batch.tokens, spec.accepted_tokens),
        "acceptance_rate": acceptance_rate(spec),
        "draft_tokens": float(spec.draft_tokens),
        "accepted_tokens": float(spec.accepted_tokens),
    }
    return batch
