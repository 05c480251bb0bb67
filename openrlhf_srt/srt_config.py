"""The `--srt.*` settings of both entry points (`train_ppo_ray`, `train_local`), validated at
start.

    parser = argparse.ArgumentParser(allow_abbrev=False); add_srt_arguments(parser)
    cfg = SRTConfig.from_args(parser.parse_args())    # flat or hierarchized namespace
    cfg.engine_args()   # vLLM engine arguments carrying the drafter's part to every worker

`SRTConfig` extends the drafter's settings (`openrlhf_srt.vllm.drafter_config.DrafterConfig`: the
tree cache, the draft budget, `max_draft_tokens`) with routing, run-ahead and snapshots; each
setting is defined once, with its default and its range check. An invalid value raises
`SRTConfigError` (a ValueError) naming the flag:
`--srt.max_draft_tokens must be an integer in [1, 128], got 0`. Unknown `--srt.*` flags are
rejected by argparse ("unrecognized arguments"). Pure Python: imports neither torch nor
vLLM. Flag meanings: docs/openrlhf.md.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from openrlhf_srt.cache.cache_config import MAX_DEPTH_LIMIT, MAX_DRAFT_TOKENS, MIN_DEPTH_LIMIT
from openrlhf_srt.cache.cache_config import RULES as CACHE_RULES
from openrlhf_srt.drafting.budget import BUDGET_RULES
from openrlhf_srt.vllm.drafter_config import DrafterConfig, SRTConfigError

__all__ = ["SRTConfig", "SRTConfigError", "add_srt_arguments", "parse_bool", "parse_bytes"]


@dataclass(frozen=True)
class SRTConfig(DrafterConfig):
    enable: bool = True  # False: OpenRLHF's own engines and dispatch, unchanged
    window_steps: int = 0  # keep sequences of the last N training steps (0: all)
    route_tolerance: float = 0.25  # per-step engine load <= ceil((1+tol) * mean); inf: never spill
    runahead: bool = True
    runahead_threshold: float = 0.25  # bubble: running < threshold * samples sent to the engine
    runahead_min_seconds: float = 1.0  # ... for at least this long
    runahead_min_samples: int = 2  # ... and this many consecutive polls
    runahead_poll_seconds: float = 0.5  # how often engines are polled during a step
    runahead_prompts: int = 16  # look-ahead window (upcoming prompts considered)
    runahead_samples: int = 2  # run-ahead samples per upcoming prompt
    runahead_max_new_tokens: int = 512  # per run-ahead request
    runahead_max_tokens: int = 65536  # run-ahead tokens per engine and step
    runahead_max_requests: int = 32  # run-ahead requests in flight per engine
    runahead_priority: bool = True  # vLLM priority scheduling: rollouts before run-ahead
    # start run-ahead only while the engine's fitted step cost says the extra rows slow the
    # running step by at most this fraction (inf: no cost check)
    runahead_max_slowdown: float = 0.05
    snapshot: bool = True  # cache snapshots saved with checkpoints, restored on resume
    verify_cost: float = 0.1  # est. speedup: cost of one verified draft token in decode steps
    # record every rollout and run-ahead output as traces: DIR/engine<i>/step_<N>.jsonl.gz
    # (docs/traces.md); "" off. The entry point makes it absolute (check_trace_dir).
    trace_dir: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()  # types of every field, then the drafter's ranges

        def bad(name: str, why: str, value: Any) -> None:
            raise SRTConfigError(f"--srt.{name} {why}, got {value!r}")

        ranges = {  # name: (lo, hi), inclusive
            "window_steps": (0, None), "route_tolerance": (0.0, None),
            "runahead_min_seconds": (0.0, None), "runahead_min_samples": (1, None),
            "runahead_prompts": (1, None), "runahead_samples": (1, None),
            "runahead_max_new_tokens": (1, None), "runahead_max_tokens": (0, None),
            "runahead_max_requests": (1, None), "verify_cost": (0.0, None),
            "runahead_max_slowdown": (0.0, None),
        }
        for name, (lo, hi) in ranges.items():
            v = getattr(self, name)
            if v < lo or (hi is not None and v > hi) or (
                    name not in ("route_tolerance", "runahead_max_slowdown") and math.isinf(v)):
                what = "an integer" if isinstance(lo, int) else "a number"
                span = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
                bad(name, f"must be {what} {span}", v)
        if not 0.0 < self.runahead_threshold <= 1.0:
            bad("runahead_threshold", "must be a fraction in (0, 1]", self.runahead_threshold)
        if not 0.0 < self.runahead_poll_seconds <= 60.0:
            bad("runahead_poll_seconds", "must be in (0, 60]", self.runahead_poll_seconds)
        if self.trace_dir and not self.enable:
            bad("trace_dir", "needs --srt.enable (the SRT engine actors record the traces)",
                self.trace_dir)
        if self.enable and self.runahead:
            # settings under which no run-ahead request could ever start: refused rather
            # than a run-ahead that is on and silently never runs
            one_prompt = self.runahead_samples * self.runahead_max_new_tokens
            if self.runahead_max_tokens < one_prompt:
                bad("runahead_max_tokens", "must be >= --srt.runahead_samples x "
                    f"--srt.runahead_max_new_tokens ({self.runahead_samples} x "
                    f"{self.runahead_max_new_tokens} = {one_prompt}: one prompt's run-ahead) "
                    "while --srt.runahead is on (--srt.runahead 0 turns it off)",
                    self.runahead_max_tokens)
            if self.runahead_max_requests < self.runahead_samples:
                bad("runahead_max_requests", "must be >= --srt.runahead_samples "
                    f"({self.runahead_samples}: one prompt's run-ahead) while --srt.runahead "
                    "is on (--srt.runahead 0 turns it off)", self.runahead_max_requests)

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_args(cls, args: Any) -> SRTConfig:
        """From a parsed namespace: OpenRLHF's hierarchized one (`args.srt.max_depth`), a
        flat one (`getattr(args, "srt.max_depth")`), or a dict of field values."""
        if isinstance(args, dict):
            values = dict(args)
        elif hasattr(args, "srt") and not isinstance(args.srt, (bool, str)):
            values = dict(vars(args.srt))
        else:
            values = {k[4:]: v for k, v in vars(args).items() if k.startswith("srt.")}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SRTConfigError(f"--srt.{unknown[0]} is not a known flag "
                                 f"(known: {', '.join(sorted(known))})")
        return cls(**values)

    # ------------------------------------------------------------------ derived settings
    def runahead_budget(self):
        from openrlhf_srt.runahead import RunaheadBudget

        return RunaheadBudget(max_tokens=self.runahead_max_tokens,
                              max_requests=self.runahead_max_requests,
                              max_new_tokens=self.runahead_max_new_tokens,
                              samples_per_prompt=self.runahead_samples)

    def runahead_planner(self):
        """One engine's run-ahead planner: detector, budget and cost check of these flags."""
        from openrlhf_srt.runahead import RunaheadPlanner

        return RunaheadPlanner(self.bubble_detector(), self.runahead_budget(),
                               max_slowdown=self.runahead_max_slowdown)

    def bubble_detector(self):
        from openrlhf_srt.runahead import BubbleDetector

        return BubbleDetector(threshold=self.runahead_threshold,
                              min_seconds=self.runahead_min_seconds,
                              min_samples=self.runahead_min_samples)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- argparse
