"""Run-ahead budget (how much, per engine and step) and choice of prompts (which).

    budget = RunaheadBudget(max_tokens=16384, max_requests=32, max_new_tokens=512,
                            samples_per_prompt=2)
    n = budget.grant(used_tokens, in_flight)     # requests that may start now
    keys = select_runahead(upcoming, n // budget.samples_per_prompt, skip=started)

Token accounting is conservative: a request in flight reserves `max_new_tokens` (its
largest possible output); a finished or aborted one counts what it produced. So the tokens a
step's run-ahead generates on one engine never exceed `max_tokens`, however the requests
end.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RunaheadBudget:
    max_tokens: int = 16384  # run-ahead tokens per engine and step
    max_requests: int = 32  # run-ahead requests in flight per engine
    max_new_tokens: int = 512  # per run-ahead request
    samples_per_prompt: int = 2  # run-ahead samples of one upcoming prompt

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_requests", "max_new_tokens", "samples_per_prompt"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"RunaheadBudget.{name} must be an integer >= 0, got {v!r}")
        if self.max_new_tokens == 0 or self.samples_per_prompt == 0:
            raise ValueError("RunaheadBudget.max_new_tokens and samples_per_prompt must be >= 1")

    def grant(self, used_tokens: int, in_flight: int) -> int:
        """Requests that may start now, given the tokens finished requests produced this
        step and the requests still in flight (each reserving max_new_tokens)."""
        free_tokens = self.max_tokens - used_tokens - in_flight * self.max_new_tokens
        by_tokens = max(0, free_tokens) // self.max_new_tokens
        by_requests = max(0, self.max_requests - in_flight)
        return min(by_tokens, by_requests)

    def prompts_to_start(self, used_tokens: int, in_flight: int) -> int:
        """Whole prompts (samples_per_prompt requests each) that fit in grant()."""
        return self.grant(used_tokens, in_flight) // self.samples_per_prompt


def select_runahead(upcoming: Sequence[Hashable], k: int, *,
                    skip: Collection[Hashable] = (),
                    cached: Mapping[Hashable, int] | None = None,
                    saturated: int | None = None) -> list[Hashable]:
    """Which upcoming prompts to run ahead: the first k in look-ahead order (soonest needed
    first) that are not in `skip` (already run ahead or running) and, when `cached` and
    `saturated` are given, whose cached sequence count is below `saturated` (a prompt the
    cache already holds many sequences of gains little). Duplicates count once."""
    if k <= 0:
        return []
    out: list = []
    seen = set(skip)
    for key in upcoming:
        if key in seen:
            continue
        seen.add(key)
        if cached is not None and saturated is not None and cached.get(key, 0) >= saturated:
            continue
        out.append(key)
        if len(out) == k:
            break
    return out
