"""The local trainer's flags (`local/train_config.py`): every number finite and in range,
errors naming the flag, no abbreviated flags, a missing local model folder refused."""

from __future__ import annotations

import pytest

from openrlhf_srt.local.train_config import MAX_MODEL_LEN, TrainConfig, parse_config


def error_of(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        parse_config(argv)
    assert e.value.code == 2  # argparse's usage error, not a crash
    return capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--temperature", "nan", "--temperature must be a finite number > 0, got nan"),
    ("--temperature", "inf", "--temperature must be a finite number > 0, got inf"),
    ("--temperature", "0", "--temperature must be a finite number > 0, got 0.0"),
    ("--lr", "inf", "--lr must be a finite number > 0, got inf"),
    ("--lr", "nan", "--lr must be a finite number > 0, got nan"),
    ("--top_p", "nan", "--top_p must be a finite number in (0, 1], got nan"),
    ("--clip_eps_low", "nan", "--clip_eps_low must be a finite number in [0, 1), got nan"),
    ("--clip_eps_high", "nan", "--clip_eps_high must be a finite number >= 0, got nan"),
    ("--clip_eps_high", "inf", "--clip_eps_high must be a finite number >= 0, got inf"),
    ("--clip_eps_high", "-0.1", "--clip_eps_high must be a finite number >= 0, got -0.1"),
    ("--overlong_penalty_factor", "nan",
     "--overlong_penalty_factor must be a finite number >= 0, got nan"),
    ("--overlong_penalty_factor", "-inf",
     "--overlong_penalty_factor must be a finite number >= 0, got -inf"),
    ("--seed", "-1", "--seed must be an integer in [0, 4294967295], got -1"),
    ("--seed", str(2**32), "--seed must be an integer in [0, 4294967295], got 4294967296"),
    ("--max_new_tokens", str(MAX_MODEL_LEN),
     f"--max_new_tokens must be an integer in [1, {MAX_MODEL_LEN - 1}]"),
    ("--steps", "0", "--steps must be an integer >= 1, got 0"),
    ("--save_every", "-1", "--save_every must be an integer >= 0, got -1"),
    ("--samples_per_prompt", "1", "--samples_per_prompt must be an integer >= 2, got 1"),
])
def test_numbers_must_be_finite_and_in_range(flag, value, message, capsys):
    assert message in error_of([f"{flag}={value}"], capsys)


def test_numbers_set_in_code_are_checked_too():
    with pytest.raises(ValueError, match="--temperature must be a finite number > 0, got nan"):
        TrainConfig(temperature=float("nan")).validate()
    with pytest.raises(ValueError, match="--steps must be an integer >= 1, got 2.5"):
        TrainConfig(steps=2.5).validate()
    with pytest.raises(ValueError, match="--wandb must be true or false, got 'yes'"):
        TrainConfig(wandb="yes").validate()


def test_good_values_pass():
    cfg = parse_config(["--temperature", "1.5", "--lr", "1e-5", "--clip_eps_high", "0.3",
                        "--seed", str(2**32 - 1), "--max_new_tokens", str(MAX_MODEL_LEN - 1)])
    assert (cfg.temperature, cfg.eps_high, cfg.seed) == (1.5, 0.3, 2**32 - 1)


@pytest.mark.parametrize("argv, meant", [
    (["--srt.snap", "0"], "--srt.snap"),  # would have been --srt.snapshot 0
    (["--temp", "1.0"], "--temp"),  # would have been --temperature 1.0
    (["--srt.runahead_max_tok", "0"], "--srt.runahead_max_tok"),
])
def test_abbreviated_flags_are_refused(argv, meant, capsys):
    assert f"unrecognized arguments: {meant}" in error_of(argv, capsys)


@pytest.mark.parametrize("spec", ["./no_such_model", "runs/no_such_folder/model",
                                  "~/no_such_model"])
def test_missing_local_model_folder_fails_at_start(spec, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    err = error_of(["--model", spec], capsys)
    assert "--model" in err and "does not exist" in err and spec in err


@pytest.mark.parametrize("words, new_tokens", [(2100, 192), (1900, 192)])
def test_a_prompt_too_long_for_the_engine_fails_before_it_starts(words, new_tokens, tmp_path,
                                                                monkeypatch,
                                                                embedded_model_path):
    """Checked at start, after tokenisation, naming the file, the record and the lengths:
    a prompt over max_model_len (vLLM refused it mid-run, killing the step) and one that
    fits alone but not with --max_new_tokens (its responses would be cut short)."""
    import json

    from openrlhf_srt.local.trainer import LocalTrainer

    path = tmp_path / "p.jsonl"
    rows = [{"input": "What is 1+1?", "label": "2"}] * 3 + [{"input": "word " * words,
                                                             "label": "1"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def engine_started(self, weights):
        raise AssertionError("the engine started before the prompts were checked")

    monkeypatch.setattr(LocalTrainer, "_start_engine", engine_started)  # test-only: no engine
    cfg = TrainConfig(run_dir=tmp_path / "run", prompts=str(path), steps=2, prompts_per_step=2,
                      samples_per_prompt=2, max_new_tokens=new_tokens, wandb=False,
                      tensorboard=False)
    with pytest.raises(ValueError) as e:
        LocalTrainer(cfg)
    msg = str(e.value)
    assert msg.startswith(f"--prompts {path}: record 3 (id p.jsonl:3): the prompt is "), msg
    n = int(msg.split("the prompt is ")[1].split()[0])
    assert n >= words and n + new_tokens > MAX_MODEL_LEN
    assert msg.endswith(f"with {new_tokens} new tokens that is {n + new_tokens}, over the "
                        f"engine's max_model_len {MAX_MODEL_LEN}")


def test_trace_dir_off_by_default_created_at_start_and_refused_when_unwritable(tmp_path,
                                                                              capsys):
    assert parse_config([]).trace_dir is None
    cfg = parse_config(["--trace_dir", str(tmp_path / "run" / "traces")])
    assert cfg.trace_dir == tmp_path / "run" / "traces" and cfg.trace_dir.is_dir()
    assert TrainConfig.from_dict(cfg.to_dict()).trace_dir == cfg.trace_dir
    (tmp_path / "file").write_text("x")
    err = error_of(["--trace_dir", str(tmp_path / "file" / "traces")], capsys)
    assert "--trace_dir" in err and "cannot be written" in err
    # the OpenRLHF entry point's flag is not the local trainer's
    assert "unrecognized arguments: --srt.trace_dir" in error_of(
        ["--srt.trace_dir", str(tmp_path)], capsys)
