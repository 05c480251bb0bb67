"""The SRT drafter's settings: one definition, validated once, carried to every engine worker
inside vLLM's own engine config.

    cfg = DrafterConfig(max_draft_tokens=4, min_prob=0.2)
    llm = vllm.LLM(model, **cfg.engine_args(), worker_extension_cls=...)
    # in each worker vLLM builds SRTProposer(vllm_config), which reads
    # DrafterConfig.from_vllm_config(vllm_config)

`engine_args()` gives vLLM's `speculative_config` (method `custom_class`,
`num_speculative_tokens` = `max_draft_tokens`) and `additional_config={"openrlhf_srt": {...}}`.
vLLM keeps `additional_config` in its `VllmConfig` (and hashes it into the config); the config
object is what it hands to every worker, the tensor-parallel ranks its Ray executor starts
included. No environment variable is involved: vLLM's Ray executor copies only variables with
known prefixes (`VLLM_`, `NCCL_`, `HF_`, ...) to its workers.

The `--srt.*` flags of both entry points (`openrlhf_srt.srt_config.SRTConfig`) extend this class,
so each drafter setting has one name, one default and one range check. Errors name the flag:
`--srt.max_draft_tokens must be an integer in [1, 128], got 0`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from openrlhf_srt.cache.cache_config import DEFAULT_RULE, MAX_DRAFT_TOKENS, CacheConfig
from openrlhf_srt.drafting.budget import BudgetConfig

ADDITIONAL_CONFIG_KEY = "openrlhf_srt"  # our entry in vLLM's additional_config
PROPOSER_CLASS = "openrlhf_srt.vllm.proposer.SRTProposer"
NOT_A_FLAG = {"flag": False}  # field metadata: settable in code and tests, no --srt.* flag
_CACHE_DEFAULTS = CacheConfig()


class SRTConfigError(ValueError):
    """An invalid SRT setting; the message starts with its flag (`--srt.<name>`)."""


@dataclass(frozen=True)
class DrafterConfig:
    """What the drafter inside each engine worker does.

    max_depth, cache_bytes, cache_rule, min_prob, global_weight: the tree cache
        (`cache.CacheConfig`: max_depth, byte_budget, rule, min_prob, global_weight).
    budget: draft length rule per sequence and step (`drafting.budget`): "goodput"
        (expected tokens per second of engine time under a step cost model fitted on the
        running engine), "length_aware" (DAS) or "fixed" (the whole draft).
    max_draft_tokens: vLLM's `num_speculative_tokens`, the cap per sequence and step.
    length_aware_full_at, length_aware_min: the length_aware rule's ramp.
    source: "module:callable" building the draft source from this config (tests and
        experiments); None builds `openrlhf_srt.cache.TreeCache`.
    withhold_drafts: compute every draft (cache, budget, counters) but hand none to vLLM, so
        nothing is verified: for engines that cannot verify drafts correctly (vLLM 0.29 on
        CPU, `engine.cpu_verification_problem`), which the vLLM 0.29 test lane runs.
    """

    # the cache's settings take the cache's own defaults (one definition: CacheConfig)
    max_depth: int = _CACHE_DEFAULTS.max_depth  # longest token string a prompt's tree indexes
    cache_bytes: int = _CACHE_DEFAULTS.byte_budget  # tree cache memory per engine
    cache_rule: str = DEFAULT_RULE  # per-prompt / global tree combination (docs/cache.md)
    min_prob: float = _CACHE_DEFAULTS.min_prob  # drafting stops below this path probability
    global_weight: float = _CACHE_DEFAULTS.global_weight  # global counts' weight under "merge"
    budget: str = "goodput"  # draft length rule: goodput | length_aware | fixed
    max_draft_tokens: int = 8  # vLLM num_speculative_tokens: cap per sequence and step
    length_aware_full_at: int = 1024  # length_aware: response length given the full cap
    length_aware_min: int = 2  # length_aware: budget of a sequence that just started
    source: str | None = field(default=None, metadata=NOT_A_FLAG)
    withhold_drafts: bool = field(default=False, metadata=NOT_A_FLAG)

    def __post_init__(self) -> None:
        check_types(self)
        if not 1 <= self.max_draft_tokens <= MAX_DRAFT_TOKENS:
            raise SRTConfigError(f"--srt.max_draft_tokens must be an integer in "
                                 f"[1, {MAX_DRAFT_TOKENS}], got {self.max_draft_tokens!r}")
        if not 0 <= self.length_aware_min <= self.max_draft_tokens:
            raise SRTConfigError("--srt.length_aware_min must be an integer in "
                                 f"[0, --srt.max_draft_tokens], got {self.length_aware_min!r}")
        if self.source is not None and (not isinstance(self.source, str) or ":" not in self.source):
            raise SRTConfigError(f"srt source must be 'module:callable', got {self.source!r}")
        # the cache and the budget rule check their own ranges; their messages name their
        # own fields, which are renamed here to the flags
        for build in (self.cache_config, self.budget_config):
            try:
                build()
            except ValueError as e:
                raise SRTConfigError(_flag_message(str(e))) from None

    # ------------------------------------------------------------------ the parts
    def cache_config(self) -> CacheConfig:
        return CacheConfig(max_depth=self.max_depth, byte_budget=self.cache_bytes,
                           rule=self.cache_rule, min_prob=float(self.min_prob),
                           max_draft_tokens=self.max_draft_tokens,
                           global_weight=float(self.global_weight))

    def budget_config(self) -> BudgetConfig:
        return BudgetConfig(rule=self.budget, max_draft_tokens=self.max_draft_tokens,
                            length_aware_full_at=self.length_aware_full_at,
                            length_aware_min=self.length_aware_min)

    # ------------------------------------------------------------------ the channel
    def drafter_config(self) -> DrafterConfig:
        """Just the drafter's settings (for a subclass carrying more)."""
        return DrafterConfig(**{f.name: getattr(self, f.name)
                                for f in dataclasses.fields(DrafterConfig)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.drafter_config())

    @classmethod
    def from_dict(cls, d: dict[str, Any] | DrafterConfig | None) -> DrafterConfig:
        if d is None:
            return DrafterConfig()
        if isinstance(d, DrafterConfig):
            return d.drafter_config()
        if not isinstance(d, dict):
            raise SRTConfigError(f"SRT drafter settings must be a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(DrafterConfig)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SRTConfigError(f"--srt.{unknown[0]} is not a drafter setting "
                                 f"(known: {', '.join(sorted(known))})")
        return DrafterConfig(**d)

    def speculative_config(self) -> dict[str, Any]:
        return {"method": "custom_class", "model": PROPOSER_CLASS,
                "num_speculative_tokens": self.max_draft_tokens}

    def engine_args(self, additional_config: dict[str, Any] | None = None) -> dict[str, Any]:
        """vLLM engine arguments that install the drafter with these settings (merged into
        an `additional_config` the caller already has)."""
        extra = dict(additional_config or {})
        extra[ADDITIONAL_CONFIG_KEY] = self.to_dict()
        return {"speculative_config": self.speculative_config(), "additional_config": extra}

    @staticmethod
    def from_vllm_config(vllm_config) -> DrafterConfig | None:
        """The settings an engine was started with (None: started without them)."""
        extra = getattr(vllm_config, "additional_config", None)
        if not isinstance(extra, dict) or ADDITIONAL_CONFIG_KEY not in extra:
            return None
        return DrafterConfig.from_dict(extra[ADDITIONAL_CONFIG_KEY])


# The tree cache's and the budget rule's own field names, as their flags
_FLAG_OF = {"byte_budget": "cache_bytes", "rule": "cache_rule", "budget rule": "budget"}


def _flag_message(msg: str) -> str:
    for own, flag in _FLAG_OF.items():
        if msg.startswith(own + " "):
            return f"--srt.{flag}{msg[len(own):]}"
    return f"--srt.{msg}"


def check_types(cfg) -> None:
    """Every field of a settings dataclass has its declared type (bool, int, float, str);
    numbers are finite except where a float field's range allows inf."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if kind == "bool" and not isinstance(v, bool):
            raise SRTConfigError(f"--srt.{f.name} must be true or false, got {v!r}")
        if kind == "int" and (not isinstance(v, int) or isinstance(v, bool)):
            raise SRTConfigError(f"--srt.{f.name} must be an integer, got {v!r}")
        if kind == "float" and (not isinstance(v, (int, float)) or isinstance(v, bool)
                                or math.isnan(v)):
            raise SRTConfigError(f"--srt.{f.name} must be a number, got {v!r}")
        if kind == "str" and not isinstance(v, str):
            raise SRTConfigError(f"--srt.{f.name} must be a string, got {v!r}")
