"""SRT additions to OpenRLHF's PPOTrainer, as a mixin over its overridable methods.

`SRTTrainerMixin` goes before OpenRLHF's (plain, un-decorated) PPOTrainer class in the bases
of `SRTPPOTrainer` (ppo_trainer.py, a `ray.remote` class). It overrides:

- `train_step`: merges the step's `srt/*` figures (SRTSamplesGenerator.pop_step_metrics)
  into the status dict that OpenRLHF logs to W&B and TensorBoard (under `train/`), and
  tells the generator the weights version the engines now hold (the step count; OpenRLHF's
  train_step pushes the new weights), which traces record;
- `save_logs_and_checkpoints`: at a checkpoint step, adds the look-ahead window (prompts
  peeked but not yet trained on) to OpenRLHF's client_states and, with --srt.snapshot,
  writes every engine's cache to `<ckpt.path>/_srt/global_step<N>/` (keeping the newest
  only, SNAPSHOTS_KEPT);
- `init_checkpoint_states`: on resume (OpenRLHF found a checkpoint), gives the look-ahead
  window back to the generator (and the weights version: the checkpoint's step) and loads
  the cache snapshots of that step.

This module imports no deepspeed, so it is tested on CPU with a stand-in base class.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from openrlhf_srt.srt_config import SRTConfig

log = logging.getLogger(__name__)

LOOKAHEAD_KEY = "srt_lookahead"


def snapshot_dir(ckpt_path: str, global_step: int) -> Path:
    return Path(ckpt_path) / "_srt" / f"global_step{global_step}"


# Cache snapshots kept on disk: the newest only. A snapshot set is engines x --srt.cache_bytes
# at most (8 engines x 8 GiB = 64 GiB); one per kept checkpoint (OpenRLHF keeps
# --ckpt.max_num = 3) would triple that for caches that only warm a resume, and a resume
# from an older checkpoint without its snapshot starts with a cold cache (drafts are only
# history: the sampled tokens do not change).
SNAPSHOTS_KEPT = 1


def prune_snapshots(ckpt_path: str, keep: int = SNAPSHOTS_KEPT) -> None:
    root = Path(ckpt_path) / "_srt"
    if keep <= 0 or not root.is_dir():
        return
    steps = sorted((int(m.group(1)), p) for p in root.iterdir()
                   if (m := re.fullmatch(r"global_step(\d+)", p.name)))
    for _, p in steps[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


class SRTTrainerMixin:
    """Needs `self.args`, `self.samples_generator` (an SRTSamplesGenerator) and `self.srt`."""

    srt: SRTConfig

    def _srt_setup(self, srt: SRTConfig) -> None:
        from openrlhf_srt.openrlhf.samples import SRTSamplesGenerator

        self.srt = srt
        self.samples_generator = SRTSamplesGenerator.from_generator(self.samples_generator, srt)

    def train_step(self, rollout_samples, global_step: int):
        status, next_step = super().train_step(rollout_samples, global_step)
        status.update(self.samples_generator.pop_step_metrics())
        self.samples_generator.policy_version = next_step  # the weights just pushed
        return status, next_step

    def save_logs_and_checkpoints(self, global_step: int, logs_dict=None, client_states=None):
        if client_states is not None and global_step % self.args.ckpt.save_steps == 0:
            client_states[LOOKAHEAD_KEY] = self.samples_generator.lookahead_state()
            if self.srt.snapshot:
                self.samples_generator.save_snapshots(snapshot_dir(self.args.ckpt.path,
                                                                   global_step))
                prune_snapshots(self.args.ckpt.path)
        return super().save_logs_and_checkpoints(global_step, logs_dict, client_states)

    def init_checkpoint_states(self):
        states = super().init_checkpoint_states()
        step = int(states.get("global_step", 0) or 0)
        if step > 0:
            self.samples_generator.restore_lookahead(states.get(LOOKAHEAD_KEY))
            self.samples_generator.train_step = step
            self.samples_generator.policy_version = step  # fit() pushes the checkpoint's weights
            if self.srt.snapshot:
                d = snapshot_dir(self.args.ckpt.path, step)
                if loaded := self.samples_generator.load_snapshots(d):
                    log.info("SRT: restored %d engines' cache snapshots from %s", loaded, d)
                else:
                    log.warning("SRT: no usable cache snapshot in %s; starting with empty "
                                "caches", d)
        return states
