"""Reward function for the math recipes: OpenRLHF's `--reward.remote_url <this file>`.

OpenRLHF's SingleTurnAgentExecutor calls `reward_func(queries, prompts, labels)` with one
query at a time (prompt + response, decoded) and reads "rewards", "scores" and
"extra_logs". The reward is openrlhf_srt.data.reward.math_reward (1.0 when the response's
final answer equals the label's; docs/prompts.md). A label holding a worked solution
(MATH's `solution` field) is reduced to its last \\boxed{} answer first.
"""

from __future__ import annotations

from openrlhf_srt.data.reward import extract_final_answer, math_reward


def response_of(query: str, prompt: str) -> str:
    """The response part of a decoded query (the prompt text when it is a prefix)."""
    i = query.find(prompt) if prompt else -1
    return query[i + len(prompt):] if i >= 0 else query


def label_answer(label) -> str:
    text = str(label)
    return extract_final_answer(text) if "\\boxed" in text else text


def reward_func(queries, prompts, labels):
    rewards = [math_reward(response_of(q, p), label_answer(lab))
               for q, p, lab in zip(queries, prompts, labels)]
    value = rewards[0] if len(rewards) == 1 else rewards
    return {"rewards": value, "scores": value, "extra_logs": {}}
