"""The OpenRLHF entry point: OpenRLHF's own parser and checks, --srt.* flags, version check,
combined worker extension, srt/* metric definitions."""

from __future__ import annotations

import ast
import json

import pytest

pytest.importorskip("openrlhf", reason="openrlhf 0.11.2 is installed by `make setup`")

BASE = ["--actor.model_name_or_path", "m", "--vllm.num_engines", "2",
        "--reward.remote_url", "reward.py", "--algo.advantage.estimator", "group_norm",
        "--rollout.n_samples_per_prompt", "4", "--data.prompt_dataset", "prompts.jsonl"]


def openrlhf_flags() -> set[str]:
    """Every option string OpenRLHF's __main__ block adds (read from its source)."""
    from openrlhf_srt.openrlhf.args import source_path

    flags = set()
    for node in ast.walk(ast.parse(source_path().read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant):
                flags.add(arg.value)
            elif isinstance(arg, ast.JoinedStr):  # f"--{prefix}.optim" for actor and critic
                for prefix in ("actor", "critic"):
                    flags.add("".join(v.value if isinstance(v, ast.Constant) else prefix
                                      for v in arg.values))
    return flags


def test_parser_has_every_openrlhf_flag_and_the_srt_ones():
    from openrlhf_srt.cli.train_ppo_ray import build_parser

    ours = {s for a in build_parser()._actions for s in a.option_strings}
    theirs = openrlhf_flags()
    assert len(theirs) > 150
    assert theirs <= ours
    assert {"--srt.enable", "--srt.max_draft_tokens", "--srt.runahead"} <= ours


def test_parse_applies_openrlhf_checks_and_srt_config():
    from openrlhf_srt.cli.train_ppo_ray import parse_args

    args, cfg, _ = parse_args([*BASE, "--srt.max_depth", "24"])
    assert args.actor.model_name_or_path == "m" and args.vllm.num_engines == 2
    assert args.critic.model_name_or_path is None  # OpenRLHF: no critic for group_norm
    assert args.reward.remote_url == ["reward.py"]  # OpenRLHF splits it
    assert args.rollout.vllm_generate_batch_size == args.rollout.batch_size
    assert cfg.max_depth == 24 and args.srt.max_depth == 24


@pytest.mark.parametrize("extra, needle", [
    (["--srt.max_draft_tokens", "0"], "--srt.max_draft_tokens must be an integer in [1, 128]"),
    (["--srt.budget", "best"], "--srt.budget"),
    (["--srt.bogus", "1"], "unrecognized arguments: --srt.bogus"),
    (["--train.async_enable"], "--srt.enable is not supported with --train.async_enable"),
    (["--rollout.n_samples_per_prompt", "1"], "group_norm requires n_samples_per_prompt > 1"),
])
def test_bad_arguments_exit_naming_the_flag(extra, needle, capsys):
    from openrlhf_srt.cli.train_ppo_ray import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args([*BASE, *extra])
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    ([], ("missing --actor.model_name_or_path (the policy model); "
          "--reward.model_name_or_path or --reward.remote_url or --train.agent_func_path "
          "(the reward); --data.prompt_dataset (the prompts)")),
    (["--actor.model_name_or_path", "m", "--data.prompt_dataset", "p"],
     ("missing --reward.model_name_or_path or --reward.remote_url or "
      "--train.agent_func_path (the reward)")),
    (["--actor.model_name_or_path", "m", "--train.agent_func_path", "a.py",
      "--algo.advantage.estimator", "gae"], "missing --data.prompt_dataset (the prompts)"),
])
def test_missing_flags_are_named(argv, needle, capsys):
    """No flags used to die in OpenRLHF's checks: AttributeError: 'NoneType' object has no
    attribute 'split'."""
    from openrlhf_srt.cli.train_ppo_ray import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("srt, extra, flag", [
    (True, ["--srt.snap", "0"], "--srt.snap"),  # would have been --srt.snapshot 0
    (True, ["--actor.model_name", "x"], "--actor.model_name"),  # --actor.model_name_or_path
    (False, ["--actor.model_name", "x"], "--actor.model_name"),  # the baseline twin's parser
])
def test_abbreviated_flags_are_refused(srt, extra, flag, capsys):
    from openrlhf_srt.cli.train_ppo_ray import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args([*BASE, *extra], srt=srt)
    assert e.value.code == 2
    assert f"unrecognized arguments: {flag}" in capsys.readouterr().err


