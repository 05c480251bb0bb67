"""Settings of the SRT drafter inside a vLLM engine worker.

The engine-starting process validates them (`srt_engine.validate_srt_config`) and hands them
to the spawned worker as JSON in the environment variable OPENRLHF_SRT_PROPOSER, which the
proposer reads when vLLM builds it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

from openrlhf_srt.drafting.budget import BUDGET_RULES

CONFIG_ENV = "OPENRLHF_SRT_PROPOSER"


@dataclass(frozen=True)
class SRTConfig:
    """Drafter settings: the tree cache's, the draft budget rule, where drafts come from.

    max_depth, byte_budget, rule, min_prob, global_weight: see cache.CacheConfig.
    budget: draft length rule per sequence and step (drafting.budget): "goodput" (default;
        expected tokens per second of engine time, with a step cost model fitted on the
        running engine), "length_aware" (DAS) or "fixed" (the whole draft up to vLLM's
        num_speculative_tokens).
    length_aware_full_at, length_aware_min: the length_aware rule's ramp.
    source: "module:callable" building the draft source from this config, for tests and
        experiments; None (default) builds `openrlhf_srt.cache.TreeCache`.
    step: training step recorded with the sequences added (srt_set_step changes it).
    """

    max_depth: int = 32
    byte_budget: int = 1 << 30
    rule: str = "merge"
    min_prob: float = 0.1
    global_weight: float = 1.0
    budget: str = "goodput"
    length_aware_full_at: int = 1024
    length_aware_min: int = 2
    source: str | None = None
    step: int = 0

    def __post_init__(self) -> None:
        for name in ("max_depth", "byte_budget", "step", "length_aware_full_at",
                     "length_aware_min"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"SRTConfig.{name} must be an integer, got {v!r}")  # noqa: TRY004 - ValueError is the config contract
        for name in ("min_prob", "global_weight"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ValueError(f"SRTConfig.{name} must be a number, got {v!r}")  # noqa: TRY004
        if not 0.0 <= self.min_prob <= 1.0:
            raise ValueError(f"SRTConfig.min_prob must be in [0, 1], got {self.min_prob!r}")
        if self.budget not in BUDGET_RULES:
            raise ValueError(f"SRTConfig.budget must be one of {BUDGET_RULES}, got {self.budget!r}")
        if self.length_aware_full_at < 1 or self.length_aware_min < 0:
            raise ValueError("SRTConfig.length_aware_full_at must be >= 1 and "
                             "length_aware_min >= 0")
        if self.source is not None and (not isinstance(self.source, str) or ":" not in self.source):
            raise ValueError(f"SRTConfig.source must be 'module:callable', got {self.source!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | SRTConfig | None) -> SRTConfig:
        if d is None:
            return cls()
        if isinstance(d, SRTConfig):
            return d
        if not isinstance(d, dict):
            raise ValueError(f"SRT config must be a dict, got {type(d).__name__}")  # noqa: TRY004
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SRT config keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_env(cls) -> SRTConfig:
        raw = os.environ.get(CONFIG_ENV)
        if not raw:
            return cls()
        try:
            d = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"{CONFIG_ENV} is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)
