"""`python -m openrlhf_srt.cli.train_ppo_ray`: OpenRLHF's PPO/GRPO/DAPO trainer with SRT.

Every flag of `python -m openrlhf.cli.train_ppo_ray` (OpenRLHF 0.11.2) is accepted
unchanged, through OpenRLHF's own parser and checks (openrlhf_srt.openrlhf.args), plus the
`--srt.*` flags (openrlhf_srt.srt_config, docs/openrlhf.md). At start: versions checked,
arguments parsed and validated (a bad value exits with the flag named), then OpenRLHF's
training runs with SRT engine actors, sticky routing, run-ahead and `srt/*` metrics, or,
with `--srt.enable 0`, exactly OpenRLHF's own train().

`--srt.print_args` prints the parsed and checked arguments as JSON and exits (what the
recipe tests use; nothing is started).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from openrlhf_srt.data.traces import check_trace_dir
from openrlhf_srt.srt_config import SRTConfig, SRTConfigError, add_srt_arguments

# What a run cannot start without (OpenRLHF's parser has no required flags; its checks
# crashed on a missing reward with AttributeError): each entry is satisfied by any one flag
REQUIRED_FLAGS = (
    ("the policy model", ("--actor.model_name_or_path",)),
    ("the reward", ("--reward.model_name_or_path", "--reward.remote_url",
                    "--train.agent_func_path")),
    ("the prompts", ("--data.prompt_dataset",)),
)


def build_parser(srt: bool = True) -> argparse.ArgumentParser:
    from openrlhf_srt.openrlhf.args import build_parser as openrlhf_parser

    parser = openrlhf_parser()
    parser.prog = "python -m openrlhf_srt.cli.train_ppo_ray"
    parser.allow_abbrev = False  # --srt.snap must not pass as --srt.snapshot
    if srt:
        add_srt_arguments(parser)
        parser.add_argument("--srt.print_args", dest="srt_print_args", action="store_true",
                            help="print the checked arguments as JSON and exit")
    return parser


def compat_problems(args, cfg: SRTConfig) -> list[str]:
    """Combinations of OpenRLHF flags the SRT path does not support (yet)."""
    if not cfg.enable:
        return []
    out = []
    if not args.vllm.num_engines:
        out.append("--srt.enable needs vLLM rollout engines (--vllm.num_engines >= 1)")
    if args.train.async_enable:
        out.append("--srt.enable is not supported with --train.async_enable yet "
                   "(use --srt.enable 0 for OpenRLHF's async trainer)")
    if getattr(args.data, "max_images_per_prompt", 0):
        out.append("--srt.enable does not support multimodal prompts "
                   "(--data.max_images_per_prompt > 0) yet")
    return out


def missing_flags(flat: argparse.Namespace) -> list[str]:
    """The REQUIRED_FLAGS entries none of whose flags was given a value."""
    out = []
    for what, flags in REQUIRED_FLAGS:
        if not any(getattr(flat, f[2:], None) for f in flags):
            out.append(f"{' or '.join(flags)} ({what})")
    return out


def parse_args(argv: list[str] | None = None, *, srt: bool = True):
    """(OpenRLHF's checked, hierarchized args, SRTConfig, print_args flag); parse errors
    exit through argparse with the flag named."""
    from openrlhf_srt.openrlhf.args import finalize

    parser = build_parser(srt)
    flat = parser.parse_args(argv)
    print_args = bool(getattr(flat, "srt_print_args", False))
    if hasattr(flat, "srt_print_args"):
        delattr(flat, "srt_print_args")
    try:
        cfg = SRTConfig.from_args(flat) if srt else SRTConfig(enable=False)
        if cfg.trace_dir:  # absolute (the engine actors' working folders differ), writable
            cfg = dataclasses.replace(cfg, trace_dir=str(check_trace_dir(cfg.trace_dir,
                                                                         "--srt.trace_dir")))
    except (SRTConfigError, ValueError) as e:
        parser.error(str(e))
    missing = missing_flags(flat)
    if missing:
        parser.error("missing " + "; ".join(missing))
    try:
        args = finalize(flat)
    except AssertionError as e:  # OpenRLHF's own checks
        parser.error(f"OpenRLHF rejected the arguments: {e}")
    problems = compat_problems(args, cfg)
    if problems:
        parser.error("; ".join(problems))
    return args, cfg, print_args


def to_jsonable(ns: Any) -> Any:
    if hasattr(ns, "__dict__") and not isinstance(ns, type):
        return {k: to_jsonable(v) for k, v in vars(ns).items()}
    if isinstance(ns, (list, tuple)):
        return [to_jsonable(v) for v in ns]
    if isinstance(ns, float) and ns in (float("inf"), float("-inf")):
        return str(ns)
    return ns


def main(argv: list[str] | None = None) -> int:
    from openrlhf_srt.openrlhf.versions import check_versions

    argv = sys.argv[1:] if argv is None else argv
    args, cfg, print_args = parse_args(argv)
    if print_args:
        print(json.dumps(to_jsonable(args), indent=1, sort_keys=True, default=str))
        return 0
    check_versions()
    if cfg.enable:
        from openrlhf_srt.openrlhf.train import train

        train(args, cfg)
    else:
        from openrlhf.cli.train_ppo_ray import train as openrlhf_train

        openrlhf_train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
