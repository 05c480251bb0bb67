"""Run-ahead during one training step of the OpenRLHF engine group.

`RunaheadMonitor(generator, lookahead)` runs a thread beside OpenRLHF's generation loop:
every `--srt.runahead_poll_seconds` it asks each engine for its running rollout requests
(`srt_request_counts`) and feeds one `RunaheadPlanner` per engine (the rules the local
trainer uses: bubble detector, `RunaheadBudget`, cost check, `select_runahead`) with the
upcoming prompts whose home is that engine (routing); the prompts it returns get run-ahead
requests on that engine. `stop()` ends the thread, aborts all run-ahead requests on every
engine and returns the step's figures.

Peeking never consumes: the training loop still draws the same prompts in the same order.
"""

from __future__ import annotations

import logging
import threading
import time

import ray

from openrlhf_srt.openrlhf.engine_group import episode_prompt_ids
from openrlhf_srt.openrlhf.routing import home_engine
from openrlhf_srt.runahead import runahead_params

log = logging.getLogger(__name__)


class RunaheadMonitor:
    def __init__(self, generator, lookahead):
        self.gen = generator
        self.la = lookahead
        self.cfg = generator.srt
        # the real engines, captured now: during dispatch the generator shows OpenRLHF's
        # code one engine at a time (samples._DispatchView)
        self.engines = list(generator.vllm_engines)
        n = len(self.engines)
        # one planner per engine; a prompt is only ever offered to its home engine's planner
        self.planners = [self.cfg.runahead_planner() for _ in range(n)]
        # each engine's fitted step cost (the run-ahead cost check)
        stats = ray.get([e.srt_stats.remote() for e in self.engines])
        for plan, s in zip(self.planners, stats):
            plan.set_step_cost(s.get("step_cost"))
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="srt-runahead", daemon=True)
        self._begun = False

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.cfg.runahead_poll_seconds):
            try:
                self.poll(time.monotonic())
            except Exception as e:  # noqa: BLE001 - run-ahead must never break a training step
                self.errors.append(f"{type(e).__name__}: {e}")
                log.warning("run-ahead poll failed: %s", e)

    def poll(self, now: float) -> None:
        engines = self.engines
        requests = ray.get([e.srt_request_counts.remote() for e in engines])
        dispatched = self.gen.dispatched()
        if not self._begun:  # the step starts with the first dispatch
            if not sum(dispatched):
                return
            for plan, n in zip(self.planners, dispatched):
                plan.begin_step(n, now)
            self._begun = True
        upcoming = [p for p, _ in self.la.peek(self.cfg.runahead_prompts)]
        started = []
        for i, (plan, req) in enumerate(zip(self.planners, requests)):
            det = plan.detector
            if dispatched[i] != det.dispatched:
                det.add_dispatched(dispatched[i] - det.dispatched)
            mine = [p for p in upcoming if home_engine(p, len(engines)) == i]
            chosen = plan.poll(req["rollout"], now, mine, used_tokens=req["runahead_tokens"],
                               in_flight=req["runahead"])
            if not chosen:
                continue
            # the step's rollout params, set by the first dispatch, which the step began with
            params = runahead_params(self.gen._sampling_params, self.cfg.runahead_max_new_tokens)
            ids = [episode_prompt_ids(self.gen.tokenizer, p) for p in chosen]
            started.append(engines[i].srt_runahead.remote(ids, params,
                                                          plan.budget.samples_per_prompt))
        # wait until the engines registered them (it takes no engine step): once stop() has
        # joined this thread, its abort sees every run-ahead request this poll started
        ray.get(started)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        now = time.monotonic()
        aborted = ray.get([e.srt_abort_runahead.remote() for e in self.engines])
        bubble = [plan.end_step(now) for plan in self.planners]
        return {"bubble_seconds": sum(bubble), "bubble_per_engine": bubble,
                "prompts": sum(plan.prompts for plan in self.planners),
                "aborted": sum(aborted), "errors": self.errors}
