"""One engine's run-ahead decisions during one training step: the bubble detector, the
token budget and the prompt choice composed in the one order both trainers use.

    plan = RunaheadPlanner(detector, budget)
    plan.begin_step(dispatched=32, now=t0, running=keys_of_this_steps_prompts)
    ...every poll:
    keys = plan.poll(running, now, upcoming, used_tokens=..., in_flight=...)
    -> start budget.samples_per_prompt run-ahead requests for each key
    ...
    plan.end_step(now)     # the step's bubble seconds

`poll` returns nothing unless the detector confirms a bubble (and the look-ahead window is
not empty); then as many whole prompts as the budget grants and the engine can take without
slowing the step's remaining rollouts by more than `max_slowdown`, the first upcoming ones
not yet run ahead this step and not among the step's own prompts (`select_runahead`).

Why the cost check: run-ahead is meant to fill idle capacity. On a GPU a decode step with a
few sequences costs the same as one with dozens (the step cost's knee is in the hundreds of
tokens), so run-ahead in the bubble is free. On a CPU every extra token costs a share of
the step (the knee is near 0; docs/drafting.md has measured costs), so run-ahead rows beside
the last rollout rows slow the tail down. `set_step_cost` gives the planner the engine's fitted cost (the drafter's
`StepCostModel`, `srt_stats()["step_cost"]`); without one, only the budget applies.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Mapping, Sequence

from openrlhf_srt.drafting.cost_model import StepCost
from openrlhf_srt.runahead.bubble import BubbleDetector
from openrlhf_srt.runahead.runahead_budget import RunaheadBudget, select_runahead


class RunaheadPlanner:
    def __init__(self, detector: BubbleDetector, budget: RunaheadBudget,
                 max_slowdown: float = math.inf):
        if not max_slowdown >= 0:
            raise ValueError(f"max_slowdown must be >= 0, got {max_slowdown!r}")
        self.detector = detector
        self.budget = budget
        self.max_slowdown = max_slowdown
        self.cost: StepCost | None = None
        self.started: set[Hashable] = set()  # run ahead (or running as rollouts) this step
        self.prompts = 0  # prompts run ahead this step

    def begin_step(self, dispatched: int, now: float,
                   running: Collection[Hashable] = ()) -> None:
        self.detector.begin_step(dispatched, now)
        self.started = set(running)
        self.prompts = 0

    def set_step_cost(self, cost: StepCost | Mapping | None) -> None:
        """The engine's step cost (a StepCost or its dict form); None: no cost check."""
        self.cost = StepCost(**cost) if isinstance(cost, Mapping) else cost

    def affordable_requests(self, running: int, in_flight: int = 0) -> int | None:
        """More run-ahead requests that may join `running` rollout rows and `in_flight`
        run-ahead rows (one token each per step) while the predicted step time stays within
        (1 + max_slowdown) x that of the rollouts alone; None: no limit."""
        c = self.cost
        if c is None or math.isinf(self.max_slowdown) or c.per_token == 0:
            return None
        limit = c(running) * (1.0 + self.max_slowdown)
        most_rows = c.knee + (limit - c.fixed) / c.per_token  # hinge solved for tokens
        return max(0, math.floor(most_rows + 1e-9) - running - in_flight)

    def poll(self, running: int, now: float, upcoming: Sequence[Hashable], *,
             used_tokens: int, in_flight: int) -> list[Hashable]:
        """Upcoming prompts to run ahead now (empty when not in a confirmed bubble)."""
        if not self.detector.observe(running, now, lookahead=len(upcoming)):
            return []
        k = self.budget.prompts_to_start(used_tokens, in_flight)
        affordable = self.affordable_requests(running, in_flight)
        if affordable is not None:
            k = min(k, affordable // self.budget.samples_per_prompt)
        chosen = select_runahead(upcoming, k, skip=self.started)
        self.started.update(chosen)
        self.prompts += len(chosen)
        return chosen

    def end_step(self, now: float) -> float:
        return self.detector.end_step(now)
