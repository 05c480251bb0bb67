"""The local CPU trainer: on-policy GRPO/DAPO with rollouts from the (SRT) vLLM engine.

Each step: the next P prompts of a seeded order, n samples each from the engine, rewards
(with DAPO's overlong penalty), group advantages (DAPO drops groups whose samples all
score the same), one optimizer step, and the new weights pushed into the running engine
(the tree cache stays). With `--srt.runahead`, the end-of-step bubble generates the coming
steps' prompts into the cache (local/local_runahead.py); that output is never a sample.
Checkpoints hold the weights, optimizer, the look-ahead window's position and the cache
snapshot; resume continues with the next prompts, losing or repeating none. With
`--trace_dir`, every rollout sample and run-ahead output of a step is recorded in that step's
trace file (docs/traces.md) once its rewards are known. The rules that
keep a run through faults (a checkpoint folder checked before the first step, a failed save
that keeps the last good checkpoint, metrics once per step, resume refused where the prompt
order would change) are in docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from openrlhf_srt.cache.keys import prompt_key as compute_prompt_key
from openrlhf_srt.data.prompts import check_prompt_ids, load_prompts, render_prompt
from openrlhf_srt.data.textio import make_writable_dir
from openrlhf_srt.data.traces import StepTraceWriter, TraceRecord, trace_finish_reason
from openrlhf_srt.local.algorithms import group_advantages, informative_groups, overlong_penalty
from openrlhf_srt.local.local_runahead import LocalRunahead
from openrlhf_srt.local.policy_training import train_step
from openrlhf_srt.local.rollout import generate_batch
from openrlhf_srt.local.train_config import MAX_MODEL_LEN, TrainConfig
from openrlhf_srt.models.embedded import resolve_model
from openrlhf_srt.run_logger import RunLogger
from openrlhf_srt.runahead import LookaheadPrompts
from openrlhf_srt.vllm.engine_client import SRTEngineHandle
from openrlhf_srt.vllm.pause_points import pause_at
from openrlhf_srt.vllm.process_lifetime import remove_orphaned_tempdirs

log = logging.getLogger(__name__)
CACHE_SNAPSHOT = "srt_cache.bin"
# Settings that decide which prompts each step trains on (and how many samples of each): a
# resume with other values would repeat and skip prompts. The pool's content is compared too.
PROMPT_ORDER_FLAGS = ("seed", "prompts_per_step", "samples_per_prompt")
ADAMW_MOMENTS = 2  # AdamW keeps two moments per parameter, each the parameter's size


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written; the message names the folder and what is kept."""


class ResumeError(ValueError):
    """A resume that would change the run's prompt order; the message names the flag."""


