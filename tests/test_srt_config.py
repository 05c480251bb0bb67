"""--srt.* flags: defaults, parsing, validation messages naming the flag."""

from __future__ import annotations

import argparse

import pytest

from openrlhf_srt.srt_config import SRTConfig, SRTConfigError, add_srt_arguments, parse_bytes


def parse(*argv):
    p = argparse.ArgumentParser(exit_on_error=False)
    add_srt_arguments(p)
    return SRTConfig.from_args(p.parse_args(list(argv)))


def test_defaults_and_values():
    cfg = parse()
    assert cfg == SRTConfig()
    cfg = parse("--srt.max_draft_tokens", "4", "--srt.budget", "fixed", "--srt.cache_bytes",
                "2GiB", "--srt.runahead", "0", "--srt.snapshot", "--srt.route_tolerance", "inf")
    assert cfg.max_draft_tokens == 4 and cfg.budget == "fixed"
    assert cfg.cache_bytes == 2 << 30 and cfg.runahead is False and cfg.snapshot is True
    assert cfg.route_tolerance == float("inf")


@pytest.mark.parametrize("argv, message", [
    (["--srt.max_draft_tokens", "0"], "--srt.max_draft_tokens must be an integer in [1, 128]"),
    (["--srt.max_draft_tokens", "129"], "--srt.max_draft_tokens must be an integer in [1, 128]"),
    (["--srt.max_depth", "300"], "--srt.max_depth must be an integer in [2, 255]"),
    (["--srt.min_prob", "1.5"], "--srt.min_prob must be a number in [0, 1]"),
    (["--srt.cache_bytes", "1k"], "--srt.cache_bytes must be an integer >= 65536"),
    (["--srt.length_aware_min", "9"], "--srt.length_aware_min must be an integer in [0, "),
    (["--srt.global_weight", "-1"], "--srt.global_weight must be a number >= 0"),
    (["--srt.runahead_threshold", "0"], "--srt.runahead_threshold must be a fraction"),
    (["--srt.window_steps", "-1"], "--srt.window_steps must be an integer >= 0"),
    (["--srt.runahead_min_seconds", "inf"], "--srt.runahead_min_seconds must be a number"),
    (["--srt.verify_cost", "nan"], "--srt.verify_cost must be a number"),
])
def test_invalid_values_name_the_flag(argv, message):
    with pytest.raises(SRTConfigError) as e:
        parse(*argv)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("argv, flag", [
    (["--srt.budget", "greedy"], "--srt.budget"),
    (["--srt.enable", "maybe"], "--srt.enable"),
    (["--srt.cache_bytes", "lots"], "--srt.cache_bytes"),
    (["--srt.max_depth", "3.5"], "--srt.max_depth"),
])
def test_argparse_type_errors_name_the_flag(argv, flag):
    with pytest.raises(argparse.ArgumentError) as e:
        parse(*argv)
    assert flag in str(e.value)


def test_unknown_flag_rejected():
    p = argparse.ArgumentParser(exit_on_error=False)
    add_srt_arguments(p)
    with pytest.raises(SystemExit):  # argparse: "unrecognized arguments: --srt.depth 3"
        p.parse_args(["--srt.depth", "3"])
    with pytest.raises(SRTConfigError, match="--srt.depth is not a known flag"):
        SRTConfig.from_args({"depth": 3})


def test_hierarchized_namespace():
    from types import SimpleNamespace

    ns = SimpleNamespace(srt=SimpleNamespace(**{**SRTConfig().as_dict(), "max_depth": 16}))
    assert SRTConfig.from_args(ns).max_depth == 16


def test_the_drafter_settings_are_the_flags():
    """One definition: the --srt.* flags extend the drafter's settings, which travel to the
    engine workers in vLLM's additional_config."""
    from openrlhf_srt.vllm.drafter_config import ADDITIONAL_CONFIG_KEY, DrafterConfig

    cfg = SRTConfig(max_depth=20, cache_bytes=1 << 20, min_prob=0.3, budget="length_aware",
                    max_draft_tokens=5, runahead=False)
    d = cfg.drafter_config()
    assert type(d) is DrafterConfig
    assert (d.max_depth, d.cache_bytes, d.min_prob, d.budget, d.max_draft_tokens) == (
        20, 1 << 20, 0.3, "length_aware", 5)
    args = cfg.engine_args()
    assert args["speculative_config"]["num_speculative_tokens"] == 5
    assert DrafterConfig.from_dict(args["additional_config"][ADDITIONAL_CONFIG_KEY]) == d
    p = argparse.ArgumentParser()
    add_srt_arguments(p)
    flags = {a.dest for a in p._actions}
    assert "srt.source" not in flags  # a code-level hook, not a flag
    assert {"srt.global_weight", "srt.length_aware_full_at", "srt.length_aware_min"} <= flags


@pytest.mark.parametrize("argv, message", [
    (["--srt.runahead_max_tokens", "0"],
     ("--srt.runahead_max_tokens must be >= --srt.runahead_samples x "
      "--srt.runahead_max_new_tokens (2 x 512 = 1024: one prompt's run-ahead) while "
      "--srt.runahead is on")),
    (["--srt.runahead_max_tokens", "1000", "--srt.runahead", "1"],
     "--srt.runahead_max_tokens must be >= --srt.runahead_samples x"),
    (["--srt.runahead_samples", "4", "--srt.runahead_max_requests", "3"],
     ("--srt.runahead_max_requests must be >= --srt.runahead_samples (4: one prompt's "
      "run-ahead) while --srt.runahead is on")),
])
def test_runahead_settings_that_cancel_each_other_are_refused(argv, message):
    """Run-ahead on, with a budget in which no prompt's requests ever fit: refused naming
    the flags, not a run-ahead that silently never starts (the budget grants whole
    prompts: runahead_samples requests of runahead_max_new_tokens each)."""
    with pytest.raises(SRTConfigError) as e:
        parse(*argv)
    assert str(e.value).startswith(message)
    cfg = SRTConfig(runahead_max_tokens=1024, runahead_max_requests=2)  # exactly one prompt
    assert cfg.runahead_budget().prompts_to_start(0, 0) == 1
    assert parse(*argv, "--srt.runahead", "0").runahead is False  # off: nothing to cancel
    assert parse(*argv, "--srt.enable", "0").enable is False


def test_runahead_objects():
    cfg = SRTConfig(runahead_max_tokens=100, runahead_max_new_tokens=50, runahead_samples=1)
    assert cfg.runahead_budget().grant(0, 0) == 2
    assert cfg.bubble_detector().threshold == cfg.runahead_threshold


def test_parse_bytes():
    assert parse_bytes("1024") == 1024 and parse_bytes("64k") == 65536
    assert parse_bytes("1.5G") == 3 << 29 and parse_bytes("512MiB") == 512 << 20


def test_every_parser_refuses_abbreviated_flags():
    """argparse's prefix matching took `--srt.snap 0` for `--srt.snapshot 0`: every parser the
    package and tools build passes allow_abbrev=False (train_ppo_ray's, built by OpenRLHF's
    code, sets it after: tests/openrlhf/test_openrlhf_cli.py)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    parsers = []
    for path in sorted([*root.glob("openrlhf_srt/**/*.py"), *root.glob("tools/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                    node.func, "id", None)) == "ArgumentParser":
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("allow_abbrev"), ast.Constant) and \
                    kw["allow_abbrev"].value is False
                parsers.append((f"{path.relative_to(root)}:{node.lineno}", ok))
    assert len(parsers) >= 8  # train_local, collect_traces, demo, compare_runs, the tools
    assert [where for where, ok in parsers if not ok] == []
