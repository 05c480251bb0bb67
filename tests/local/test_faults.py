"""Fault injection (docs/reliability.md): `train_local` runs in a subprocess and is SIGKILLed
mid-rollout, mid-weight-push and mid-checkpoint, each time resumed, and the run that comes
out must be the uninterrupted one: every step once in metrics.jsonl with the prompts the
seeded order gives it, the tree cache restored from the snapshot, no engine process and no
weight folder of a killed trainer left.

The kills land at exact points: `OPENRLHF_SRT_PAUSE_AT=<point>:<n>` makes the trainer print
a marker and wait the n-th time it reaches the point (openrlhf_srt/vllm/pause_points.py).
One run folder, four trainer processes (three killed, one that finishes): four engine
starts on the embedded model with the smallest settings of tests/local/test_local_run.py.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from openrlhf_srt.local.train_config import TrainConfig
from openrlhf_srt.local.trainer import prompt_indices
from openrlhf_srt.vllm.pause_points import PAUSE_ENV, PAUSED_MARKER
from openrlhf_srt.vllm.process_lifetime import scratch_root

pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.verifies]

REPO = Path(__file__).resolve().parents[2]
P, N, STEPS, POOL = 2, 2, 3, 6  # prompts per step, samples per prompt, steps, prompts
ARGS = ["--prompts", f"builtin:{POOL}", "--steps", str(STEPS), "--prompts_per_step", str(P),
        "--samples_per_prompt", str(N), "--max_new_tokens", "24", "--micro_batch_size", "4",
        "--lr", "1e-4", "--save_every", "1", "--wandb", "false", "--tensorboard", "false",
        "--srt.max_draft_tokens", "4",
        "--srt.runahead", "0"]  # run-ahead off: the cache holds exactly P x N sequences a step
START_SECONDS = 420  # a trainer and its engine starting on a busy 2-core machine
GONE_SECONDS = 30  # the engine's watchdog: SIGTERM at once, SIGKILL after its grace


class Trainer:
    """One `train_local` process; its output is read line by line in a thread."""

    def __init__(self, run_dir: Path, *, resume: bool, pause: str | None = None):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop(PAUSE_ENV, None)
        if pause:
            env[PAUSE_ENV] = pause
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openrlhf_srt.cli.train_local", "--run_dir", str(run_dir),
             *ARGS, "--resume", str(resume).lower()],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, marker: str, seconds: float = START_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=1.0)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if line.startswith(marker):
                return
        pytest.fail(f"no {marker!r} from the trainer (exit {self.proc.poll()}); its output:\n"
                    + "\n".join(self.lines[-40:]))

    def finish(self, seconds: float = START_SECONDS) -> str:
        self.proc.wait(timeout=seconds)
        while (line := self._q.get(timeout=5)) is not None:
            self.lines.append(line)
        out = "\n".join(self.lines)
        assert self.proc.returncode == 0, out[-4000:]
        return out

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def weight_folders_of(pid: int) -> list[Path]:
    return sorted(scratch_root().glob(f"openrlhf_srt_weights_{pid}-*"))


def kill_at(run_dir: Path, pause: str, descendants, survivors, *, resume: bool,
            check_paused) -> int:
    """Start a trainer, let it reach `pause`, SIGKILL it, and check that its engine processes
    and weight folders went with it; returns its pid."""
    t = Trainer(run_dir, resume=resume, pause=pause)
    engine: list = []
    try:
        t.wait_for(f"{PAUSED_MARKER} {pause.replace(':', ' ')}")
        engine = descendants(t.proc.pid)
        print(f"{pause}: engine processes", [cmd for _, cmd in engine])
        assert any(cmd.startswith("VLLM::EngineCore") for _, cmd in engine)
        check_paused(t.proc.pid)
        t.kill()
        assert survivors(engine, GONE_SECONDS) == [], f"orphans after {pause}"
        assert weight_folders_of(t.proc.pid) == []
        return t.proc.pid
    finally:
        if t.proc.poll() is None:
            t.kill()
        survivors(engine, 0)  # a check failed before the wait: nothing left behind


def test_killed_three_times_and_resumed_the_run_is_the_uninterrupted_one(tmp_path, descendants,
                                                                          survivors):
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints"

    def nothing(pid):
        pass

    def pushing(pid):  # the weight folder is written and not yet loaded
        assert len(weight_folders_of(pid)) == 1

    def checkpointing(pid):  # the model is in latest.tmp; the checkpoint before step 1 stays
        assert (ckpt / "latest.tmp" / "model").is_dir()
        assert json.loads((ckpt / "latest/state.json").read_text())["next_step"] == 1

    killed = [
        # step 0 done and checkpointed; step 1's requests in the engine
        kill_at(run_dir, "rollout:2", descendants, survivors, resume=False, check_paused=nothing),
        # resumed at step 1: killed while pushing step 1's weights
        kill_at(run_dir, "weight_push:1", descendants, survivors, resume=True, check_paused=pushing),
        # resumed at step 1 again: step 1 trained and logged, killed writing its checkpoint
        kill_at(run_dir, "checkpoint:1", descendants, survivors, resume=True, check_paused=checkpointing),
    ]
    last = Trainer(run_dir, resume=True)
    out = last.finish()
    assert "resuming at step 1" in out and "latest.tmp" in out  # the torn save dropped

    # every step once, with the prompts of the uninterrupted run's seeded order
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(STEPS))
    cfg = TrainConfig(prompts_per_step=P, seed=0)
    assert [r["prompts"] for r in rows] == [prompt_indices(cfg, POOL, s) for s in range(STEPS)]
    assert sorted(i for r in rows for i in r["prompts"]) == list(range(POOL))  # one pass
    # the cache came back from the snapshot of step 0: after each step it holds every
    # sample so far, as in a run that was never killed
    assert rows[1]["restored_cache"]["sequences"] == P * N
    assert [r["srt/cache_sequences"] for r in rows] == [P * N * (s + 1) for s in range(STEPS)]
    state = json.loads((ckpt / "latest/state.json").read_text())
    assert state["next_step"] == STEPS
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest"]
    for pid in killed:
        assert weight_folders_of(pid) == []
