"""The trained policy on CPU: per-token log-probs of responses and one optimizer step."""

from __future__ import annotations

import torch

from openrlhf_srt.local.algorithms import policy_loss
from openrlhf_srt.vllm.engine import cpu_bf16_decision, cpu_dtype, cpu_has_native_bf16


def _left_padded(prompts: list[list[int]], responses: list[list[int]], pad_id: int):
    seqs = [p + r for p, r in zip(prompts, responses)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s)
        attn[i, width - len(s):] = 1
    return ids, attn


def cpu_precision(engine_dtype: str = "auto") -> str:
    """What a CPU run computes in, and why: the engines' dtype and the trainer's (float32
    weights, bf16 autocast of the forward pass where the CPU has native bf16)."""
    native, why = cpu_bf16_decision()
    engine = cpu_dtype(engine_dtype)
    train = "float32 weights, bf16 autocast" if native else "float32"
    return f"engines {engine}, training {train} ({why})"


def response_logprobs(model, prompts, responses, pad_id: int, autocast: bool | None = None):
    """[batch, R] log-probs of each response token under `model` and the mask of real
    tokens, R the longest response. Left padding puts every response at the end, so only
    the last R+1 positions need logits. autocast: bf16 autocast; None (default) only on a
    CPU with native bf16 (elsewhere emulated bf16 is several times slower than float32)."""
    if autocast is None:
        autocast = cpu_has_native_bf16()
    ids, attn = _left_padded(prompts, responses, pad_id)
    r_max = max(len(r) for r in responses)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids, attention_mask=attn, position_ids=positions,
                       logits_to_keep=r_max + 1).logits
    logits = logits[:, :-1].float()  # position t predicts token t+1
    targets = ids[:, -r_max:]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mask = torch.zeros_like(logp)
    for i, r in enumerate(responses):
        if r:
            mask[i, r_max - len(r):] = 1.0
    return logp, mask


def train_step(model, optimizer, prompts, responses, advantages: torch.Tensor, pad_id: int, *,
               micro_batch_size: int, clip_eps_low: float, clip_eps_high: float,
               max_grad_norm: float = 1.0, total_tokens: int | None = None) -> dict[str, float]:
    """One on-policy update over all samples: token-level loss across the whole batch
    (each micro-batch's mean weighted by its share of tokens), one optimizer step.

    total_tokens: the loss's denominator when the batch also held samples left out here
    because their advantage is 0 (their loss and gradient are exactly 0 on-policy, but
    their tokens count in OpenRLHF's token-level mean); default: these samples' tokens."""
    model.train()
    optimizer.zero_grad(set_to_none=False)
    if total_tokens is None:
        total_tokens = sum(len(r) for r in responses)
    total_tokens = max(total_tokens, 1)
    loss_sum = clip_sum = 0.0
    for lo in range(0, len(responses), micro_batch_size):
        hi = lo + micro_batch_size
        logp, mask = response_logprobs(model, prompts[lo:hi], responses[lo:hi], pad_id)
        adv = advantages[lo:hi].to(logp.dtype).unsqueeze(-1).expand_as(logp)
        info = policy_loss(logp, logp.detach(), adv, mask, clip_eps_low, clip_eps_high)
        share = float(mask.sum()) / total_tokens
        (info.loss * share).backward()
        loss_sum += float(info.loss.detach()) * share
        clip_sum += float(info.clip_ratio) * share
    for p in model.parameters():  # zero, not missing: AdamW skips parameters without grad,
        if p.grad is None:        # OpenRLHF's step applies momentum to every parameter
            p.grad = torch.zeros_like(p)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm))
    optimizer.step()
    return {"train/policy_loss": loss_sum, "train/clip_ratio": clip_sum,
            "train/grad_norm": grad_norm}
