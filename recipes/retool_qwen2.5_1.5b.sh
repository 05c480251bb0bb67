#!/usr/bin/env bash
# ReTool-style multi-turn RL with a Python tool, Qwen2.5-1.5B, DAPO-Math-17k (SRT paper,
# appendix A (d)): PPO with a critic, temperature 1.0, KL 0.001, 512 prompts per step, PPO
# mini-batch 128, clip ratio low 0.20 / high 0.28, warmup 0, prompt <= 2048 and response
# <= 16384 tokens, at most 8 turns. The agent (recipes/retool_agent.py, OpenRLHF's
# MultiTurnAgentExecutor) runs each <code> block in a subprocess with time and memory limits
# and answers with <interpreter> output; the reward is the final answer's correctness. The
# learning-rate values are missing from our copy of the appendix: actor 1e-6, critic 1e-5.
# How tool output enters the SRT cache (as context, never as drafted model output):
# docs/openrlhf.md. SRT=0 runs the baseline twin; DRY_RUN=1 prints the command.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
PROMPT_DATA=${PROMPT_DATA:-open-r1/DAPO-Math-17k-Processed}
INPUT_KEY=${INPUT_KEY:-prompt}
LABEL_KEY=${LABEL_KEY:-solution}
export RETOOL_MAX_TURNS=${RETOOL_MAX_TURNS:-8}

run_recipe retool_qwen2.5_1.5b \
  --algo.advantage.estimator gae \
  --critic.model_name_or_path "$MODEL" \
  --rollout.n_samples_per_prompt 1 \
  --rollout.batch_size 512 --train.batch_size 128 \
  --rollout.micro_batch_size 8 --train.micro_batch_size 2 \
  --algo.kl.init_coef 0.001 \
  --actor.eps_clip_low_high 0.2 0.28 \
  --actor.adam.lr 1e-6 --critic.adam.lr 1e-5 \
  --data.max_len 18432 --rollout.max_new_tokens 16384 \
  --train.num_episodes 9 \
  --train.agent_func_path "$HERE/retool_agent.py"
