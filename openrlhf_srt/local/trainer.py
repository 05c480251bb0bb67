"""The local CPU trainer: on-policy GRPO/DAPO with rollouts from the (SRT) vLLM engine.

Each step: the next P prompts of a seeded order, n samples each from the engine, rewards
(with DAPO's overlong penalty), group advantages (DAPO drops groups whose samples all
score the same), one optimizer step, and the new weights pushed into the running engine
(the tree cache stays). Checkpoints hold the weights, optimizer, step and the cache
snapshot; resume continues with the next prompts, losing or repeating none.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time

import numpy as np
import torch

from openrlhf_srt.data.prompts import load_prompts, render_prompt
from openrlhf_srt.local.algorithms import group_advantages, informative_groups, overlong_penalty
from openrlhf_srt.local.config import TrainConfig
from openrlhf_srt.local.policy import train_step
from openrlhf_srt.local.rollout import generate_batch
from openrlhf_srt.metrics import RunLogger
from openrlhf_srt.models.embedded import resolve_model

log = logging.getLogger(__name__)
CACHE_SNAPSHOT = "srt_cache.bin"


def prompt_indices(cfg: TrainConfig, pool_size: int, step: int) -> list[int]:
    """The prompts of `step`: a fresh seeded permutation per pass over the pool."""
    per_pass = max(pool_size // cfg.prompts_per_step, 1)
    order = list(range(pool_size))
    random.Random(cfg.seed * 1_000_003 + step // per_pass).shuffle(order)
    start = (step % per_pass) * cfg.prompts_per_step
    return order[start:start + cfg.prompts_per_step]


class LocalTrainer:
    def __init__(self, cfg: TrainConfig, log_fn=print):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cfg.validate()
        self.cfg, self.say = cfg, log_fn
        torch.manual_seed(cfg.seed)
        self.model_path = resolve_model(cfg.model)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.pool = load_prompts(cfg.prompts, cfg.input_key, cfg.label_key)
        if len(self.pool) < cfg.prompts_per_step:
            raise ValueError(f"--prompts_per_step {cfg.prompts_per_step} exceeds the "
                             f"{len(self.pool)} prompts in {cfg.prompts}")
        self.ckpt_dir = cfg.run_dir / "checkpoints" / "latest"
        self.start_step = 0
        load_from = self.model_path
        if cfg.resume:
            if not (self.ckpt_dir / "state.json").is_file():
                raise FileNotFoundError(f"--resume: no checkpoint in {self.ckpt_dir}")
            load_from = str(self.ckpt_dir / "model")
        self.model = AutoModelForCausalLM.from_pretrained(load_from, dtype=torch.float32)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=0.0)
        if cfg.resume:
            state = json.loads((self.ckpt_dir / "state.json").read_text())
            self.start_step = int(state["next_step"])
            self.optimizer.load_state_dict(torch.load(self.ckpt_dir / "optimizer.pt"))
        self.llm = self._start_engine(load_from)
        if cfg.resume and cfg.srt and (self.ckpt_dir / CACHE_SNAPSHOT).is_file():
            self.llm.collective_rpc("srt_load", args=(str(self.ckpt_dir / CACHE_SNAPSHOT),))

    def _start_engine(self, weights: str):
        cfg = self.cfg
        common = {"dtype": cfg.engine_dtype, "seed": cfg.seed, "max_model_len": 2048,
                  "max_num_seqs": max(cfg.prompts_per_step * cfg.samples_per_prompt, 8)}
        if not cfg.srt:
            from openrlhf_srt.vllm.engine import start_engine

            return start_engine(weights, disable_log_stats=False, **common)
        from openrlhf_srt.vllm.srt_engine import start_srt_engine

        srt = {"max_depth": cfg.srt_max_depth, "min_prob": cfg.srt_min_prob}
        return start_srt_engine(weights, srt=srt,
                                num_speculative_tokens=cfg.srt_num_speculative_tokens, **common)

    def _rewards(self, batch) -> np.ndarray:
        rewards = batch.rewards.copy()
        if self.cfg.overlong:
            pen = overlong_penalty(torch.tensor(batch.response_lengths), self.cfg.max_new_tokens,
                                   self.cfg.overlong, self.cfg.overlong_penalty_factor)
            rewards += pen.numpy().reshape(rewards.shape)
        return rewards

    def step(self, step: int) -> dict[str, float]:
        from openrlhf_srt.vllm.weight_sync import push_weights

        cfg, started = self.cfg, time.monotonic()
        records = [self.pool[i] for i in prompt_indices(cfg, len(self.pool), step)]
        prompt_ids = [render_prompt(self.tokenizer, r) for r in records]
        if cfg.srt:
            self.llm.collective_rpc("srt_set_step", args=(step,))
        batch = generate_batch(self.llm, records, prompt_ids, n=cfg.samples_per_prompt,
                               temperature=cfg.temperature, top_p=cfg.top_p,
                               max_new_tokens=cfg.max_new_tokens)
        self.say(f"step {step}: generated {batch.tokens} tokens in {batch.seconds:.1f} s; training")
        rewards = torch.tensor(self._rewards(batch))
        keep = informative_groups(rewards) if cfg.dynamic_sampling else torch.ones(
            len(records), dtype=torch.bool)
        adv = group_advantages(rewards).reshape(-1)
        sample_keep = keep.repeat_interleave(cfg.samples_per_prompt)
        idx = [i for i in range(len(batch.response_ids))
               if sample_keep[i] and batch.response_ids[i]]
        train_start = time.monotonic()
        metrics: dict[str, float] = {}
        if idx:
            metrics.update(train_step(
                self.model, self.optimizer, [batch.prompt_ids[i] for i in idx],
                [batch.response_ids[i] for i in idx], adv[idx], self.pad_id,
                micro_batch_size=cfg.micro_batch_size, clip_eps_low=cfg.clip_eps_low,
                clip_eps_high=cfg.eps_high))
        train_seconds = time.monotonic() - train_start
        sync_seconds = push_weights(self.llm, self.model)
        metrics.update({
            "rollout/reward": float(batch.rewards.mean()),
            "rollout/shaped_reward": float(rewards.mean()),
            "rollout/response_length": float(batch.response_lengths.mean()),
            "rollout/truncated": float(np.mean([r == "length" for r in batch.finish_reasons])),
            "rollout/tokens": float(batch.tokens),
            "rollout/kept_groups": float(keep.float().mean()),
            "timing/generation": batch.seconds,
            "timing/train": train_seconds,
            "timing/weight_sync": sync_seconds,
            "timing/step": time.monotonic() - started,
            "timing/generation_per_token": batch.seconds / max(batch.tokens, 1),
            "srt/accept_len": batch.spec["accept_len"],
            "srt/acceptance_rate": batch.spec["acceptance_rate"],
            "srt/draft_tokens": batch.spec["draft_tokens"],
        })
        if cfg.srt:
            cache = self.llm.collective_rpc("srt_stats")[0].get("cache", {})
            metrics["srt/cache_bytes"] = float(cache.get("bytes", 0))
            metrics["srt/cache_prompts"] = float(cache.get("prompts", 0))
        return metrics

    def save(self, next_step: int) -> None:
        """Atomic: written beside, then swapped in for the previous checkpoint."""
        tmp = self.ckpt_dir.with_name("latest.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.model.save_pretrained(tmp / "model", safe_serialization=True)
        self.tokenizer.save_pretrained(tmp / "model")
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        if self.cfg.srt:
            self.llm.collective_rpc("srt_save", args=(str((tmp / CACHE_SNAPSHOT).resolve()),))
        (tmp / "state.json").write_text(json.dumps({"next_step": next_step,
                                                    "config": self.cfg.to_dict()}))
        old = self.ckpt_dir.with_name("latest.old")
        shutil.rmtree(old, ignore_errors=True)
        if self.ckpt_dir.exists():
            self.ckpt_dir.rename(old)
        tmp.rename(self.ckpt_dir)
        shutil.rmtree(old, ignore_errors=True)

    def run(self) -> list[dict[str, float]]:
        cfg = self.cfg
        logger = RunLogger(cfg.run_dir, cfg.to_dict(), wandb=cfg.wandb,
                           tensorboard=cfg.tensorboard, resume=cfg.resume)
        rows = []
        try:
            for step in range(self.start_step, cfg.steps):
                m = self.step(step)
                logger.log(step, m)
                rows.append({"step": step, **m})
                self.say(format_step(step, m, cfg.srt))
                last = step + 1 == cfg.steps
                if last or (cfg.save_every and (step + 1) % cfg.save_every == 0):
                    self.save(step + 1)
        finally:
            logger.close()
        return rows


def format_step(step: int, m: dict[str, float], srt: bool) -> str:
    spec = (f" tok/verify {m['srt/accept_len']:.2f} accept {m['srt/acceptance_rate']:.0%}"
            if srt else "")
    return (f"step {step}: reward {m['rollout/reward']:.3f} len {m['rollout/response_length']:.0f}"
            f" gen {m['timing/generation']:.1f}s train {m['timing/train']:.1f}s"
            f" sync {m['timing/weight_sync']:.1f}s{spec}")
