"""GRPO/DAPO pieces of the local trainer, numerically the same as OpenRLHF 0.11.2's.

- `policy_loss`: OpenRLHF's `PolicyLoss` (policy_loss_type="ppo", no dual clip, no
  importance-sampling correction): ratio clamped in log space to [-20, 20], asymmetric
  clipping (DAPO's clip-higher: eps_low 0.2, eps_high 0.28), token-level aggregation
  (masked mean over all tokens of the batch) or per-sample mean. A test compares both.
- `group_advantages`: `group_norm` (GRPO: (r - mean) / (std + 1e-9) over the prompt's n
  samples, torch's unbiased std as in OpenRLHF) and `dr_grpo` (r - mean).
- `overlong_penalty`: DAPO's soft overlong punishment, -min(len - (max - buffer), buffer)
  / buffer * factor for responses longer than max - buffer.
- `informative_groups`: DAPO's dynamic sampling keeps only prompts whose samples do not
  all score the same (a group with equal rewards has zero advantage and no gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ADVANTAGE_ESTIMATORS = ("group_norm", "dr_grpo")


@dataclass
class LossInfo:
    loss: torch.Tensor
    clip_ratio: torch.Tensor  # share of tokens where the clipped surrogate was smaller
    ppo_kl: torch.Tensor  # masked mean of old - new log-prob


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    return (x * mask).sum(dim=dim) / mask.sum(dim=dim)


def policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.28,
    token_level: bool = True,
) -> LossInfo:
    """Clipped surrogate loss over [batch, tokens] tensors; `mask` marks response tokens."""
    mask = mask.to(log_probs.dtype)
    log_ratio = log_probs - old_log_probs
    ratio = log_ratio.clamp(min=-20.0, max=20.0).exp()
    surr1 = ratio * advantages
    surr2 = ratio.clamp(1 - clip_eps_low, 1 + clip_eps_high) * advantages
    per_token = -torch.min(surr1, surr2)
    if token_level:
        loss = masked_mean(per_token, mask)
    else:
        counts = mask.sum(dim=-1)
        per_seq = (per_token * mask).sum(dim=-1) / (counts + 1e-8)
        loss = masked_mean(per_seq, (counts > 0).to(per_seq.dtype))
    return LossInfo(
        loss=loss,
        clip_ratio=masked_mean(torch.lt(surr2, surr1).to(mask.dtype), mask),
        ppo_kl=masked_mean(-log_ratio.detach(), mask),
    )


def group_advantages(rewards: torch.Tensor, estimator: str = "group_norm") -> torch.Tensor:
    """Per-sample advantage from a [prompts, n] reward matrix (same shape back)."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [prompts, samples], got shape {tuple(rewards.shape)}")
    centered = rewards - rewards.mean(-1, keepdim=True)
    if estimator == "group_norm":
        return centered / (rewards.std(-1, keepdim=True) + 1e-9)
    if estimator == "dr_grpo":
        return centered
    raise ValueError(f"advantage estimator must be one of {ADVANTAGE_ESTIMATORS}, got {estimator!r}")


def overlong_penalty(
    response_lengths: torch.Tensor, max_new_tokens: int, buffer_len: int, factor: float = 1.0
) -> torch.Tensor:
    """Reward penalty (<= 0) per response for DAPO's overlong buffer."""
    if not 0 < buffer_len <= max_new_tokens:
        raise ValueError(f"overlong buffer {buffer_len} must be in (0, max_new_tokens={max_new_tokens}]")
    exceed = (response_lengths.to(torch.float64) - (max_new_tokens - buffer_len)).clamp(max=buffer_len)
    return torch.where(exceed > 0, -exceed / buffer_len * factor, torch.zeros_like(exceed))


def informative_groups(rewards: torch.Tensor) -> torch.Tensor:
    """Bool per prompt: its samples' rewards are not all equal (DAPO dynamic sampling)."""
    return (rewards.max(-1).values - rewards.min(-1).values) > 0
