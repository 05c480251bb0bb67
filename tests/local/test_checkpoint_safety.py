"""The local trainer's checkpoints through faults (docs/reliability.md, items 4-5): checked
before the first step, a failed save keeps the last good one, an interrupted save is
finished at the next start, a resume that would change the prompt order is refused. These
are the trainer's own rules: no engine is started and the model is a tiny random one
(`no_engine`); tests/local/test_faults.py kills real runs."""

from __future__ import annotations

import errno
import json
from collections import namedtuple

import pytest
import torch

from openrlhf_srt.local import trainer as trainer_mod
from openrlhf_srt.local.train_config import TrainConfig
from openrlhf_srt.local.trainer import (
    CheckpointError,
    LocalTrainer,
    ResumeError,
    expected_checkpoint_bytes,
)
from openrlhf_srt.srt_config import SRTConfig


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, embedded_model_path) -> str:
    """A 2-layer random Llama with the embedded model's tokenizer: saves in milliseconds."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(embedded_model_path)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16,
                                         intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1))
    path = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture
def no_engine(monkeypatch, tiny_model):
    """LocalTrainer without a vLLM engine (the baseline kind: no SRT handle, no run-ahead),
    on the tiny model."""
    def refuse(self, weights):
        return None

    monkeypatch.setattr(LocalTrainer, "_start_engine", refuse)
    monkeypatch.setattr(trainer_mod, "resolve_model", lambda model: tiny_model)


def _cfg(run_dir, **kw) -> TrainConfig:
    base = {"run_dir": run_dir, "prompts": "builtin:6", "steps": 3, "prompts_per_step": 2,
            "samples_per_prompt": 2, "max_new_tokens": 8, "save_every": 1, "wandb": False,
            "tensorboard": False, "srt": SRTConfig(enable=False)}
    base.update(kw)
    return TrainConfig(**base)


def _trainer(run_dir, said=None, **kw) -> LocalTrainer:
    return LocalTrainer(_cfg(run_dir, **kw), log_fn=(said.append if said is not None else
                                                     lambda msg: None))


def _state(run_dir) -> dict:
    return json.loads((run_dir / "checkpoints/latest/state.json").read_text())


def _save_after_first_step(t: LocalTrainer) -> None:
    """The checkpoint a run writes after step 0 (its prompts consumed, nothing trained)."""
    t.step_prompts[0] = next(t.lookahead)
    t.save(1)


def _leftovers(run_dir) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name != "latest")


def test_an_unwritable_checkpoint_folder_stops_the_run_before_the_engine_starts(tmp_path,
                                                                                 monkeypatch,
                                                                                 no_engine):
    def engine_started(self, weights):
        raise AssertionError("the engine started before the checkpoint folder was checked")

    monkeypatch.setattr(LocalTrainer, "_start_engine", engine_started)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the run folder's parent should be")
    with pytest.raises(CheckpointError, match=r"cannot be written to .*not_a_folder/run/checkpoints"):
        _trainer(blocker / "run")


def test_too_little_free_space_stops_the_run_naming_the_folder_and_sizes(tmp_path, monkeypatch,
                                                                         no_engine):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(trainer_mod.shutil, "disk_usage", lambda path: usage(1 << 40, 0, 1 << 20))
    with pytest.raises(CheckpointError, match=r"checkpoints need \d+\.\d+ GiB free in "
                                              r".*run/checkpoints .*only 0\.00 GiB are free"):
        _trainer(tmp_path / "run")


def test_expected_checkpoint_size_is_weights_optimizer_and_cache_budget(tmp_path, no_engine):
    t = _trainer(tmp_path / "run")
    params = sum(p.numel() * 4 for p in t.model.parameters())  # float32
    assert expected_checkpoint_bytes(t.model, t.cfg) == 3 * params  # + AdamW's two moments
    srt = SRTConfig(cache_bytes=1 << 28)
    assert expected_checkpoint_bytes(t.model, _cfg(tmp_path, srt=srt)) == 3 * params + (1 << 28)
    _save_after_first_step(t)  # the estimate bounds what a save writes (no cache snapshot)
    written = sum(f.stat().st_size for f in (tmp_path / "run/checkpoints/latest").rglob("*")
                  if f.is_file() and f.name in ("model.safetensors", "optimizer.pt"))
    assert written <= expected_checkpoint_bytes(t.model, t.cfg)


def _failing_after(n_ok: int, real=torch.save):
    calls = {"n": 0}

    def save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n_ok:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    return save


def test_a_failed_save_keeps_the_last_good_checkpoint_and_leaves_no_tmp(tmp_path, monkeypatch,
                                                                        no_engine):
    run_dir = tmp_path / "run"
    t = _trainer(run_dir)
    _save_after_first_step(t)
    monkeypatch.setattr(torch, "save", _failing_after(0))
    with pytest.raises(CheckpointError, match=r"before step 2 could not be written .*No space "
                                              r"left.* still holds the checkpoint before step 1"):
        t.save(2)
    assert _state(run_dir)["next_step"] == 1 and _leftovers(run_dir) == []
    assert (run_dir / "checkpoints/latest/optimizer.pt").is_file()


def test_a_save_that_fails_in_its_swap_puts_the_last_good_checkpoint_back(tmp_path, monkeypatch,
                                                                         no_engine):
    run_dir = tmp_path / "run"
    t = _trainer(run_dir)
    _save_after_first_step(t)
    real_rename = type(run_dir).rename

    def rename(self, target):
        if self.name == "latest.tmp":
            raise OSError(errno.EIO, "Input/output error")
        return real_rename(self, target)

    monkeypatch.setattr(type(run_dir), "rename", rename)
    with pytest.raises(CheckpointError, match="still holds the checkpoint before step 1"):
        t.save(2)
    assert _state(run_dir)["next_step"] == 1 and _leftovers(run_dir) == []


def _fake_step(self, step):
    self.step_prompts[step] = next(self.lookahead)
    return {"rollout/reward": 0.0, "rollout/response_length": 1.0, "timing/generation": 0.0,
            "timing/train": 0.0, "timing/weight_sync": 0.0}


def test_a_run_goes_on_past_a_failed_save_and_fails_when_the_last_one_fails(tmp_path,
                                                                          monkeypatch,
                                                                          no_engine):
    monkeypatch.setattr(LocalTrainer, "step", _fake_step)
    said: list[str] = []
    run_dir = tmp_path / "run"
    t = _trainer(run_dir, said)
    saves = {"n": 0}
    real_save = LocalTrainer.save

    def second_save_fails(self, next_step):
        saves["n"] += 1
        if saves["n"] == 2:
            monkeypatch.setattr(torch, "save", _failing_after(0))
        else:
            monkeypatch.setattr(torch, "save", _failing_after(10))
        return real_save(self, next_step)

    monkeypatch.setattr(LocalTrainer, "save", second_save_fails)
    assert [r["step"] for r in t.run()] == [0, 1, 2]
    warnings = [m for m in said if m.startswith("warning:")]
    assert len(warnings) == 1 and "before step 2 could not be written" in warnings[0]
    assert "still holds the checkpoint before step 1" in warnings[0]
    assert _state(run_dir)["next_step"] == 3 and _leftovers(run_dir) == []

    monkeypatch.setattr(LocalTrainer, "save", real_save)
    monkeypatch.setattr(torch, "save", _failing_after(0))
    last = _trainer(run_dir, steps=4, resume=True)
    with pytest.raises(CheckpointError, match="before step 4 could not be written"):
        last.run()
    assert _state(run_dir)["next_step"] == 3 and _leftovers(run_dir) == []


@pytest.mark.parametrize("killed_in", ["writing", "swap"])
def test_a_save_killed_part_way_is_finished_at_the_next_start(tmp_path, no_engine, killed_in):
    """A SIGKILL mid-save leaves `latest.tmp` (incomplete) and, between the two renames,
    `latest.old` without `latest`: the next start drops the first and puts back the second."""
    run_dir = tmp_path / "run"
    t = _trainer(run_dir)
    _save_after_first_step(t)
    ckpt = run_dir / "checkpoints"
    (ckpt / "latest.tmp" / "model").mkdir(parents=True)  # a save that got this far
    if killed_in == "swap":
        (ckpt / "latest").rename(ckpt / "latest.old")
    said: list[str] = []
    resumed = _trainer(run_dir, said, resume=True)
    assert resumed.start_step == 1 and _leftovers(run_dir) == []
    assert any("latest.tmp" in m for m in said)


@pytest.mark.parametrize("flag, value, saved", [("seed", 1, 0), ("prompts_per_step", 3, 2),
                                                ("samples_per_prompt", 4, 2),
                                                ("prompts", "builtin:8", None)])
def test_a_resume_that_would_change_the_prompt_order_is_refused(tmp_path, no_engine, flag,
                                                                value, saved):
    run_dir = tmp_path / "run"
    _save_after_first_step(_trainer(run_dir))
    with pytest.raises(ResumeError) as e:
        _trainer(run_dir, resume=True, **{flag: value})
    msg = str(e.value)
    assert msg.startswith(f"--{flag} must be") and f"got {value!r}" in msg or \
        (flag == "prompts" and "got 8 prompts from 'builtin:8'" in msg)
    if saved is not None:
        assert f"must be {saved!r}" in msg
    else:
        assert "6 prompts from 'builtin:6'" in msg
    assert _trainer(run_dir, resume=True).start_step == 1  # the same settings resume