def test_srt_disabled_allows_what_openrlhf_allows():
    from openrlhf_srt.cli.train_ppo_ray import parse_args

    args, cfg, _ = parse_args([*BASE, "--srt.enable", "0", "--train.async_enable"])
    assert not cfg.enable and args.train.async_enable


def test_print_args(capsys):
    from openrlhf_srt.cli.train_ppo_ray import main

    assert main([*BASE, "--srt.print_args"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["srt"]["max_draft_tokens"] == 8 and out["vllm"]["num_engines"] == 2


def test_structure_errors_are_clear(monkeypatch, tmp_path):
    from openrlhf_srt.openrlhf import args as a

    fake = tmp_path / "train_ppo_ray.py"
    fake.write_text("import argparse\nparser = argparse.ArgumentParser()\n")
    monkeypatch.setattr(a, "source_path", lambda: fake)  # test-only: a changed OpenRLHF
    a._blocks.cache_clear()
    try:
        with pytest.raises(a.OpenRLHFArgsError, match="no `if __name__"):
            a.build_parser()
    finally:
        a._blocks.cache_clear()


def test_version_check():
    from openrlhf_srt.openrlhf import versions as v

    # the vLLM series the lanes ran: 0.29 (OpenRLHF's own pin) and 0.32 (make test)
    assert v.problems("0.11.2", "0.32.0", custom_class=True) == []
    assert v.problems("0.11.2", "0.29.0", custom_class=True) == []
    assert v.problems("0.11.2", "0.29.1") == []
    assert "OpenRLHF 0.10.0 is not supported" in v.problems("0.10.0", "0.32.0")[0]
    assert "OpenRLHF 0.12.1 is not supported" in v.problems("0.12.1", "0.32.0")[0]
    for untested in ("0.26.0", "0.30.1", "0.33.0"):
        (msg,) = v.problems("0.11.2", untested)
        assert msg.startswith(f"vLLM {untested} is not supported") and "0.29.x, 0.32.x" in msg
    assert "no 'custom_class'" in v.problems("0.11.2", "0.32.0", custom_class=False)[0]
    assert "not installed" in v.problems(None, None)[0]
    v.check_versions()  # this environment is supported


def test_version_check_raises_and_can_be_skipped(monkeypatch):
    from openrlhf_srt.openrlhf import versions as v

    monkeypatch.setattr(v, "installed_version", lambda d: "0.9.0")  # test-only stand-in
    monkeypatch.delenv(v.SKIP_ENV, raising=False)
    with pytest.raises(v.UnsupportedVersionError, match="OpenRLHF 0.9.0 is not supported"):
        v.check_versions()
    monkeypatch.setenv(v.SKIP_ENV, "1")
    v.check_versions()


def test_combined_worker_extension():
    from openrlhf.trainer.ray.vllm_worker_wrap import WorkerWrap

    from openrlhf_srt.openrlhf.worker import EXTENSION_PATH, SRTWorkerWrap
    from openrlhf_srt.vllm.worker_extension import SRTWorkerExtension

    theirs = {k for k in vars(WorkerWrap) if not k.startswith("__")}
    ours = {k for k in vars(SRTWorkerExtension) if not k.startswith("__")}
    assert not theirs & ours
    for name in theirs | ours:
        assert callable(getattr(SRTWorkerWrap, name))
    assert EXTENSION_PATH == f"{SRTWorkerWrap.__module__}.{SRTWorkerWrap.__qualname__}"


def test_step_metrics_definitions():
    from openrlhf_srt.openrlhf.step_metrics import step_metrics

    stats = [{"rollout_tokens": 900, "runahead_tokens": 100, "accepted_tokens": 500,
              "verified_draft_tokens": 1000, "draft_tokens": 1100,
              "cache": {"bytes": 10, "prompts": 2}},
             {"rollout_tokens": 0, "accepted_tokens": 0, "draft_tokens": 40,
              "cache": {"bytes": 5, "prompts": 1}}]
    m = step_metrics(stats, bubble_seconds=3.5, verify_cost=0.1, home_hits=3, spills=1)
    assert m["srt/accept_len"] == pytest.approx(1000 / 500)
    assert m["srt/acceptance_rate"] == pytest.approx(0.5)
    assert m["srt/est_speedup"] == pytest.approx(1000 / (500 + 100))
    assert (m["srt/draft_tokens"], m["srt/runahead_tokens"], m["srt/bubble_seconds"]) == (
        1000, 100, 3.5)
    assert m["srt/proposed_draft_tokens"] == 1140
    assert (m["srt/cache_bytes"], m["srt/cache_prompts"]) == (15, 3)
    assert m["srt/route_home_share"] == 0.75
    assert step_metrics([])["srt/accept_len"] == 1.0


def test_plain_class_of_ray_actor():
    ray = pytest.importorskip("ray", reason="ray==2.55.0 is installed by `make setup`")
    from openrlhf_srt.openrlhf.engine_group import plain_class

    @ray.remote
    class A:
        def f(self):
            return 1

    assert plain_class(A).__name__ == "A" and plain_class(A)().f() == 1


def test_trace_dir_is_made_absolute_and_refused_when_unwritable(tmp_path, monkeypatch, capsys):
    from openrlhf_srt.cli.train_ppo_ray import parse_args

    monkeypatch.chdir(tmp_path)
    assert parse_args(BASE)[1].trace_dir == ""  # off by default
    _, cfg, _ = parse_args([*BASE, "--srt.trace_dir", "runs/traces"])
    assert cfg.trace_dir == str(tmp_path / "runs" / "traces")
    assert (tmp_path / "runs" / "traces").is_dir()
    (tmp_path / "file").write_text("x")
    for extra, needle in ((["--srt.trace_dir", "file/traces"],
                           "--srt.trace_dir file/traces: trace files cannot be written there"),
                          (["--srt.trace_dir", "t", "--srt.enable", "0"],
                           "--srt.trace_dir needs --srt.enable")):
        with pytest.raises(SystemExit):
            parse_args([*BASE, *extra])
        assert needle in capsys.readouterr().err


def test_trainer_mixin_tells_the_generator_the_weights_version():
    """Traces record the weights version that sampled each step: the step count after each
    weight push, the checkpoint's step on resume."""
    from types import SimpleNamespace

    from openrlhf_srt.openrlhf.trainer_mixin import SRTTrainerMixin

    class StandInBase:  # OpenRLHF's PPOTrainer.train_step pushes the weights, returns step+1
        def train_step(self, rollout_samples, global_step):
            return {}, global_step + 1

        def init_checkpoint_states(self):
            return {"global_step": 7}

    class Trainer(SRTTrainerMixin, StandInBase):
        pass

    trainer = Trainer()
    trainer.srt = SimpleNamespace(snapshot=False)
    trainer.samples_generator = SimpleNamespace(pop_step_metrics=dict, policy_version=0,
                                                restore_lookahead=lambda state: None)
    assert trainer.train_step([], 0)[1] == 1
    assert trainer.samples_generator.policy_version == 1
    trainer.init_checkpoint_states()
    assert trainer.samples_generator.policy_version == 7
    assert trainer.samples_generator.train_step == 7
