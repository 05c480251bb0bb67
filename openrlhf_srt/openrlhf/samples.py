"""OpenRLHF's SamplesGenerator with sticky routing, run-ahead and SRT step metrics.

`SRTSamplesGenerator` subclasses `openrlhf.trainer.ppo_utils.samples_generator.
SamplesGenerator` (0.11.2) and overrides three methods:

- `_dispatch_prompts_to_vllm`: the engine of each prompt comes from `routing.StickyRouter`
  (stable home per prompt, bounded per-step load) instead of OpenRLHF's least-loaded heap;
  the requests themselves are made by OpenRLHF's own method, called once per home engine
  with only that engine visible (all n samples of a prompt go to one engine as one
  `generate_responses` call, as in OpenRLHF).
- `generate_samples`: the training dataloader iterator becomes a `LookaheadPrompts`
  (upcoming prompts can be peeked without being consumed; OpenRLHF's
  `_collect_prompt_batch` still pulls the training prompts from it, in order).
- `_generate_vllm`: around OpenRLHF's own loop, a `RunaheadMonitor` thread polls the
  engines (runahead_monitor.py); afterwards run-ahead is aborted and the step's SRT figures are
  collected (`pop_step_metrics()`). With `--srt.trace_dir`, each engine records the training
  step's episodes and run-ahead outputs in its step file, begun with the step (with the
  weights version `policy_version`, which the trainer mixin sets after each weight push)
  and published once run-ahead is aborted.

Samples returned are exactly OpenRLHF's: run-ahead output never leaves the engine actor.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import ray
from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

from openrlhf_srt.openrlhf.routing import StickyRouter
from openrlhf_srt.openrlhf.step_metrics import step_metrics
from openrlhf_srt.runahead import LookaheadPrompts
from openrlhf_srt.srt_config import SRTConfig

log = logging.getLogger(__name__)


def unpack_openrlhf_item(item) -> list:
    """(datasources, prompts, labels, images) batch -> [(prompt, label), ...]."""
    return list(zip(item[1], item[2]))


class LockedLookahead(LookaheadPrompts):
    """LookaheadPrompts shared by the training loop (next) and the monitor thread (peek)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._lock = threading.Lock()

    def __next__(self):
        with self._lock:
            return super().__next__()

    def peek(self, k: int) -> list:
        with self._lock:
            return super().peek(k)


