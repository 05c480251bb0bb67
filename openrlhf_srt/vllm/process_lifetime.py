"""Engine processes and scratch folders that end with the process that started them.

vLLM starts an engine's processes with `spawn`: the caller starts `VLLM::EngineCore`, which
starts one `VLLM::Worker` per rank (on CPU; with one rank on a GPU the worker may live inside
EngineCore). A worker exits when its EngineCore does (vLLM's death pipe), but nothing
watches the caller: a SIGKILLed trainer left EngineCore and its worker alive under PID 1,
and its weight folder in /dev/shm. Two rules fix that:

- `engine.start_engine` names the starting process, the owner, in `OWNER_ENV` for the
  processes it spawns. Every worker extension of ours derives from `EngineLifetimeExtension`,
  so every engine worker imports this module, and the import starts `exit_with_owner`: a
  thread that waits for the owner to exit, then removes the owner's scratch folders and
  ends the engine (SIGTERM to its outermost process, vLLM's own shutdown; SIGKILL after
  `TERM_GRACE_SECONDS` to whatever is left, this worker last). PR_SET_PDEATHSIG cannot do
  this: it would have to be set inside EngineCore, whose parent is the owner, and none of
  our code runs there.
- Scratch folders (`owned_tempdir`) carry their owner's pid and start time in their name, so
  a new run removes those whose owner is gone (`remove_orphaned_tempdirs`), and never one
  of a live process.

A process is named by pid and start time (`ProcessId`, from /proc), so a reused pid is never
taken for the owner. Without /proc (not Linux) nothing is watched or removed.
"""

from __future__ import annotations

import logging
import os
import re
import select
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

OWNER_ENV = "OPENRLHF_SRT_ENGINE_OWNER"  # "<pid>-<start>" of the process that started the engine
TERM_GRACE_SECONDS = 10.0  # from SIGTERM (vLLM's shutdown) to SIGKILL of an engine process
POLL_SECONDS = 1.0  # owner checks where pidfd_open is missing
TEMPDIR_PREFIX = "openrlhf_srt_"
# openrlhf_srt_<what>_<pid>-<start>_<random>: a scratch folder and the process that owns it
_TEMPDIR_RE = re.compile(rf"^{TEMPDIR_PREFIX}[a-z]+_(\d+-\d+)_")


@dataclass(frozen=True)
class ProcessId:
    """A process: its pid and its start time (clock ticks after boot), which together name
    it for the machine's uptime, whatever pid reuse happens."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> ProcessId | None:
        """The running process `pid`, or None (gone, a zombie, or no /proc)."""
        stat = _stat(pid)
        if stat is None or stat[0] in "ZX":  # a zombie has exited: only its exit code is left
            return None
        return cls(pid, int(stat[19]))

    @classmethod
    def current(cls) -> ProcessId | None:
        return cls.of(os.getpid())

    @classmethod
    def parse(cls, text: str) -> ProcessId | None:
        m = re.fullmatch(r"(\d+)-(\d+)", text or "")
        return cls(int(m.group(1)), int(m.group(2))) if m else None

    def alive(self) -> bool:
        return ProcessId.of(self.pid) == self

    def parent(self) -> ProcessId | None:
        stat = _stat(self.pid)
        return ProcessId.of(int(stat[1])) if stat is not None and self.alive() else None

    def __str__(self) -> str:
        return f"{self.pid}-{self.start}"


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state, ppid, ...; field n is index n - 3)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # the name in parentheses may hold spaces


# ---------------------------------------------------------------------------- scratch folders

def scratch_root() -> Path:
    """Where scratch folders go: tmpfs (/dev/shm) when there is one."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() else Path(tempfile.gettempdir())


def owned_tempdir(what: str, root: Path | None = None) -> Path:
    """A new scratch folder `openrlhf_srt_<what>_<owner>_<random>` owned by this process."""
    if not re.fullmatch(r"[a-z]+", what):
        raise ValueError(f"scratch folder kind must be lower-case letters, got {what!r}")
    me = ProcessId.current()
    owner = str(me) if me is not None else f"{os.getpid()}-0"
    return Path(tempfile.mkdtemp(prefix=f"{TEMPDIR_PREFIX}{what}_{owner}_",
                                 dir=root or scratch_root()))


