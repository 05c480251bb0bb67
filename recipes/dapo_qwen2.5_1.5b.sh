#!/usr/bin/env bash
# DAPO, Qwen2.5-1.5B, DAPO-Math-17k (SRT paper, appendix A (c)): 16 responses per prompt,
# temperature 1.0, no KL, 128 prompts per step, PPO mini-batch 32 prompts (= 512 samples),
# clip ratio low 0.20 / high 0.28, warmup 0, prompt <= 2048 and response <= 8192 tokens,
# 300 steps (3 passes over ~17k prompts, fewer kept steps after dynamic sampling). DAPO's
# other parts in OpenRLHF terms: token-level loss (token-mean), dynamic sampling (groups
# with all-0 or all-1 rewards dropped and replaced), overlong reward shaping over the last
# 4096 tokens. The learning-rate value is missing from our copy of the appendix: 1e-6.
# SRT=0 runs the baseline twin; DRY_RUN=1 prints the command. See recipes/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
PROMPT_DATA=${PROMPT_DATA:-open-r1/DAPO-Math-17k-Processed}
INPUT_KEY=${INPUT_KEY:-prompt}
LABEL_KEY=${LABEL_KEY:-solution}

run_recipe dapo_qwen2.5_1.5b \
  --algo.advantage.estimator group_norm \
  --rollout.n_samples_per_prompt 16 \
  --rollout.batch_size 128 --train.batch_size 512 \
  --rollout.micro_batch_size 16 --train.micro_batch_size 4 \
  --algo.kl.init_coef 0 \
  --actor.eps_clip_low_high 0.2 0.28 --actor.loss_agg_mode token-mean \
  --algo.dynamic_filtering_enable --algo.dynamic_filtering_range 0 1 \
  --reward.overlong_buffer_len 4096 --reward.overlong_penalty_factor 1.0 \
  --actor.adam.lr 1e-6 \
  --data.max_len 10240 --rollout.max_new_tokens 8192 \
  --train.num_episodes 3 \
  --reward.remote_url "$HERE/math_reward.py"
