"""OpenRLHF 0.11.2's own `train(args)` (openrlhf/cli/train_ppo_ray.py), run with SRT parts.

`train()` builds the placement groups, the actor/critic/ref/reward groups, the vLLM engines
and the single-controller PPOTrainer, with no parameter for the engine or trainer class. We
run its code unchanged through `rebind` (rebind.py) with two names replaced:

- `create_vllm_engines` -> `create_srt_engines` bound to this run's SRTConfig (OpenRLHF's
  own engine placement, starting `SRTRolloutActor`s);
- `from openrlhf.trainer.ppo_trainer import PPOTrainer` -> a launcher whose `.remote(...)`
  starts `SRTPPOTrainer` (PPOTrainer + SRTTrainerMixin) with the same arguments plus
  `srt_config`.

OpenRLHF's modules are not modified. The CLI rejects `--train.async_enable` with SRT, so
train()'s other branch (PPOTrainerAsync) is never taken here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openrlhf_srt.srt_config import SRTConfig

TRAINER_MODULE = "openrlhf.trainer.ppo_trainer"


class SRTTrainerLauncher:
    """Stands in for OpenRLHF's `PPOTrainer` Ray class inside train(): `.remote(*a, **kw)`
    starts the SRT trainer with this run's SRT config added."""

    def __init__(self, srt: SRTConfig, trainer_class=None):
        self.srt = srt
        self.trainer_class = trainer_class

    def remote(self, *args, **kwargs):
        cls = self.trainer_class
        if cls is None:
            from openrlhf_srt.openrlhf.ppo_trainer import SRTPPOTrainer as cls
        return cls.remote(*args, srt_config=self.srt.as_dict(), **kwargs)


def srt_train(srt: SRTConfig, *, openrlhf_train: Callable | None = None,
              replace: dict[str, Any] | None = None, trainer_class=None) -> Callable:
    """OpenRLHF's train(args) with SRT engines and trainer. `replace` substitutes further
    module globals of train() (the tests swap in stand-ins for the GPU-only actor groups;
    train() itself never needs it)."""
    from functools import partial

    from openrlhf_srt.openrlhf.engine_group import create_srt_engines
    from openrlhf_srt.openrlhf.rebind import rebind

    if openrlhf_train is None:
        from openrlhf.cli.train_ppo_ray import train as openrlhf_train
    names = {"create_vllm_engines": partial(create_srt_engines, srt=srt), **(replace or {})}
    trainer = SRTTrainerLauncher(srt, trainer_class)
    return rebind(openrlhf_train, names, {TRAINER_MODULE: {"PPOTrainer": trainer}})


def train(args, srt: SRTConfig) -> None:
    srt_train(srt)(args)