def tempdir_owner(path: Path) -> ProcessId | None:
    m = _TEMPDIR_RE.match(Path(path).name)
    return ProcessId.parse(m.group(1)) if m else None


def remove_tempdirs_of(owner: ProcessId, root: Path | None = None) -> list[Path]:
    """Remove the scratch folders of `owner`; returns those removed."""
    return _remove_where(lambda o: o == owner, root)


def remove_orphaned_tempdirs(root: Path | None = None) -> list[Path]:
    """Remove the scratch folders whose owner is no longer running; returns those removed.
    Nothing is removed where /proc cannot tell (the owner might be alive)."""
    if ProcessId.current() is None:
        return []
    return _remove_where(lambda o: not o.alive(), root)


def _remove_where(dead, root: Path | None) -> list[Path]:
    removed = []
    for path in sorted((root or scratch_root()).glob(f"{TEMPDIR_PREFIX}*")):
        owner = tempdir_owner(path)
        if owner is not None and dead(owner):
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():  # another user's folder may not be ours to remove
                removed.append(path)
    return removed


# ---------------------------------------------------------------------------- engine processes

def owner_environment() -> dict[str, str]:
    """Environment naming this process the owner of the engine processes it spawns now."""
    me = ProcessId.current()
    return {OWNER_ENV: str(me)} if me is not None else {}


class EngineLifetimeExtension:
    """vLLM worker extension of every engine `engine.start_engine` starts (our other
    extensions derive from it): importing this module in the worker starts
    `exit_with_owner`. It adds no method."""


def engine_processes(owner: ProcessId) -> list[ProcessId]:
    """This process and its ancestors below `owner`, innermost first (a worker, then its
    EngineCore); only this process where `owner` is not an ancestor."""
    me = ProcessId.current()
    chain, p = [me], me.parent() if me is not None else None
    while p is not None and p != owner:
        chain.append(p)
        p = p.parent()
    return chain if p == owner else [me]


def exit_with_owner(grace: float = TERM_GRACE_SECONDS) -> threading.Thread | None:
    """Start the thread that ends this engine when the process named in `OWNER_ENV` exits;
    None where no owner is named (or it is this process) or /proc is missing."""
    owner = ProcessId.parse(os.environ.get(OWNER_ENV, ""))
    me = ProcessId.current()
    if owner is None or me is None or owner.pid == me.pid:
        return None
    chain = engine_processes(owner)
    thread = threading.Thread(target=_end_with_owner, args=(owner, chain, grace), daemon=True,
                              name="openrlhf_srt-exit-with-owner")
    thread.start()
    return thread


def _wait_for_exit(owner: ProcessId) -> None:
    try:
        fd = os.pidfd_open(owner.pid)
    except (AttributeError, OSError):  # no pidfd (old kernel, not Linux) or already gone
        while owner.alive():
            time.sleep(POLL_SECONDS)
        return
    try:
        if owner.alive():  # the pid still names the owner: the fd watches the right process
            select.select([fd], [], [])
    finally:
        os.close(fd)


def _end_with_owner(owner: ProcessId, chain: list[ProcessId], grace: float) -> None:
    _wait_for_exit(owner)
    log.warning("openrlhf-srt: the process that started this engine (%s) exited; ending the "
                "engine's processes %s", owner, [p.pid for p in chain])
    remove_tempdirs_of(owner)
    _signal(chain[-1], signal.SIGTERM)  # vLLM's shutdown: EngineCore stops its workers too
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:  # this thread ends with its process when that works
        if len(chain) > 1 and not any(p.alive() for p in chain[1:]):
            break
        time.sleep(0.1)
    for p in reversed(chain):  # what is left: the outermost first, this process last
        _signal(p, signal.SIGKILL)


def _signal(p: ProcessId, sig: int) -> None:
    if p.alive():  # never a process that took over the pid
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass


exit_with_owner()  # in an engine worker (OWNER_ENV names another process): end with it
