"""Sticky routing of prompts to engines: a prompt's cache lives on one engine.

Every prompt has a *home* engine: the first in its rendezvous-hash order (highest
BLAKE2b(key, engine) score). The home depends only on the prompt's text and the number of
engines, not on the process, the step, the batch or a restart, so all n samples of a prompt
go to the same engine in this step and every later one.

Balance within a step (bounded loads, as in consistent hashing with bounded loads): with
B prompts in the step so far over E engines, an engine takes at most
`cap = ceil((1 + tolerance) * B / E)` prompts. A prompt whose home is full *spills* to the
next engine in its own rendezvous order that has room (a deterministic choice); its home
stays the same for later steps. So:

- per-step load: max prompts on one engine <= ceil((1 + tolerance) * B / E), always;
- stickiness: every prompt goes home unless its home is over the cap in that step. With
  tolerance 0.25, 128 prompts per step and 8 engines, about 98% of dispatches go home
  (tests/openrlhf/test_routing.py measures it on random steps); `tolerance=inf` never spills
  (100% sticky, no balance bound).

Load is counted in prompts; every prompt of a step carries the same n samples.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence


def stable_key(prompt: str | bytes | Sequence[int]) -> bytes:
    """Stable identity of a prompt: its UTF-8 text, or its token ids as int32 LE bytes."""
    if isinstance(prompt, bytes):
        return prompt
    if isinstance(prompt, str):
        return prompt.encode("utf-8")
    return b"".join(int(t).to_bytes(4, "little", signed=True) for t in prompt)


def _score(key: bytes, engine: int) -> int:
    h = hashlib.blake2b(key, digest_size=8, person=b"srt-route", salt=engine.to_bytes(8, "little"))
    return int.from_bytes(h.digest(), "little")


def preference(prompt, num_engines: int) -> list[int]:
    """Engines in the prompt's rendezvous order; the first is its home."""
    key = stable_key(prompt)
    return sorted(range(num_engines), key=lambda e: -_score(key, e))


def home_engine(prompt, num_engines: int) -> int:
    key = stable_key(prompt)
    return max(range(num_engines), key=lambda e: _score(key, e))


class StickyRouter:
    """Assigns the prompts of one step to engines; `begin_step()` resets the step's loads.

    `assign(prompts)` may be called several times in a step (OpenRLHF dispatches replacement
    prompts one by one under dynamic filtering); the cap grows with the step's total.
    """

    def __init__(self, num_engines: int, tolerance: float = 0.25):
        if num_engines < 1:
            raise ValueError(f"num_engines must be >= 1, got {num_engines}")
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        self.num_engines = num_engines
        self.tolerance = tolerance
        self.loads = [0] * num_engines
        self.home_hits = 0  # dispatches that went to the prompt's home (this router's life)
        self.spills = 0

    def begin_step(self) -> None:
        self.loads = [0] * self.num_engines

    def cap(self, total: int) -> int:
        if math.isinf(self.tolerance):
            return total
        return max(1, math.ceil((1.0 + self.tolerance) * total / self.num_engines - 1e-9))

    def assign(self, prompts: Sequence) -> list[int]:
        """Engine index for each prompt, in order."""
        cap = self.cap(sum(self.loads) + len(prompts))
        out = []
        for p in prompts:
            order = preference(p, self.num_engines)
            engine = next((e for e in order if self.loads[e] < cap), None)
            if engine is None:  # only when earlier calls of this step filled every engine
                engine = min(order, key=lambda e: self.loads[e])
            if engine == order[0]:
                self.home_hits += 1
            else:
                self.spills += 1
            self.loads[engine] += 1
            out.append(engine)
        return out
