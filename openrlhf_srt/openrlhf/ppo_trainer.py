"""`SRTPPOTrainer`: OpenRLHF 0.11.2's PPOTrainer (a Ray actor) with SRTTrainerMixin.

Imports OpenRLHF's trainer, hence DeepSpeed: GPU clusters only (the CPU tests exercise the
mixin with a stand-in base).
"""

from __future__ import annotations

import ray
from openrlhf.trainer.ppo_trainer import PPOTrainer

from openrlhf_srt.openrlhf.engine_group import plain_class
from openrlhf_srt.openrlhf.trainer_mixin import SRTTrainerMixin
from openrlhf_srt.srt_config import SRTConfig


class _SRTPPOTrainer(SRTTrainerMixin, plain_class(PPOTrainer)):
    def __init__(self, *args, srt_config: dict, **generate_kwargs):
        super().__init__(*args, **generate_kwargs)
        self._srt_setup(SRTConfig(**srt_config))


SRTPPOTrainer = ray.remote(_SRTPPOTrainer)
