"""The local trainer: flags, prompt order across resume, weight sync into the running engine."""

from __future__ import annotations

import pytest

from openrlhf_srt.local.train_config import TrainConfig, parse_config
from openrlhf_srt.local.trainer import prompt_indices


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--algo", "ppo"], "--algo"),
        (["--samples_per_prompt", "1"], "--samples_per_prompt"),
        (["--temperature", "0"], "--temperature"),
        (["--overlong_buffer", "999"], "--overlong_buffer"),
        (["--srt.enable", "maybe"], "--srt.enable"),
        (["--srt.max_draft_tokens", "200"], "--srt.max_draft_tokens"),
        (["--srt.runahead_threshold", "0"], "--srt.runahead_threshold"),
        (["--srt.window_steps", "2"], "--srt.window_steps"),
    ],
)
def test_bad_flags_fail_at_start_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit):
        parse_config(argv)
    assert flag in capsys.readouterr().err


def test_algo_defaults():
    grpo, dapo = parse_config([]), parse_config(["--algo", "dapo", "--max_new_tokens", "200"])
    assert (grpo.eps_high, grpo.overlong, grpo.dynamic_sampling) == (0.2, None, False)
    assert (dapo.eps_high, dapo.overlong, dapo.dynamic_sampling) == (0.28, 50, True)
    assert parse_config(["--srt.enable", "false"]).srt.enable is False
    cfg = parse_config(["--srt.max_draft_tokens", "4", "--srt.runahead", "0"])
    assert (cfg.srt.max_draft_tokens, cfg.srt.runahead) == (4, False)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # what a checkpoint stores


def test_prompt_order_covers_the_pool_without_repeats_per_pass():
    cfg = TrainConfig(prompts_per_step=4, seed=3)
    pool = 10  # two full steps per pass, 2 prompts left over each pass
    first_pass = prompt_indices(cfg, pool, 0) + prompt_indices(cfg, pool, 1)
    assert len(set(first_pass)) == 8
    assert prompt_indices(cfg, pool, 1) == prompt_indices(cfg, pool, 1)  # resume-stable
    assert prompt_indices(cfg, pool, 2) != prompt_indices(cfg, pool, 0)  # new pass, new order
    assert prompt_indices(TrainConfig(prompts_per_step=4, seed=4), pool, 0) != prompt_indices(cfg, pool, 0)


def _tiny_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return cfg, LlamaForCausalLM(cfg)


# The identity below is exact in real arithmetic. In float32 the two updates agree to
# rounding (1e-5 of the update); under bf16 autocast (CPUs with native bf16) each forward
# pass rounds to 8 significant bits and the micro-batches differ in padding width, so they
# agree to bf16 rounding only (measured: 0.3% of the update). The wrong denominator changes
# the gradient norm by 40%, far outside both.
UPDATE_REL_TOL = {False: 1e-5, True: 2e-2}  # keyed by cpu_bf16


def test_skipping_zero_advantage_samples_gives_the_same_update(cpu_bf16):
    """Samples with advantage 0 contribute exactly 0 on-policy; skipping them but keeping
    their tokens in the denominator (total_tokens) must give the full batch's gradient.
    Runs as both kinds of CPU (float32, bf16 autocast) with the tolerance of each."""
    import torch
    from transformers import LlamaForCausalLM

    from openrlhf_srt.local.policy_training import train_step

    cfg, base = _tiny_llama()
    prompts = [[1, 5, 7], [1, 9], [1, 5, 7], [1, 9, 3, 4]]
    responses = [[10, 11, 12], [13, 14], [15, 16, 17, 18], [19]]
    adv = torch.tensor([1.0, 0.0, -1.0, 0.0])

    def update(idx, total):
        model = LlamaForCausalLM(cfg)
        model.load_state_dict(base.state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=1.0)  # weights move by the gradient
        out = train_step(model, opt, [prompts[i] for i in idx], [responses[i] for i in idx],
                         adv[idx], 0, micro_batch_size=2, clip_eps_low=0.2, clip_eps_high=0.2,
                         total_tokens=total)
        return out, {k: v.detach().clone() for k, v in model.state_dict().items()}

    tol = UPDATE_REL_TOL[cpu_bf16]
    full, w_full = update([0, 1, 2, 3], None)
    skip, w_skip = update([0, 2], sum(map(len, responses)))
    wrong, _ = update([0, 2], None)  # without the denominator: a different update
    # the loss is computed in float32 from float32 log-probs of the same tokens
    assert full["train/policy_loss"] == pytest.approx(skip["train/policy_loss"], abs=1e-7)
    assert full["train/grad_norm"] == pytest.approx(skip["train/grad_norm"], rel=tol)
    assert wrong["train/grad_norm"] != pytest.approx(full["train/grad_norm"], rel=0.2)
    moved = 0
    for k, w in base.state_dict().items():
        step_full, step_skip = w_full[k] - w, w_skip[k] - w
        if float(step_full.norm()) > 0:
            moved += 1
            rel = float((step_full - step_skip).norm() / step_full.norm())
            assert rel <= tol, (k, rel)
        else:
            assert float(step_skip.norm()) == 0, k
    assert moved > 10
    # nothing to train on: zero gradient, no weight moves
    none, w_none = update([], 5)
    assert none["train/grad_norm"] == 0.0
    for k in w_none:
        torch.testing.assert_close(w_none[k], base.state_dict()[k])


