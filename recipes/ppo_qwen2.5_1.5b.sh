#!/usr/bin/env bash
# PPO (GAE, critic), Qwen2.5-1.5B, MATH (SRT paper, appendix A (a)): temperature 1.0,
# KL 0.001, 512 prompts per step, PPO mini-batch 128, warmup 0, prompt <= 512 and
# response <= 4096 tokens, 300 steps (21 passes over MATH's 7,500 prompts: ~307 steps).
# The learning-rate values are missing from our copy of the appendix: actor 1e-6, critic 1e-5.
# SRT=0 runs the baseline twin; DRY_RUN=1 prints the command. See recipes/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
PROMPT_DATA=${PROMPT_DATA:-DigitalLearningGmbH/MATH-lighteval}
INPUT_KEY=${INPUT_KEY:-problem}
LABEL_KEY=${LABEL_KEY:-solution}

run_recipe ppo_qwen2.5_1.5b \
  --algo.advantage.estimator gae \
  --critic.model_name_or_path "$MODEL" \
  --rollout.n_samples_per_prompt 1 \
  --rollout.batch_size 512 --train.batch_size 128 \
  --rollout.micro_batch_size 16 --train.micro_batch_size 8 \
  --algo.kl.init_coef 0.001 \
  --actor.adam.lr 1e-6 --critic.adam.lr 1e-5 \
  --data.max_len 4608 --rollout.max_new_tokens 4096 \
  --train.num_episodes 21 \
  --reward.remote_url "$HERE/math_reward.py"
