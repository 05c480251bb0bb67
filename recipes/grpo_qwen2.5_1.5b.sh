#!/usr/bin/env bash
# GRPO, Qwen2.5-1.5B, MATH (SRT paper, appendix A (b)): 5 responses per prompt, temperature
# 1.0, KL 0.001, 128 prompts per step, PPO mini-batch 64 prompts (= 320 samples), warmup 0,
# prompt <= 512 and response <= 4096 tokens, 300 steps (6 passes over MATH's 7,500 prompts:
# ~350 steps). The learning-rate values are missing from our copy of the appendix: 1e-6.
# SRT=0 runs the baseline twin; DRY_RUN=1 prints the command. See recipes/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
PROMPT_DATA=${PROMPT_DATA:-DigitalLearningGmbH/MATH-lighteval}
INPUT_KEY=${INPUT_KEY:-problem}
LABEL_KEY=${LABEL_KEY:-solution}

run_recipe grpo_qwen2.5_1.5b \
  --algo.advantage.estimator group_norm \
  --rollout.n_samples_per_prompt 5 \
  --rollout.batch_size 128 --train.batch_size 320 \
  --rollout.micro_batch_size 16 --train.micro_batch_size 8 \
  --algo.kl.init_coef 0.001 --algo.kl.use_loss --algo.kl.estimator k3 \
  --actor.adam.lr 1e-6 \
  --data.max_len 4608 --rollout.max_new_tokens 4096 \
  --train.num_episodes 6 \
  --reward.remote_url "$HERE/math_reward.py"