def test_trainer_logprobs_follow_the_bf16_switch(cpu_bf16):
    """The trainer autocasts to bf16 exactly when the engines run bf16 (one switch)."""
    import torch

    from openrlhf_srt.local.policy_training import response_logprobs

    _, model = _tiny_llama()
    prompts, responses = [[1, 5, 7], [1, 9]], [[10, 11, 12], [13, 14]]
    with torch.no_grad():
        logp, mask = response_logprobs(model, prompts, responses, 0)
        fp32, _ = response_logprobs(model, prompts, responses, 0, autocast=False)
        bf16, _ = response_logprobs(model, prompts, responses, 0, autocast=True)
    assert logp.dtype == torch.float32
    assert mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    torch.testing.assert_close(logp, bf16 if cpu_bf16 else fp32, rtol=0, atol=0)
    gap = float(((bf16 - fp32) * mask).abs().max())
    assert 0 < gap < 0.1  # bf16 rounds (8 significant bits), and only that


def test_cpu_precision_line_says_what_runs_and_why(cpu_bf16):
    from openrlhf_srt.local.policy_training import cpu_precision

    line = cpu_precision()
    if cpu_bf16:
        assert line == ("engines bfloat16, training float32 weights, bf16 autocast "
                        "(OPENRLHF_SRT_CPU_BF16=1)")
    else:
        assert line == "engines float32, training float32 (OPENRLHF_SRT_CPU_BF16=0)"
    assert cpu_precision("float32").startswith("engines float32, ")


def test_runahead_planner_fires_in_a_bubble_within_budget():
    from openrlhf_srt.runahead import BubbleDetector, RunaheadBudget, RunaheadPlanner

    plan = RunaheadPlanner(BubbleDetector(threshold=0.5, min_seconds=1.0, min_samples=2),
                           RunaheadBudget(max_tokens=1000, max_requests=8, max_new_tokens=100,
                                          samples_per_prompt=2))
    plan.begin_step(8, now=0.0, running=["a"])
    up = ["a", "b", "c", "d", "e", "f", "g"]
    assert plan.poll(8, 0.5, up, used_tokens=0, in_flight=0) == []  # busy
    assert plan.poll(3, 1.0, up, used_tokens=0, in_flight=0) == []  # below, not for 1 s yet
    # confirmed: 8 requests allowed in flight -> 4 prompts; "a" is this step's own prompt
    assert plan.poll(3, 2.0, up, used_tokens=0, in_flight=0) == ["b", "c", "d", "e"]
    # 8 in flight reserve 800 tokens; 150 used: one more request fits by tokens, 0 by count
    assert plan.poll(2, 2.5, up, used_tokens=150, in_flight=8) == []
    assert plan.poll(2, 3.0, up, used_tokens=300, in_flight=2) == ["f", "g"]
    assert plan.prompts == 6
    assert plan.end_step(4.0) == pytest.approx(3.0)


@pytest.mark.engine
def test_weight_push_changes_engine_output_to_the_new_policy(float32_engine, embedded_model_path,
                                                             greedy_reference):
    import torch
    from transformers import AutoModelForCausalLM
    from vllm import SamplingParams

    from openrlhf_srt.vllm.weight_sync import push_weights

    prompt = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 1, 4093, 198, 6004, 2, 198, 1, 520, 9531, 198]
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)

    def engine_greedy():
        out = float32_engine.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)
        return list(out[0].outputs[0].token_ids)

    model = AutoModelForCausalLM.from_pretrained(embedded_model_path, dtype=torch.float32)
    before = engine_greedy()
    assert before == greedy_reference(model, prompt, 16)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "mlp" in name:
                p.add_(torch.randn_like(p) * 0.02)
    try:
        push_weights(float32_engine, model)
        after = engine_greedy()
        assert after != before
        assert after == greedy_reference(model, prompt, 16)
    finally:
        model.load_state_dict(original)
        push_weights(float32_engine, model)  # the shared engine goes back to the base model
    assert engine_greedy() == before