def parse_bool(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false/1/0, got {text!r}")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """'1073741824', '1G', '1GiB', '512M', '64k' (powers of 1024)."""
    m = _SIZE.match(str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"expected a byte count like 4G or 512MiB, got {text!r}")
    scale = 1024 ** " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * scale)


def _help(name: str) -> str:
    return {
        "enable": "SRT drafter, sticky routing and run-ahead on (1) or OpenRLHF's engines (0)",
        "max_depth": "tree depth: longest token string indexed per prompt "
                     f"({MIN_DEPTH_LIMIT}-{MAX_DEPTH_LIMIT})",
        "budget": "draft length rule per sequence and step",
        "max_draft_tokens": "vLLM num_speculative_tokens: largest draft per step "
                            f"(1-{MAX_DRAFT_TOKENS})",
        "global_weight": "weight of the global tree's counts under cache_rule merge (>= 0)",
        "length_aware_full_at": "budget length_aware: response length given the full draft",
        "length_aware_min": "budget length_aware: draft length of a sequence just started",
        "min_prob": "stop drafting below this path probability (0-1)",
        "cache_rule": "per-prompt / global tree combination",
        "cache_bytes": "tree cache memory per engine (e.g. 4G); LRU prompts evicted beyond",
        "window_steps": "keep only sequences of the last N training steps (0 = all)",
        "route_tolerance": "per-step load per engine <= ceil((1+tol)*mean) prompts; "
                           "inf = always the prompt's home engine",
        "runahead": "generate upcoming prompts into the cache during end-of-step bubbles",
        "runahead_threshold": "bubble when running samples < this fraction of those sent",
        "runahead_min_seconds": "bubble must last this long before run-ahead starts",
        "runahead_min_samples": "... and this many consecutive polls",
        "runahead_poll_seconds": "engine polling interval during a step",
        "runahead_prompts": "look-ahead window: upcoming prompts considered",
        "runahead_samples": "run-ahead samples per upcoming prompt",
        "runahead_max_new_tokens": "max tokens of one run-ahead request",
        "runahead_max_tokens": "run-ahead tokens per engine and step",
        "runahead_max_requests": "run-ahead requests in flight per engine",
        "runahead_priority": "vLLM priority scheduling so rollouts preempt run-ahead",
        "runahead_max_slowdown": "start run-ahead only while the fitted step cost predicts "
                                 "at most this slowdown of the running step (inf: no check)",
        "snapshot": "save cache snapshots with checkpoints and restore them on resume",
        "verify_cost": "srt/est_speedup: cost of one verified draft token, in decode steps",
        "trace_dir": "record every rollout and run-ahead output as traces, one gzip file per "
                     "engine and step: DIR/engine<i>/step_<N>.jsonl.gz (empty: off)",
    }[name]


def add_srt_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Add every --srt.* flag (dest "srt.<field>", so OpenRLHF's hierarchize gives
    args.srt.<field>), but those named in `skip` (an entry point's own flag stands for it)."""
    group = parser.add_argument_group("SRT (openrlhf-srt)")
    for f in fields(SRTConfig):
        if not f.metadata.get("flag", True) or f.name in skip:
            continue
        default = f.default
        kw: dict[str, Any] = {"default": default, "help": f"{_help(f.name)} (default {default})"}
        if f.type == "bool":
            kw.update(type=parse_bool, nargs="?", const=True, metavar="BOOL")
        elif f.name == "cache_bytes":
            kw.update(type=parse_bytes, metavar="BYTES")
        elif f.type == "int":
            kw["type"] = int
        elif f.type == "float":
            kw["type"] = float
        else:
            kw["type"] = str
            if f.name == "trace_dir":
                kw["metavar"] = "DIR"
            if f.name in ("budget", "cache_rule"):
                kw["choices"] = BUDGET_RULES if f.name == "budget" else CACHE_RULES
        group.add_argument(f"--srt.{f.name}", dest=f"srt.{f.name}", **kw)
