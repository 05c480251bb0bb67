"""Run-ahead in the local trainer: the shared rules (openrlhf_srt.runahead) on one engine.

`LocalRunahead` is what `rollout.drive` polls between engine steps. Its look-ahead window
is the trainer's `LookaheadPrompts` over the coming steps' prompts (pool indices), peeked
without being consumed, so the training order is unchanged by run-ahead. Each step:

    ra.set_step(step_keys, params, cost) # this step's prompts (never run ahead), params, cost
    drive(llm, requests, ra)             # begin / poll / end, called by drive()
    ra.history[-1]                       # the keys run ahead during the step

`poll` asks the `RunaheadPlanner` (bubble detector -> budget -> prompt choice); for each
chosen prompt it hands back `runahead_samples` requests with `max_tokens =
runahead_max_new_tokens` and the `srt_runahead` tag, the rollouts' temperature and top-p.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from openrlhf_srt.runahead import RUNAHEAD_PRIORITY, LookaheadPrompts, runahead_params
from openrlhf_srt.srt_config import SRTConfig


class LocalRunahead:
    def __init__(self, srt: SRTConfig, lookahead: LookaheadPrompts,
                 prompt_ids: Callable[[Hashable], list[int]]):
        self.srt = srt
        self.lookahead = lookahead
        self.prompt_ids = prompt_ids
        self.planner = srt.runahead_planner()
        self.poll_seconds = srt.runahead_poll_seconds
        self.priority = RUNAHEAD_PRIORITY if srt.runahead_priority else 0
        self.history: list[list[Hashable]] = []  # keys run ahead, one list per step
        self._keys: list[Hashable] = []
        self._params = None

    def set_step(self, step_keys: Sequence[Hashable], rollout_params,
                 step_cost: dict | None = None) -> None:
        """The coming step's prompts, the rollouts' SamplingParams and the engine's fitted
        step cost (the drafter's `srt_stats()["step_cost"]`; None: no cost check)."""
        self._keys = list(step_keys)
        self.planner.set_step_cost(step_cost)
        self._params = runahead_params(rollout_params, self.srt.runahead_max_new_tokens)

    # ------------------------------------------------------------------ drive() protocol
    def begin(self, dispatched: int, now: float) -> None:
        if self._params is None:
            raise RuntimeError("LocalRunahead.set_step must be called before each step")
        self.planner.begin_step(dispatched, now, running=self._keys)
        self.history.append([])

    def poll(self, running: int, now: float, *, used_tokens: int,
             in_flight: int) -> list[tuple[list[int], Any]]:
        upcoming = self.lookahead.peek(self.srt.runahead_prompts)
        chosen = self.planner.poll(running, now, upcoming, used_tokens=used_tokens,
                                   in_flight=in_flight)
        self.history[-1].extend(chosen)
        n = self.planner.budget.samples_per_prompt
        return [(self.prompt_ids(key), self._params) for key in chosen for _ in range(n)]

    def end(self, now: float) -> dict[str, float]:
        self._params = None
        return {"bubble_seconds": self.planner.end_step(now),
                "prompts": float(self.planner.prompts)}
