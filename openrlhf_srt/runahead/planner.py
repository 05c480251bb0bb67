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
not empty); then as many whole prompts as the budget grants, the first upcoming ones not yet
run ahead this step and not among the step's own prompts (`select_runahead`).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence

from openrlhf_srt.runahead.bubble import BubbleDetector
from openrlhf_srt.runahead.policy import RunaheadBudget, select_runahead


class RunaheadPlanner:
    def __init__(self, detector: BubbleDetector, budget: RunaheadBudget):
        self.detector = detector
        self.budget = budget
        self.started: set[Hashable] = set()  # run ahead (or running as rollouts) this step
        self.prompts = 0  # prompts run ahead this step

    def begin_step(self, dispatched: int, now: float,
                   running: Collection[Hashable] = ()) -> None:
        self.detector.begin_step(dispatched, now)
        self.started = set(running)
        self.prompts = 0

    def poll(self, running: int, now: float, upcoming: Sequence[Hashable], *,
             used_tokens: int, in_flight: int) -> list[Hashable]:
        """Upcoming prompts to run ahead now (empty when not in a confirmed bubble)."""
        if not self.detector.observe(running, now, lookahead=len(upcoming)):
            return []
        k = self.budget.prompts_to_start(used_tokens, in_flight)
        chosen = select_runahead(upcoming, k, skip=self.started)
        self.started.update(chosen)
        self.prompts += len(chosen)
        return chosen

    def end_step(self, now: float) -> float:
        return self.detector.end_step(now)
