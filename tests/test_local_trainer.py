"""The local trainer: flags, prompt order across resume, weight sync into the running engine."""

from __future__ import annotations

import pytest

from openrlhf_srt.local.config import TrainConfig, parse_config
from openrlhf_srt.local.trainer import prompt_indices


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--algo", "ppo"], "--algo"),
        (["--samples_per_prompt", "1"], "--samples_per_prompt"),
        (["--temperature", "0"], "--temperature"),
        (["--overlong_buffer", "999"], "--overlong_buffer"),
        (["--srt", "maybe"], "--srt"),
        (["--srt_num_speculative_tokens", "200"], "--srt_num_speculative_tokens"),
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
    assert parse_config(["--srt", "false"]).srt is False


def test_prompt_order_covers_the_pool_without_repeats_per_pass():
    cfg = TrainConfig(prompts_per_step=4, seed=3)
    pool = 10  # two full steps per pass, 2 prompts left over each pass
    first_pass = prompt_indices(cfg, pool, 0) + prompt_indices(cfg, pool, 1)
    assert len(set(first_pass)) == 8
    assert prompt_indices(cfg, pool, 1) == prompt_indices(cfg, pool, 1)  # resume-stable
    assert prompt_indices(cfg, pool, 2) != prompt_indices(cfg, pool, 0)  # new pass, new order
    assert prompt_indices(TrainConfig(prompts_per_step=4, seed=4), pool, 0) != prompt_indices(cfg, pool, 0)


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