class SRTSamplesGenerator(SamplesGenerator):
    def __init__(self, *args, srt: SRTConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self._srt_init(srt)

    @classmethod
    def from_generator(cls, base: SamplesGenerator, srt: SRTConfig) -> SRTSamplesGenerator:
        """Wrap the generator OpenRLHF's PPOTrainer built (same dataloaders and engines)."""
        obj = cls.__new__(cls)
        obj.__dict__.update(base.__dict__)
        obj._srt_init(srt)
        return obj

    def _srt_init(self, srt: SRTConfig) -> None:
        self.srt = srt
        self.router = StickyRouter(max(1, len(self.vllm_engines)), srt.route_tolerance)
        self.train_step = 0
        self._step_metrics: dict[str, float] = {}
        self._resume_lookahead: dict | None = None
        self._sampling_params = None  # vllm.SamplingParams of the step's rollouts
        self._dispatched = [0] * len(self.vllm_engines)
        self.dispatch_log: list[tuple[str, int]] = []  # (prompt, engine) of this step
        # training steps whose weights the engines hold (SRTTrainerMixin sets it after each
        # weight push and on resume): the policy version recorded in traces
        self.policy_version = 0

    # ------------------------------------------------------------------ look-ahead
    def _new_lookahead(self) -> LockedLookahead:
        la = LockedLookahead(iter(self.prompts_dataloader), unpack=unpack_openrlhf_item)
        if self._resume_lookahead is not None:
            la.load_state_dict(self._resume_lookahead, source_restored=True)
            self._resume_lookahead = None
        return la

    def lookahead_state(self) -> dict | None:
        """Peeked-but-unconsumed prompts, for the checkpoint (OpenRLHF's dataloader state,
        saved at the same moment, already stands after them)."""
        la = getattr(self, "_dataloader_iter", None)
        return la.state_dict() if isinstance(la, LookaheadPrompts) else None

    def restore_lookahead(self, state: dict | None) -> None:
        self._resume_lookahead = state if state and state.get("buffer") else None

    def generate_samples(self, **generate_kwargs):
        if getattr(self, "_dataloader_iter", None) is None and not getattr(
                self, "_sample_buffer", None):
            self._dataloader_iter = self._new_lookahead()
            self._sample_buffer = []
        return super().generate_samples(**generate_kwargs)

    # ------------------------------------------------------------------ one step
    def _generate_vllm(self, dataloader_iter, num_prompts: int, dynamic_filtering,
                       **generate_kwargs):
        training = dataloader_iter is getattr(self, "_dataloader_iter", None)
        self.router.begin_step()
        self._dispatched = [0] * len(self.vllm_engines)
        self.dispatch_log = []
        monitor = None
        if training:
            self.train_step += 1
            ray.get([e.srt_set_step.remote(self.train_step) for e in self.vllm_engines])
            if self.srt.trace_dir:
                ray.get([e.srt_trace_begin.remote(self.train_step, self.policy_version)
                         for e in self.vllm_engines])
            if self.srt.window_steps:
                ray.get([e.srt_keep_window.remote(self.train_step, self.srt.window_steps)
                         for e in self.vllm_engines])
            if self.srt.runahead and isinstance(dataloader_iter, LookaheadPrompts):
                from openrlhf_srt.openrlhf.runahead_monitor import RunaheadMonitor

                monitor = RunaheadMonitor(self, dataloader_iter)
                monitor.start()
        try:
            result = super()._generate_vllm(dataloader_iter, num_prompts, dynamic_filtering,
                                            **generate_kwargs)
        finally:
            report = monitor.stop() if monitor is not None else {}
        # run-ahead is aborted: the step's files are whole (a step that raised stays a .tmp)
        traced = (ray.get([e.srt_trace_end.remote() for e in self.vllm_engines])
                  if training and self.srt.trace_dir else [])
        stats = ray.get([e.srt_step_stats.remote() for e in self.vllm_engines])
        if training:
            self._step_metrics = step_metrics(
                stats, bubble_seconds=report.get("bubble_seconds", 0.0),
                verify_cost=self.srt.verify_cost, home_hits=self.router.home_hits,
                spills=self.router.spills)
            self._step_metrics["srt/runahead_prompts"] = float(report.get("prompts", 0))
            if traced:  # engines write in parallel: the slowest engine's share of the step
                self._step_metrics["srt/trace_records"] = sum(t["records"] for t in traced)
                self._step_metrics["srt/trace_write_seconds"] = max(t["seconds"]
                                                                    for t in traced)
            self.router.home_hits = self.router.spills = 0
        return result

    def pop_step_metrics(self) -> dict[str, float]:
        m, self._step_metrics = self._step_metrics, {}
        return m

    def _dispatch_prompts_to_vllm(self, prompts, labels, *, images=None, **generate_kwargs):
        # OpenRLHF's own dispatch (its SamplingParams, its generate_responses call), run once
        # per home engine with only that engine visible, so its least-loaded choice is the
        # sticky router's choice. The engine views record what was sent (run-ahead uses the
        # step's sampling params; the monitor, the samples sent to each engine).
        homes = self.router.assign(prompts)
        engines = self.vllm_engines
        images = [None] * len(prompts) if images is None else images
        refs: list = [None] * len(prompts)
        try:
            for e in sorted(set(homes)):
                idx = [i for i, h in enumerate(homes) if h == e]
                self.vllm_engines = [_DispatchView(engines[e], e, self)]
                got = super()._dispatch_prompts_to_vllm(
                    [prompts[i] for i in idx], [labels[i] for i in idx],
                    images=[images[i] for i in idx], **generate_kwargs)
                for i, ref in zip(idx, got):
                    refs[i] = ref
        finally:
            self.vllm_engines = engines
        return refs

    def _record_dispatch(self, engine_index: int, request: dict) -> None:
        self._sampling_params = request["sampling_params"]
        self._dispatched[engine_index] += request["num_samples"]
        self.dispatch_log.append((request["prompt"], engine_index))

    def dispatched(self) -> list[int]:
        """Rollout samples sent to each engine in the current step so far."""
        return list(self._dispatched)

    # ------------------------------------------------------------------ snapshots
    def save_snapshots(self, directory: str | Path) -> list[str]:
        """Every engine's cache to directory/engine{i}.snap (a path all engines can reach;
        absolute, since the engine actors do not share the trainer's working folder)."""
        d = Path(directory).resolve()
        d.mkdir(parents=True, exist_ok=True)
        paths = [str(d / f"engine{i}.snap") for i in range(len(self.vllm_engines))]
        ray.get([e.srt_save_snapshot.remote(p) for e, p in zip(self.vllm_engines, paths)])
        (d / "engines.txt").write_text(f"{len(self.vllm_engines)}\n")
        return paths

    def load_snapshots(self, directory: str | Path) -> int:
        """Restore the caches saved by save_snapshots; returns how many engines got theirs
        (0: the directory is missing). A group resumed with another number of engines loads
        engine i's snapshot into engine i for every i both groups have: rendezvous homes move
        only the prompts of an added engine (to it) or of a removed last engine (away from
        it), so every other prompt finds its tree where it was (docs/openrlhf.md, "Adding
        or removing engines")."""
        d = Path(directory).resolve()
        meta = d / "engines.txt"
        if not meta.is_file():
            return 0
        saved = int(meta.read_text().split()[0])
        shared = min(saved, len(self.vllm_engines))
        if saved != len(self.vllm_engines):
            log.warning("SRT: snapshots of %d engines, %d engines now: engines 0..%d resume "
                        "warm; prompts whose home moved start cold", saved,
                        len(self.vllm_engines), shared - 1)
        ray.get([e.srt_load_snapshot.remote(str(d / f"engine{i}.snap"))
                 for i, e in enumerate(self.vllm_engines[:shared])])
        return shared


class _DispatchView:
    """One engine as OpenRLHF's dispatch sees it: load queries pass through; each
    `generate_responses.remote(**request)` is recorded on the generator, then sent."""

    def __init__(self, engine, index: int, generator: SRTSamplesGenerator):
        self._engine, self._index, self._gen = engine, index, generator
        self.get_num_unfinished_requests = engine.get_num_unfinished_requests
        self.generate_responses = self

    def remote(self, **request):
        self._gen._record_dispatch(self._index, request)
        return self._engine.generate_responses.remote(**request)
