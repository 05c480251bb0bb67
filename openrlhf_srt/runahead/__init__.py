"""Run-ahead: use an engine's idle time at the end of a step to pre-fill the tree cache.

Shared by the OpenRLHF engine group (openrlhf_srt.openrlhf) and the local CPU trainer; pure
Python (no torch, no vLLM). The pieces:

- `BubbleDetector(threshold, min_seconds, min_samples)`: per engine and step.
  `begin_step(dispatched, now)`, then `observe(running, now, lookahead) -> bool` (True: run
  ahead now), `end_step(now)`; `bubble_seconds` is the step's time below threshold
  (running < ceil(threshold * dispatched)).
- `LookaheadPrompts(source, unpack)`: iterator over training items with `peek(k)` (up to k
  upcoming prompt records, nothing consumed), `next_batch()`, `state_dict()` /
  `load_state_dict(state, source_restored=...)` so that resume loses or repeats no prompt.
- `RunaheadBudget(max_tokens, max_requests, max_new_tokens, samples_per_prompt)` with
  `grant(used_tokens, in_flight)`, and `select_runahead(upcoming, k, skip, cached,
  saturated)`: the first k upcoming prompts not yet run ahead / not heavily cached.
- `RunaheadPlanner(detector, budget, max_slowdown)`: the three composed for one engine and
  step, with a check of the engine's step cost (`set_step_cost`, `begin_step`,
  `poll(running, now, upcoming, used_tokens=, in_flight=) -> keys`, `end_step`); both
  trainers drive it.
- `runahead_params(params, max_new_tokens)`: a run-ahead request's SamplingParams.

Run-ahead requests carry `SamplingParams(extra_args={"srt_runahead": True})` so the drafter
tags their sequences; their output goes to the cache only and is never a training sample.
"""

from openrlhf_srt.runahead.bubble import BubbleDetector
from openrlhf_srt.runahead.lookahead import LookaheadPrompts
from openrlhf_srt.runahead.planner import RunaheadPlanner
from openrlhf_srt.runahead.runahead_budget import RunaheadBudget, select_runahead

RUNAHEAD_ARG = "srt_runahead"  # SamplingParams.extra_args key the drafter files run-ahead by
RUNAHEAD_PRIORITY = 1  # vLLM priority of run-ahead requests (lower first; rollouts have 0)


def runahead_params(params, max_new_tokens: int | None = None):
    """A copy of a rollout's vLLM SamplingParams for run-ahead: tagged for the drafter
    (RUNAHEAD_ARG), no log-probs (the output is never a sample), at most max_new_tokens."""
    out = params.clone()
    out.extra_args = {**(out.extra_args or {}), RUNAHEAD_ARG: True}
    out.logprobs = None
    if max_new_tokens is not None:
        out.max_tokens = max_new_tokens
    return out


__all__ = ["RUNAHEAD_ARG", "RUNAHEAD_PRIORITY", "BubbleDetector", "LookaheadPrompts",
           "RunaheadBudget", "RunaheadPlanner", "runahead_params", "select_runahead"]
