"""Engine processes and scratch folders end with the process that started them
(openrlhf_srt/vllm/process_lifetime.py): a chain of plain Python processes stands in for
trainer -> EngineCore -> worker; tests/vllm/test_engine.py does the same with a real engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from openrlhf_srt.vllm.process_lifetime import (
    OWNER_ENV,
    ProcessId,
    owned_tempdir,
    remove_orphaned_tempdirs,
    remove_tempdirs_of,
    tempdir_owner,
)

GONE_WITHIN_SECONDS = 20  # the watchdog wakes at once (pidfd); the rest is process start-up


def wait_gone(processes, seconds=GONE_WITHIN_SECONDS) -> list:
    """The processes still running after `seconds` (none, as soon as all are gone)."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [p for p in processes if p.alive()]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def test_process_id_names_a_running_process_and_not_a_reused_pid():
    me = ProcessId.current()
    assert me is not None and me.pid == os.getpid() and me.alive()
    assert ProcessId.parse(str(me)) == me
    assert not ProcessId(me.pid, me.start + 1).alive()  # same pid, another process
    assert me.parent() == ProcessId.of(os.getppid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid names no process
    assert ProcessId.of(child.pid) is None
    assert ProcessId.parse("12x") is None and ProcessId.parse("") is None


def test_orphaned_scratch_folders_are_removed_and_live_ones_kept(tmp_path):
    me = ProcessId.current()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    theirs = ProcessId.of(child.pid)
    mine = owned_tempdir("weights", root=tmp_path)
    assert tempdir_owner(mine) == me
    live_other = tmp_path / f"openrlhf_srt_weights_{theirs}_b"
    reused_pid = tmp_path / f"openrlhf_srt_weights_{me.pid}-{me.start + 1}_c"  # pid reused
    unowned = tmp_path / "openrlhf_srt_weights_d"  # no owner in the name: cannot prove
    for p in (live_other, reused_pid, unowned):
        p.mkdir()
    child.kill()
    child.wait()
    dead = tmp_path / f"openrlhf_srt_weights_{theirs}_e"  # same name pattern, owner now gone
    live_other.rename(dead)
    (dead / "model.safetensors").write_bytes(b"x" * 1024)
    removed = remove_orphaned_tempdirs(root=tmp_path)
    assert sorted(removed) == sorted([dead, reused_pid])
    assert mine.is_dir() and unowned.is_dir() and not dead.exists()
    assert remove_tempdirs_of(me, root=tmp_path) == [mine] and not mine.exists()


# trainer -> "EngineCore" -> "worker": the worker imports process_lifetime (as every engine
# worker does through our worker extension), the EngineCore stand-in only sleeps.
_WORKER = "import openrlhf_srt.vllm.process_lifetime, time; time.sleep(600)"
_CORE = textwrap.dedent(f"""
    import subprocess, sys, time
    w = subprocess.Popen([sys.executable, "-c", {_WORKER!r}])
    print(w.pid, flush=True)
    time.sleep(600)
""")
_OWNER = textwrap.dedent(f"""
    import os, subprocess, sys, time
    from openrlhf_srt.vllm.process_lifetime import owned_tempdir, owner_environment
    folder = owned_tempdir("weights")
    core = subprocess.Popen([sys.executable, "-c", {_CORE!r}], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, **owner_environment()))
    worker = core.stdout.readline().strip()
    time.sleep(3)  # the worker has imported the module and started its watchdog
    print(core.pid, worker, folder, flush=True)
    time.sleep(600)
""")


def test_a_killed_owner_takes_its_engine_processes_and_folders_with_it():
    owner = subprocess.Popen([sys.executable, "-c", _OWNER], stdout=subprocess.PIPE, text=True,
                             env={k: v for k, v in os.environ.items() if k != OWNER_ENV})
    spawned: list[ProcessId] = []
    try:
        core_pid, worker_pid, folder = owner.stdout.readline().split()
        core, worker = ProcessId.of(int(core_pid)), ProcessId.of(int(worker_pid))
        assert core is not None and worker is not None and os.path.isdir(folder)
        spawned = [core, worker]
        assert worker.parent() == core and core.parent() == ProcessId.of(owner.pid)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        assert wait_gone(spawned) == []
        assert not os.path.exists(folder)
    finally:
        owner.kill()
        owner.wait()
        for p in spawned:  # survivors of a failed check
            if p.alive():
                os.kill(p.pid, signal.SIGKILL)


def test_an_unnamed_or_self_owner_starts_no_watchdog(monkeypatch):
    from openrlhf_srt.vllm import process_lifetime

    monkeypatch.delenv(OWNER_ENV, raising=False)
    assert process_lifetime.exit_with_owner() is None
    monkeypatch.setenv(OWNER_ENV, str(ProcessId.current()))
    assert process_lifetime.exit_with_owner() is None
