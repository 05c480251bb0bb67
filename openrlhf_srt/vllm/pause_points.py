"""Test hook: stop a run at a named point, so a test can kill it exactly there.

    OPENRLHF_SRT_PAUSE_AT=weight_push:2 python -m openrlhf_srt.cli.train_local ...

makes the process print `OPENRLHF_SRT_PAUSED weight_push 2` on stdout the second time it
reaches `pause_at("weight_push")`, then wait there forever (tests/test_faults.py kills it).
Points: `rollout` (local/rollout.py: requests in the engine, after its first step),
`weight_push` (weight_sync.py: the weight folder written, not yet loaded), `checkpoint`
(local/trainer.py: the model written into the checkpoint's temporary folder, the rest not).
Unset, as outside tests, `pause_at` reads one environment variable and returns.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter

PAUSE_ENV = "OPENRLHF_SRT_PAUSE_AT"
PAUSED_MARKER = "OPENRLHF_SRT_PAUSED"
POINTS = ("rollout", "weight_push", "checkpoint")
_reached: Counter = Counter()  # times this process reached each point


def pause_at(point: str) -> None:
    if point not in POINTS:
        raise ValueError(f"unknown pause point {point!r}; points: {POINTS}")
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted:
        return
    _reached[point] += 1
    if wanted != f"{point}:{_reached[point]}":
        return
    print(f"{PAUSED_MARKER} {point} {_reached[point]}", file=sys.stdout, flush=True)
    while True:
        time.sleep(3600)
