"""Settings of the local CPU trainer, validated at start-up (errors name the flag)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from pathlib import Path

ALGOS = ("grpo", "dapo")


@dataclass
class TrainConfig:
    run_dir: Path = Path("runs/local")  # metrics.jsonl, tensorboard/, wandb/, checkpoints/
    model: str | None = None  # HF folder or hub name; None = the embedded SmolLM2-135M
    prompts: str = "builtin"  # 'builtin', 'builtin:N' or a JSON/JSONL/Parquet prompt file
    input_key: str = "input"
    label_key: str = "label"
    algo: str = "grpo"  # grpo: group_norm advantages; dapo: + clip-higher, overlong, dynamic sampling
    steps: int = 5  # training steps (one rollout batch and one optimizer step each)
    prompts_per_step: int = 4
    samples_per_prompt: int = 8  # n: GRPO group size
    max_new_tokens: int = 192
    temperature: float = 0.6  # where a 135M model's samples repeat enough to draft from
    top_p: float = 1.0
    lr: float = 2e-6
    clip_eps_low: float = 0.2
    clip_eps_high: float | None = None  # None: 0.2 for grpo, 0.28 for dapo
    overlong_buffer: int | None = None  # None: off for grpo, max_new_tokens // 4 for dapo
    overlong_penalty_factor: float = 1.0
    micro_batch_size: int = 8  # sequences per forward/backward
    seed: int = 0
    srt: bool = True  # rollouts with the SRT drafter (False: plain vLLM, the baseline)
    srt_num_speculative_tokens: int = 8
    srt_max_depth: int = 32
    srt_min_prob: float = 0.1
    save_every: int = 0  # checkpoint every k steps (0: only after the last step)
    resume: bool = False  # continue from run_dir/checkpoints/latest
    wandb: bool = True
    tensorboard: bool = True
    engine_dtype: str = "auto"

    @property
    def eps_high(self) -> float:
        if self.clip_eps_high is not None:
            return self.clip_eps_high
        return 0.28 if self.algo == "dapo" else 0.2

    @property
    def overlong(self) -> int | None:
        if self.overlong_buffer is not None:
            return self.overlong_buffer or None
        return self.max_new_tokens // 4 if self.algo == "dapo" else None

    @property
    def dynamic_sampling(self) -> bool:
        return self.algo == "dapo"

    def validate(self) -> None:
        def bad(flag: str, why: str):
            raise ValueError(f"--{flag}: {why}")

        if self.algo not in ALGOS:
            bad("algo", f"must be one of {ALGOS}, got {self.algo!r}")
        for name in ("steps", "prompts_per_step", "max_new_tokens", "micro_batch_size",
                     "srt_num_speculative_tokens", "srt_max_depth"):
            if getattr(self, name) < 1:
                bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.samples_per_prompt < 2:
            bad("samples_per_prompt", "group advantages need at least 2 samples per prompt")
        if self.temperature <= 0:
            bad("temperature", f"on-policy sampling needs a temperature > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            bad("top_p", f"must be in (0, 1], got {self.top_p}")
        if not self.lr > 0:
            bad("lr", f"must be > 0, got {self.lr}")
        if not 0 <= self.clip_eps_low < 1 or self.eps_high < 0:
            bad("clip_eps_low", "clip ranges must be >= 0 and the low one < 1")
        if self.overlong is not None and not 0 < self.overlong <= self.max_new_tokens:
            bad("overlong_buffer", f"must be in (0, max_new_tokens], got {self.overlong}")
        if not 0 <= self.srt_min_prob <= 1:
            bad("srt_min_prob", f"must be in [0, 1], got {self.srt_min_prob}")
        if self.srt_num_speculative_tokens > 128:
            bad("srt_num_speculative_tokens", "vLLM verifies at most 128 draft tokens")
        if self.save_every < 0:
            bad("save_every", "must be >= 0")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        return d


def _flag(name: str) -> str:
    return "--" + name


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m openrlhf_srt.cli.train_local",
        description="On-policy GRPO/DAPO on CPU with rollouts from the SRT vLLM engine.",
    )
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            p.add_argument(_flag(f.name), type=_parse_bool, default=default, metavar="{true,false}")
        elif f.name in ("clip_eps_high",):
            p.add_argument(_flag(f.name), type=float, default=None)
        elif f.name in ("overlong_buffer",):
            p.add_argument(_flag(f.name), type=int, default=None)
        elif f.name == "model":
            p.add_argument(_flag(f.name), default=None)
        elif f.name == "run_dir":
            p.add_argument(_flag(f.name), type=Path, default=default)
        else:
            p.add_argument(_flag(f.name), type=type(default), default=default)
    return p


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    p = build_parser()
    cfg = TrainConfig(**vars(p.parse_args(argv)))
    try:
        cfg.validate()
    except ValueError as e:
        p.error(str(e))
    return cfg