def prompt_indices(cfg: TrainConfig, pool_size: int, step: int) -> list[int]:
    """The prompts of `step`: a fresh seeded permutation per pass over the pool."""
    per_pass = max(pool_size // cfg.prompts_per_step, 1)
    order = list(range(pool_size))
    random.Random(cfg.seed * 1_000_003 + step // per_pass).shuffle(order)
    start = (step % per_pass) * cfg.prompts_per_step
    return order[start:start + cfg.prompts_per_step]


def prompt_pool_digest(pool: list[dict]) -> str:
    """What the prompts trained on are (inputs and labels, in order), whatever file held them."""
    text = json.dumps([[r.get("input"), r.get("label")] for r in pool], default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def expected_checkpoint_bytes(model, cfg: TrainConfig) -> int:
    """Bytes one checkpoint takes, at most: the weights, AdamW's moments and the cache
    snapshot (bounded by the cache budget, --srt.cache_bytes)."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    cache = cfg.srt.cache_bytes if cfg.srt.enable and cfg.srt.snapshot else 0
    return params * (1 + ADAMW_MOMENTS) + cache


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


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
        self._finish_interrupted_save()
        state = None
        if cfg.resume:
            if not (self.ckpt_dir / "state.json").is_file():
                raise FileNotFoundError(f"--resume: no checkpoint in {self.ckpt_dir}")
            state = json.loads((self.ckpt_dir / "state.json").read_text())
            self._check_prompt_order(state)
            load_from = str(self.ckpt_dir / "model")
        self.model = AutoModelForCausalLM.from_pretrained(load_from, dtype=torch.float32)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=0.0)
        self._check_checkpoint_target()
        # the training order: one item per step (pool indices); peeked by run-ahead
        self.lookahead = LookaheadPrompts(
            (prompt_indices(cfg, len(self.pool), s) for s in range(cfg.steps)), unpack=list)
        if state is not None:
            self.start_step = int(state["next_step"])
            self.lookahead.load_state_dict(state["lookahead"])  # skips the consumed steps
            if self.lookahead.consumed != self.start_step:
                raise ValueError(f"checkpoint {self.ckpt_dir}: look-ahead consumed "
                                 f"{self.lookahead.consumed} steps, next step {self.start_step}")
            self.optimizer.load_state_dict(torch.load(self.ckpt_dir / "optimizer.pt"))
        self.step_prompts: dict[int, list[int]] = {}  # pool indices trained on, per step
        self._ids: dict[int, list[int]] = {}
        for path in remove_orphaned_tempdirs():  # e.g. the weight folder of a killed run
            self.say(f"removed {path} (its process is gone)")
        self._check_prompts()  # before the engine starts
        self.llm = self._start_engine(load_from)
        self.srt_handle = SRTEngineHandle(self.llm) if self.srt_on else None
        self.restored_cache: dict | None = None
        if cfg.resume and self.srt_on and cfg.srt.snapshot \
                and (self.ckpt_dir / CACHE_SNAPSHOT).is_file():
            self.srt_handle.load_snapshot(self.ckpt_dir / CACHE_SNAPSHOT)
            self.restored_cache = self._cache_stats()
        if cfg.resume:
            cache = self.restored_cache
            self.say(f"resuming at step {self.start_step} from {self.ckpt_dir}"
                     + (f"; cache restored: {cache.get('prompts', 0)} prompts, "
                        f"{cache.get('sequences', 0)} sequences" if cache else ""))
        self.runahead = (LocalRunahead(cfg.srt, self.lookahead, self.prompt_ids)
                         if self.srt_on and cfg.srt.runahead else None)
        self.traces = StepTraceWriter(cfg.trace_dir) if cfg.trace_dir is not None else None

    @property
    def srt_on(self) -> bool:
        return self.cfg.srt.enable

    def prompt_ids(self, index: int) -> list[int]:
        """Token ids of pool prompt `index` (chat template applied), rendered once."""
        if index not in self._ids:
            self._ids[index] = render_prompt(self.tokenizer, self.pool[index])
        return self._ids[index]

    def _check_prompts(self) -> None:
        """Every prompt this run trains on fits the engine: ids in the model's vocabulary,
        prompt + --max_new_tokens within MAX_MODEL_LEN."""
        cfg = self.cfg
        vocab = self.model.get_input_embeddings().num_embeddings
        used = {i for s in range(self.start_step, cfg.steps)
                for i in prompt_indices(cfg, len(self.pool), s)}
        for i in sorted(used):
            check_prompt_ids(self.prompt_ids(i), f"--prompts {cfg.prompts}: record {i} "
                             f"(id {self.pool[i]['id']})", max_model_len=MAX_MODEL_LEN,
                             max_new_tokens=cfg.max_new_tokens, vocab_size=vocab)

    # ------------------------------------------------------------------ checkpoint safety
    def _ckpt_sibling(self, suffix: str) -> Path:
        return self.ckpt_dir.with_name(f"{self.ckpt_dir.name}.{suffix}")

    def _finish_interrupted_save(self) -> None:
        """A save killed part-way left `latest.tmp` (incomplete: dropped) or, between its two
        renames, `latest.old` without `latest` (the last good checkpoint: put back)."""
        tmp, old = self._ckpt_sibling("tmp"), self._ckpt_sibling("old")
        if tmp.exists():
            shutil.rmtree(tmp)
            self.say(f"removed {tmp} (a checkpoint whose writing was interrupted)")
        if old.exists():
            if self.ckpt_dir.exists():
                shutil.rmtree(old)
            else:
                old.rename(self.ckpt_dir)
                self.say(f"restored {self.ckpt_dir} from {old} (a save was interrupted "
                         "between its renames)")

    def _check_prompt_order(self, state: dict) -> None:
        """Refuse a resume whose settings would train other prompts than the checkpoint's
        run would have (PROMPT_ORDER_FLAGS, the prompt pool)."""
        saved = state.get("config", {})
        for name in PROMPT_ORDER_FLAGS:
            if name in saved and saved[name] != getattr(self.cfg, name):
                raise ResumeError(
                    f"--{name} must be {saved[name]!r} to resume from {self.ckpt_dir} (the "
                    f"value it was trained with; it decides the prompt order), got "
                    f"{getattr(self.cfg, name)!r}")
        pool = state.get("prompt_pool")
        digest = prompt_pool_digest(self.pool)
        if pool is not None and (pool["size"], pool["sha256"]) != (len(self.pool), digest):
            raise ResumeError(
                f"--prompts must load the prompts {self.ckpt_dir} was trained on "
                f"({pool['size']} prompts from {saved.get('prompts')!r}, sha256 "
                f"{pool['sha256'][:12]}), got {len(self.pool)} prompts from "
                f"{self.cfg.prompts!r} (sha256 {digest[:12]})")

    def _check_checkpoint_target(self) -> None:
        """Before the first step: the checkpoint folder can be written and has room for one
        more checkpoint (a save writes beside the previous one before swapping)."""
        folder = self.ckpt_dir.parent
        try:
            make_writable_dir(folder)
        except OSError as e:
            raise CheckpointError(f"checkpoints cannot be written to {folder}: "
                                  f"{e.strerror or e}") from None
        need = expected_checkpoint_bytes(self.model, self.cfg)
        free = shutil.disk_usage(folder).free
        if free < need:
            raise CheckpointError(
                f"checkpoints need {_gib(need)} free in {folder} (weights, optimizer state"
                + (", the cache snapshot up to --srt.cache_bytes" if self.srt_on
                   and self.cfg.srt.snapshot else "") + f"), only {_gib(free)} are free")

    def _kept_checkpoint(self) -> str:
        try:
            state = json.loads((self.ckpt_dir / "state.json").read_text())
        except (OSError, ValueError):
            return "no earlier checkpoint was written"
        return f"{self.ckpt_dir} still holds the checkpoint before step {state['next_step']}"

    def _cache_stats(self) -> dict:
        return dict(self.srt_handle.stats().get("cache", {}))

    def _start_engine(self, weights: str):
        cfg, srt = self.cfg, self.cfg.srt
        seqs = cfg.prompts_per_step * cfg.samples_per_prompt
        common = {"dtype": cfg.engine_dtype, "seed": cfg.seed,
                  "max_model_len": MAX_MODEL_LEN, "use_tqdm_on_load": False}
        if not self.srt_on:
            from openrlhf_srt.vllm.engine import start_engine

            return start_engine(weights, disable_log_stats=False, max_num_seqs=max(seqs, 8),
                                **common)
        from openrlhf_srt.vllm.srt_engine import start_srt_engine

        if srt.runahead:
            seqs += srt.runahead_max_requests
            if srt.runahead_priority:
                common["scheduling_policy"] = "priority"  # rollouts before run-ahead
        return start_srt_engine(weights, srt=srt.drafter_config(), max_num_seqs=max(seqs, 8),
                                **common)

    def close(self) -> None:
        """Stop the engine (its processes and memory); the trainer is unusable after."""
        if getattr(self, "traces", None) is not None:
            self.traces.close()
        llm, self.llm, self.srt_handle = getattr(self, "llm", None), None, None
        if llm is not None:
            from openrlhf_srt.vllm.engine import stop_engine

            stop_engine(llm)

    def _rewards(self, batch) -> np.ndarray:
        rewards = batch.rewards.copy()
        if self.cfg.overlong:
            pen = overlong_penalty(torch.tensor(batch.response_lengths), self.cfg.max_new_tokens,
                                   self.cfg.overlong, self.cfg.overlong_penalty_factor)
            rewards += pen.numpy().reshape(rewards.shape)
        return rewards

    def _record_traces(self, step: int, records: list[dict], batch, rewards: np.ndarray) -> None:
        """The step's trace file: every rollout sample (prompt-major, as requested) with its
        label and reward (penalties included: what training used), then every run-ahead
        output. The weights pushed after step s-1 sampled step s (a resume loads those of
        the step it continues at): policy version = step."""
        n = self.cfg.samples_per_prompt
        traces = self.traces
        traces.begin_step(step)
        keys: dict[tuple[int, ...], int] = {}

        def key(ids: list[int]) -> int:
            t = tuple(ids)
            if t not in keys:
                keys[t] = compute_prompt_key(ids)
            return keys[t]

        flat_rewards = rewards.reshape(-1)
        for i, (ids, resp, reason) in enumerate(zip(batch.prompt_ids, batch.response_ids,
                                                    batch.finish_reasons)):
            label = records[i // n].get("label")
            traces.write(TraceRecord(
                step=step, prompt_key=key(ids), prompt_token_ids=ids, sample_index=i % n,
                response_token_ids=resp, finish_reason=trace_finish_reason(reason),
                policy_version=step, label=None if label is None else str(label),
                reward=float(flat_rewards[i])))
        # run-ahead samples are numbered after the prompt's rollouts of the step, if any:
        # (step, prompt key, sample index) names one record
        used = {k: n for k in keys.values()}
        for out in batch.runahead_outputs:
            k = key(out.prompt_ids)
            index = used.get(k, 0)
            used[k] = index + 1
            traces.write(TraceRecord(
                step=step, prompt_key=k, prompt_token_ids=out.prompt_ids, sample_index=index,
                response_token_ids=out.token_ids, finish_reason=out.finish_reason,
                policy_version=step, tag="runahead"))
        traces.end_step()

    def step(self, step: int) -> dict[str, float]:
        from vllm import SamplingParams

        from openrlhf_srt.vllm.weight_sync import push_weights

        cfg, started = self.cfg, time.monotonic()
        indices = next(self.lookahead)
        self.step_prompts[step] = list(indices)
        records = [self.pool[i] for i in indices]
        prompt_ids = [self.prompt_ids(i) for i in indices]
        if self.srt_on:
            self.srt_handle.set_step(step)
        if self.runahead is not None:
            self.runahead.set_step(indices, SamplingParams(temperature=cfg.temperature,
                                                           top_p=cfg.top_p),
                                   step_cost=self.srt_handle.stats().get("step_cost"))
        batch = generate_batch(self.llm, records, prompt_ids, n=cfg.samples_per_prompt,
                               temperature=cfg.temperature, top_p=cfg.top_p,
                               max_new_tokens=cfg.max_new_tokens, runahead=self.runahead,
                               keep_runahead=self.traces is not None)
        ra = batch.runahead
        self.say(f"step {step}: generated {batch.tokens} tokens in {batch.seconds:.1f} s"
                 + (f" (+{ra['tokens']:.0f} run-ahead)" if ra else "") + "; training")
        shaped = self._rewards(batch)
        if self.traces is not None:
            self._record_traces(step, records, batch, shaped)
        rewards = torch.tensor(shaped)
        keep = informative_groups(rewards) if cfg.dynamic_sampling else torch.ones(
            len(records), dtype=torch.bool)
        adv = group_advantages(rewards).reshape(-1)
        sample_keep = keep.repeat_interleave(cfg.samples_per_prompt)
        lengths = batch.response_lengths
        # samples with advantage 0 (e.g. a GRPO group that all scored the same) add exactly 0
        # to loss and gradient on-policy: only their tokens count, in the token-level mean
        idx = [i for i in range(len(lengths)) if sample_keep[i] and lengths[i] and adv[i] != 0]
        train_start = time.monotonic()
        metrics = train_step(
            self.model, self.optimizer, [batch.prompt_ids[i] for i in idx],
            [batch.response_ids[i] for i in idx], adv[idx], self.pad_id,
            micro_batch_size=cfg.micro_batch_size, clip_eps_low=cfg.clip_eps_low,
            clip_eps_high=cfg.eps_high, total_tokens=int(lengths[sample_keep.numpy()].sum()))
        metrics["train/samples"] = float(len(idx))
        train_seconds = time.monotonic() - train_start
        sync_seconds = push_weights(self.llm, self.model)
        metrics.update({
            "rollout/reward": float(batch.rewards.mean()),
            "rollout/shaped_reward": float(rewards.mean()),
            "rollout/response_length": float(batch.response_lengths.mean()),
            "rollout/truncated": float(np.mean([r == "length" for r in batch.finish_reasons])),
            "rollout/tokens": float(batch.tokens),
            "rollout/samples": float(len(batch.response_ids)),
            "rollout/kept_groups": float(keep.float().mean()),
            "timing/generation": batch.seconds,
            "timing/train": train_seconds,
            "timing/weight_sync": sync_seconds,
            "timing/step": time.monotonic() - started,
            "timing/generation_per_token": batch.seconds / max(batch.tokens, 1),
            "srt/accept_len": batch.spec["accept_len"],
            "srt/acceptance_rate": batch.spec["acceptance_rate"],
            "srt/draft_tokens": batch.spec["draft_tokens"],
            "srt/accepted_tokens": batch.spec["accepted_tokens"],
        })
        if self.traces is not None:
            counts = self.traces.take_counts()
            metrics["trace/records"] = counts["records"]
            metrics["timing/trace_write"] = counts["seconds"]
        if ra:
            metrics.update({"srt/runahead_tokens": ra["tokens"],
                            "srt/runahead_prompts": ra["prompts"],
                            "srt/bubble_seconds": ra["bubble_seconds"]})
        if self.srt_on:
            cache = self._cache_stats()
            metrics["srt/cache_bytes"] = float(cache.get("bytes", 0))
            metrics["srt/cache_prompts"] = float(cache.get("prompts", 0))
            metrics["srt/cache_sequences"] = float(cache.get("sequences", 0))
        return metrics

    def save(self, next_step: int) -> None:
        """Atomic: written beside (`latest.tmp`), then swapped in for the previous checkpoint.
        On failure the previous checkpoint stays, no `latest.tmp` is left, and
        CheckpointError says both."""
        tmp, old = self._ckpt_sibling("tmp"), self._ckpt_sibling("old")
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            self.model.save_pretrained(tmp / "model", safe_serialization=True)
            pause_at("checkpoint")
            self.tokenizer.save_pretrained(tmp / "model")
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            if self.srt_on and self.cfg.srt.snapshot:
                self.srt_handle.save_snapshot((tmp / CACHE_SNAPSHOT).resolve())
            state = {"next_step": next_step, "lookahead": self.lookahead.state_dict(),
                     "config": self.cfg.to_dict(),
                     "prompt_pool": {"size": len(self.pool),
                                     "sha256": prompt_pool_digest(self.pool)}}
            (tmp / "state.json").write_text(json.dumps(state, default=str))
            shutil.rmtree(old, ignore_errors=True)
            if self.ckpt_dir.exists():
                self.ckpt_dir.rename(old)
            tmp.rename(self.ckpt_dir)
        except Exception as e:  # whatever failed, the last good checkpoint stays
            shutil.rmtree(tmp, ignore_errors=True)
            if old.exists() and not self.ckpt_dir.exists():
                old.rename(self.ckpt_dir)
            raise CheckpointError(
                f"the checkpoint before step {next_step} could not be written to "
                f"{self.ckpt_dir} ({type(e).__name__}: {e}); {self._kept_checkpoint()}") from e
        shutil.rmtree(old, ignore_errors=True)

    def run(self, stop_at: int | None = None) -> list[dict[str, float]]:
        """Steps start_step .. cfg.steps - 1 (or up to `stop_at`, as an interrupted run
        would stop: the checkpoint then holds what save_every wrote).

        A checkpoint that fails mid-run is reported and the run goes on (the last good one
        stays); one that fails after the last step ends the run with CheckpointError."""
        cfg = self.cfg
        end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
        # the metrics of steps after the checkpoint resumed from are dropped: they are redone
        logger = RunLogger(cfg.run_dir, cfg.to_dict(), wandb=cfg.wandb,
                           tensorboard=cfg.tensorboard, first_step=self.start_step)
        rows = []
        try:
            for step in range(self.start_step, end):
                m = self.step(step)
                info: dict = {"prompts": self.step_prompts[step]}
                if step == self.start_step and self.restored_cache is not None:
                    info["restored_cache"] = self.restored_cache
                logger.log(step, m, info=info)
                rows.append({"step": step, **m})
                self.say(format_step(step, m, self.srt_on))
                last = step + 1 == cfg.steps
                if last or (cfg.save_every and (step + 1) % cfg.save_every == 0):
                    try:
                        self.save(step + 1)
                    except CheckpointError as e:
                        if last:
                            raise
                        self.say(f"warning: {e}; training goes on")
        finally:
            logger.close()
        return rows


def format_step(step: int, m: dict[str, float], srt: bool) -> str:
    spec = (f" tok/verify {m['srt/accept_len']:.2f} accept {m['srt/acceptance_rate']:.0%}"
            if srt else "")
    if "srt/runahead_tokens" in m:
        spec += f" run-ahead {m['srt/runahead_tokens']:.0f} tok"
    return (f"step {step}: reward {m['rollout/reward']:.3f} len {m['rollout/response_length']:.0f}"
            f" gen {m['timing/generation']:.1f}s train {m['timing/train']:.1f}s"
            f" sync {m['timing/weight_sync']:.1f}s{spec}")
