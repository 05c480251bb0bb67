"""The local trainer end to end on the embedded model (marked `engine`): run-ahead on a
crafted long tail through the step-by-step driver, and checkpoint resume (step, prompts,
look-ahead window, weights, optimizer, tree cache)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def srt_priority_engine(embedded_model_path, srt_test_settings):
    """SRT engine with priority scheduling, as the local trainer starts it for run-ahead."""
    from openrlhf_srt.vllm.srt_engine import start_srt_engine

    llm = start_srt_engine(embedded_model_path,
                           srt={"min_prob": 0.1, "max_draft_tokens": 4, **srt_test_settings},
                           max_model_len=1024, seed=0, scheduling_policy="priority",
                           max_num_seqs=32)
    yield llm
    from openrlhf_srt.vllm.engine import stop_engine

    stop_engine(llm)


def test_long_tail_starts_runahead_and_returns_exactly_the_rollouts(srt_priority_engine):
    from vllm import SamplingParams

    from openrlhf_srt.local.local_runahead import LocalRunahead
    from openrlhf_srt.local.rollout import drive
    from openrlhf_srt.runahead import LookaheadPrompts
    from openrlhf_srt.srt_config import SRTConfig
    from openrlhf_srt.vllm.engine_client import SRTEngineHandle

    llm = srt_priority_engine
    prompt = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 1, 4093, 198]
    ids = {k: prompt + [28 + k, 1, 520, 9531, 198] for k in range(8)}  # 8 distinct prompts
    # a crafted long tail: six 4-token samples and one of 160 tokens
    short = SamplingParams(temperature=0.6, max_tokens=4, ignore_eos=True)
    long = SamplingParams(temperature=0.6, max_tokens=160, ignore_eos=True)
    requests = [(ids[0], short)] * 6 + [(ids[1], long)]
    srt = SRTConfig(runahead_threshold=0.5, runahead_min_seconds=0.3, runahead_min_samples=2,
                    runahead_poll_seconds=0.05, runahead_prompts=4, runahead_samples=2,
                    runahead_max_new_tokens=64, runahead_max_requests=4)
    lookahead = LookaheadPrompts([[0, 1], [2, 3], [4, 5], [6, 7]], unpack=list)
    ra = LocalRunahead(srt, lookahead, ids.__getitem__)
    ra.set_step([0, 1], SamplingParams(temperature=0.6))
    SRTEngineHandle(llm).stats(reset=True)
    driven = drive(llm, requests, ra)
    stats = SRTEngineHandle(llm).stats(reset=True)

    assert [len(o.token_ids) for o in driven.outputs] == [4] * 6 + [160]
    assert not llm.llm_engine.has_unfinished_requests()  # run-ahead aborted at the end
    s = driven.runahead
    print("run-ahead:", s, "proposer run-ahead requests:", stats["runahead_requests"])
    assert s["bubble_seconds"] >= 0.3
    # the step's own prompts (0, 1) are skipped; upcoming ones in look-ahead order
    assert ra.history == [[2, 3]]  # 4 requests in flight at most: 2 prompts x 2 samples
    assert s["prompts"] == 2 and s["requests"] == 4
    assert 0 < s["tokens"] <= 4 * 64
    assert 1 <= stats["runahead_requests"] <= 4  # the drafter tagged them run-ahead
    assert lookahead.consumed == 0 and lookahead.next_batch() == [0, 1]  # peeked, not consumed


def _tiny_config(run_dir, srt_settings, **kw):
    from openrlhf_srt.local.train_config import TrainConfig
    from openrlhf_srt.srt_config import SRTConfig

    srt = SRTConfig(**srt_settings, max_draft_tokens=4, runahead_threshold=1.0, runahead_min_seconds=0.0,
                    runahead_min_samples=1, runahead_poll_seconds=0.01, runahead_prompts=2,
                    runahead_max_new_tokens=16, runahead_max_requests=4,
                    runahead_max_slowdown=float("inf"))  # run ahead despite the CPU's cost
    return TrainConfig(run_dir=run_dir, prompts="builtin:6", steps=3, prompts_per_step=2,
                       samples_per_prompt=2, max_new_tokens=24, micro_batch_size=4,
                       lr=1e-4, save_every=1, wandb=False, tensorboard=False, srt=srt, **kw)


def test_resume_continues_at_the_right_step_with_prompts_weights_and_cache(tmp_path, cpu_bf16,
                                                                           srt_test_settings):
    """Run as both kinds of CPU (cpu_bf16): the engine runs bfloat16 or float32 and the
    trainer autocasts or not, so the weight push and the restore are tested in both."""
    import torch

    from openrlhf_srt.local.trainer import LocalTrainer, prompt_indices
    from openrlhf_srt.run_logger import read_metrics

    cfg = _tiny_config(tmp_path / "run", srt_test_settings)
    first = LocalTrainer(cfg)
    try:
        engine_dtype = first.llm.llm_engine.vllm_config.model_config.dtype
        assert engine_dtype == (torch.bfloat16 if cpu_bf16 else torch.float32)
        first.run(stop_at=2)  # interrupted after step 1 (checkpoint at next_step 2)
        cache_before = first._cache_stats()
        weights = {k: v.clone() for k, v in first.model.state_dict().items()}
        opt_steps = {int(s["step"]) for s in first.optimizer.state_dict()["state"].values()}
    finally:
        first.close()
    state = json.loads((cfg.run_dir / "checkpoints/latest/state.json").read_text())
    assert state["next_step"] == 2
    assert state["lookahead"]["consumed"] == 2
    # run-ahead peeked at step 2's prompts during step 1: in the window, not consumed
    assert state["lookahead"]["buffer"] == [prompt_indices(cfg, 6, 2)]
    assert cache_before["prompts"] >= 4 and cache_before["sequences"] >= 8

    resumed = LocalTrainer(_tiny_config(tmp_path / "run", srt_test_settings, resume=True))
    try:
        assert resumed.start_step == 2
        for k, v in resumed.model.state_dict().items():
            torch.testing.assert_close(v, weights[k], rtol=0, atol=0)
        assert {int(s["step"]) for s in resumed.optimizer.state_dict()["state"].values()} \
            == opt_steps == {2}
        restored = resumed.restored_cache
        for key in ("prompts", "sequences", "tokens", "nodes"):
            assert restored[key] == cache_before[key], key
        resumed.run()
        cache_after = resumed._cache_stats()
    finally:
        resumed.close()
    assert set(resumed.step_prompts) == {2}
    assert resumed.step_prompts[2] == prompt_indices(cfg, 6, 2)
    trained = first.step_prompts[0] + first.step_prompts[1] + resumed.step_prompts[2]
    assert sorted(trained) == list(range(6))  # one pass: every prompt once, none repeated
    assert cache_after["sequences"] >= cache_before["sequences"] + 4
    rows = read_metrics(cfg.run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all(r["rollout/samples"] == 4 and 0 < r["rollout/tokens"] <= 4 * 24 for r in rows)
