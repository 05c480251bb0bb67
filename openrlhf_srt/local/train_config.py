"""Settings of the local CPU trainer, validated at start-up (errors name the flag).

The SRT settings are the `--srt.*` flags of the OpenRLHF entry point (`openrlhf_srt.srt_config.
SRTConfig`, same names, defaults and checks); `--srt.enable 0` runs the plain vLLM
baseline. `--srt.window_steps` and `--srt.route_tolerance` have no effect here (one engine,
no sliding window); a non-default window is refused. Traces are recorded with `--trace_dir`
(also without SRT), not the OpenRLHF entry point's `--srt.trace_dir`.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from openrlhf_srt.data.traces import check_trace_dir
from openrlhf_srt.models.embedded import EMBEDDED_NAMES, missing_local_path
from openrlhf_srt.srt_config import SRTConfig, SRTConfigError, add_srt_arguments, parse_bool

ALGOS = ("grpo", "dapo")
MAX_MODEL_LEN = 2048  # the engine's context: prompt + response tokens of one sample
SEED_MAX = 2**32 - 1  # numpy's (and so vLLM's) seeds are 32-bit


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
    srt: SRTConfig = field(default_factory=SRTConfig)  # --srt.*; srt.enable False: baseline
    save_every: int = 0  # checkpoint every k steps (0: only after the last step)
    resume: bool = False  # continue from run_dir/checkpoints/latest
    wandb: bool = True
    tensorboard: bool = True
    engine_dtype: str = "auto"
    # record every rollout and run-ahead output here, one gzip file per step (docs/traces.md)
    trace_dir: Path | None = None

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
        """Every value of the right type, finite and in range; errors name the flag."""

        def bad(flag: str, why: str, value) -> None:
            raise ValueError(f"--{flag} {why}, got {value!r}")

        def integer(name: str, lo: int, hi: int | None = None) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo or (
                    hi is not None and v > hi):
                span = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
                bad(name, f"must be an integer {span}", v)

        def number(name: str, span: str, inside) -> None:
            v = getattr(self, name)
            if (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)
                    or not inside(v)):
                bad(name, f"must be a finite number {span}", v)

        for f in fields(self):
            if isinstance(f.default, bool) and not isinstance(getattr(self, f.name), bool):
                bad(f.name, "must be true or false", getattr(self, f.name))
        if self.algo not in ALGOS:
            bad("algo", f"must be one of {ALGOS}", self.algo)
        for name in ("steps", "prompts_per_step", "micro_batch_size"):
            integer(name, 1)
        integer("samples_per_prompt", 2)  # group advantages need at least 2 samples
        integer("max_new_tokens", 1, MAX_MODEL_LEN - 1)  # a prompt has at least one token
        integer("seed", 0, SEED_MAX)
        integer("save_every", 0)  # 0: only after the last step
        number("temperature", "> 0", lambda v: v > 0)  # on-policy sampling
        number("top_p", "in (0, 1]", lambda v: 0 < v <= 1)
        number("lr", "> 0", lambda v: v > 0)
        number("clip_eps_low", "in [0, 1)", lambda v: 0 <= v < 1)
        if self.clip_eps_high is not None:
            number("clip_eps_high", ">= 0", lambda v: v >= 0)
        number("overlong_penalty_factor", ">= 0", lambda v: v >= 0)
        if self.overlong_buffer is not None:
            integer("overlong_buffer", 0, self.max_new_tokens)  # 0: off
        if self.overlong is not None and not 0 < self.overlong <= self.max_new_tokens:
            bad("overlong_buffer", "must be in (0, --max_new_tokens]", self.overlong)
        if self.model is not None and str(self.model) not in EMBEDDED_NAMES:
            problem = missing_local_path(self.model)
            if problem is not None:
                raise ValueError(f"--model: {problem}")
        if not isinstance(self.srt, SRTConfig):
            bad("srt.enable", "srt must be an SRTConfig", type(self.srt).__name__)
        if self.srt.window_steps:
            bad("srt.window_steps", "must be 0 (the local trainer keeps every step's "
                "sequences)", self.srt.window_steps)
        if self.srt.trace_dir:
            bad("srt.trace_dir", "is the OpenRLHF entry point's flag; the local trainer "
                "records traces with --trace_dir", self.srt.trace_dir)
        if self.trace_dir is not None:  # created and tried now, before the engine starts
            self.trace_dir = check_trace_dir(self.trace_dir, "--trace_dir")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        d["trace_dir"] = None if self.trace_dir is None else str(self.trace_dir)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of to_dict (a checkpoint's saved config)."""
        d = dict(d)
        d["run_dir"] = Path(d["run_dir"])
        if d.get("trace_dir") is not None:
            d["trace_dir"] = Path(d["trace_dir"])
        d["srt"] = SRTConfig(**d["srt"])
        return cls(**d)


def _flag(name: str) -> str:
    return "--" + name


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m openrlhf_srt.cli.train_local", allow_abbrev=False,
        description="On-policy GRPO/DAPO on CPU with rollouts from the SRT vLLM engine.",
    )
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        default = getattr(defaults, f.name)
        if f.name == "srt":
            add_srt_arguments(p, skip=("trace_dir",))  # here: --trace_dir
        elif isinstance(default, bool):
            p.add_argument(_flag(f.name), type=parse_bool, default=default, metavar="{true,false}")
        elif f.name in ("clip_eps_high",):
            p.add_argument(_flag(f.name), type=float, default=None)
        elif f.name in ("overlong_buffer",):
            p.add_argument(_flag(f.name), type=int, default=None)
        elif f.name == "model":
            p.add_argument(_flag(f.name), default=None)
        elif f.name == "run_dir":
            p.add_argument(_flag(f.name), type=Path, default=default)
        elif f.name == "trace_dir":
            p.add_argument(_flag(f.name), type=Path, default=None, metavar="DIR",
                           help="record every rollout and run-ahead output as traces, one "
                                "gzip file per step: DIR/step_000000.jsonl.gz (default off)")
        else:
            p.add_argument(_flag(f.name), type=type(default), default=default)
    return p


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    p = build_parser()
    ns = vars(p.parse_args(argv))
    srt = {k[4:]: ns.pop(k) for k in list(ns) if k.startswith("srt.")}
    try:
        cfg = TrainConfig(**ns, srt=SRTConfig.from_args(srt))
        cfg.validate()
    except (SRTConfigError, ValueError) as e:
        p.error(str(e))
    return cfg
