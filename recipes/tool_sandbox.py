"""The ReTool recipe's tool sandbox: model-written Python, run in a confined child process.

    out = run_python("print(6 * 7)")          # "42\n"; a failure's traceback; or why it stopped

Each run gets a fresh private folder (the child's working folder, HOME and TMPDIR; removed
afterwards). The child is `python -I tool_sandbox.py SETTINGS`, which confines itself and
only then execs the interpreter on the code (`main.py` in the folder):

- resource limits: CPU seconds (RLIMIT_CPU), address space (RLIMIT_AS), the size of any file
  it writes, its output included (RLIMIT_FSIZE), no core files;
- no new processes: a seccomp filter fails fork, vfork and clone without CLONE_THREAD
  with EPERM (threads are allowed), so a fork bomb stops at its first fork and nothing the
  code starts outlives it. RLIMIT_NPROC cannot do this: it counts every process of the
  user and is not enforced at all for root;
- no signals, ptrace or memory access to other processes (same filter; the trainer runs
  as the same user);
- where the kernel has Landlock (Linux 5.13 and later): no writes outside the folder;
- started as root: every capability dropped (bounding set included), so root's code
  cannot override file permissions, change owners or mount.

The parent waits for a wall-clock timeout, then kills the child. Output goes to unnamed
files (capped by the file-size limit), of which the last MAX_OUTPUT_CHARS come back.
Not blocked (docs/reliability.md): reading what the trainer's user can read, the network,
the folder's total size (each file is capped), and writes outside the folder on kernels
without Landlock.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

MAX_OUTPUT_CHARS = 2000
SETUP_FAILED = 126  # the child's exit status when it could not confine itself

# ---------------------------------------------------------------------- parent side


def _tail(f, chars: int) -> str:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - 4 * chars))  # UTF-8: at most 4 bytes a character
    return f.read().decode("utf-8", errors="replace")


def _remove(folder: str) -> None:
    """Remove the folder whatever the code did to its modes (links are not followed)."""
    for root, dirs, _ in os.walk(folder):
        for d in dirs:
            path = os.path.join(root, d)
            if not os.path.islink(path):
                os.chmod(path, 0o700)
    shutil.rmtree(folder, ignore_errors=True)


def run_python(code: str, timeout_s: float = 10.0, memory_mb: int = 1024,
               file_mb: int = 16) -> str:
    """Run `code` confined (module doc); return its stdout (and stderr when it failed), or
    the reason it stopped, at most MAX_OUTPUT_CHARS from the end."""
    folder = tempfile.mkdtemp(prefix="retool-")
    try:
        Path(folder, "main.py").write_text(code, encoding="utf-8")
        settings = {"folder": folder, "cpu_s": int(timeout_s) + 1,
                    "memory_bytes": memory_mb << 20, "file_bytes": file_mb << 20}
        env = {"PATH": "/usr/bin:/bin", "HOME": folder, "TMPDIR": folder, "LANG": "C.UTF-8",
               # numerical libraries start one thread per core unless told otherwise
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.Popen([sys.executable, "-I", __file__, json.dumps(settings)],
                                 cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=err, start_new_session=True)
            try:
                rc = p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                return f"Timeout: the code ran longer than {timeout_s:g} s"
            text = _tail(out, MAX_OUTPUT_CHARS)
            if rc:
                text += _tail(err, MAX_OUTPUT_CHARS)
    finally:
        _remove(folder)
    if rc < 0:
        name = signal.Signals(-rc).name
        why = {"SIGXCPU": " (CPU time limit)", "SIGKILL": " (memory or time limit)"}
        text += f"\nKilled by {name}{why.get(name, '')}"
    return text[-MAX_OUTPUT_CHARS:]


# ---------------------------------------------------------------------- child side

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, PR_CAP_AMBIENT = 24, 38, 22, 47
SECCOMP_MODE_FILTER = 2
CLONE_THREAD = 0x00010000


class SandboxError(RuntimeError):
    """The child could not confine itself; the code is not run."""


def _check(result: int, what: str) -> int:
    if result < 0:
        raise SandboxError(f"{what}: {os.strerror(ctypes.get_errno())}")
    return result


def _prctl(*args: int) -> None:
    _check(_libc.prctl(*[ctypes.c_ulong(a) for a in args]), f"prctl{args[:2]}")


def drop_capabilities() -> None:
    """Root without powers: bounding set, ambient and process capabilities all empty."""
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last + 1):
        _prctl(PR_CAPBSET_DROP, cap)
    _prctl(PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    _check(_libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()), "capset")


# Landlock (uapi/linux/landlock.h); its syscalls have one number on every architecture
_LANDLOCK_CREATE, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT = 444, 445, 446
_WRITE_FILE, _TRUNCATE = 1 << 1, 1 << 14
_WRITE_RIGHTS = sum(1 << b for b in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12))  # write, remove, make


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 without Landlock."""
    return max(0, _libc.syscall(_LANDLOCK_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1)))


def restrict_writes_to(folder: str) -> bool:
    """Landlock: writes (and creating, removing, renaming files) only under `folder` and to
    /dev/null. False where the kernel has no Landlock."""
    abi = landlock_abi()
    if abi < 1:
        return False
    handled = _WRITE_RIGHTS | (1 << 13 if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    attr = ctypes.c_uint64(handled)
    ruleset = _check(_libc.syscall(_LANDLOCK_CREATE, ctypes.byref(attr), ctypes.c_size_t(8),
                                   ctypes.c_uint32(0)), "landlock_create_ruleset")
    for path, access in ((folder, handled), ("/dev/null", handled & (_WRITE_FILE | _TRUNCATE))):
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            _check(_libc.syscall(_LANDLOCK_ADD_RULE, ruleset, 1,
                                 ctypes.byref(PathBeneath(access, fd)), 0),
                   f"landlock_add_rule({path})")
        finally:
            os.close(fd)
    _check(_libc.syscall(_LANDLOCK_RESTRICT, ruleset, 0), "landlock_restrict_self")
    os.close(ruleset)
    return True


# seccomp: per architecture, its audit id and the system call numbers the filter names
_ARCHES = {
    "x86_64": {"audit": 0xC000003E, "clone": 56, "clone3": 435,
               "deny": [57, 58, 101, 200, 310, 311, 424, 438],  # fork vfork ptrace tkill
               # process_vm_readv/writev pidfd_send_signal pidfd_getfd
               "own_pid": [62, 129, 234, 297]},  # kill rt_sigqueueinfo tgkill rt_tgsigqueueinfo
    "aarch64": {"audit": 0xC00000B7, "clone": 220, "clone3": 435,
                "deny": [117, 130, 270, 271, 424, 438],  # ptrace tkill process_vm_* pidfd_*
                "own_pid": [129, 138, 131, 240]},  # kill rt_sigqueueinfo tgkill rt_tgsigqueueinfo
}
_ALLOW, _KILL = 0x7FFF0000, 0x80000000
_EPERM, _ENOSYS = 0x00050000 | 1, 0x00050000 | 38  # SECCOMP_RET_ERRNO | errno


def seccomp_filter(own_pid: int, machine: str | None = None) -> list[tuple[int, int, int, int]]:
    """The BPF program (code, jt, jf, k): no new processes, no signals but to `own_pid`, no
    ptrace or memory access to others; everything else allowed. Another architecture's
    calls (i386 or x32 on x86_64) are refused."""
    a = _ARCHES.get(machine or platform.machine())
    if a is None:
        raise SandboxError(f"no seccomp filter for {platform.machine()} (x86_64, aarch64)")
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    nr, arch, arg0 = 0, 4, 16  # offsets in struct seccomp_data (arg0: its low 32 bits)
    prog = [(ld, 0, 0, arch), (jeq, 1, 0, a["audit"]), (ret, 0, 0, _KILL),
            (ld, 0, 0, nr), (jge, 0, 1, 0x40000000), (ret, 0, 0, _EPERM)]
    for call in a["deny"]:
        prog += [(jeq, 0, 1, call), (ret, 0, 0, _EPERM)]
    prog += [(jeq, 0, 1, a["clone3"]), (ret, 0, 0, _ENOSYS)]  # libc falls back to clone
    prog += [(jeq, 0, 4, a["clone"]), (ld, 0, 0, arg0), (jset, 0, 1, CLONE_THREAD),
             (ret, 0, 0, _ALLOW), (ret, 0, 0, _EPERM)]
    for call in a["own_pid"]:  # the first argument is the target process
        prog += [(jeq, 0, 4, call), (ld, 0, 0, arg0), (jeq, 0, 1, own_pid),
                 (ret, 0, 0, _ALLOW), (ret, 0, 0, _EPERM)]
    return prog + [(ret, 0, 0, _ALLOW)]


def install_seccomp(prog: list[tuple[int, int, int, int]]) -> None:
    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                    ("k", ctypes.c_uint32)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]

    insns = (Insn * len(prog))(*[Insn(*i) for i in prog])
    fprog = Prog(len(prog), insns)  # alive until the kernel has copied it
    _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


def confine(settings: dict) -> None:
    """Limits, capabilities, Landlock, seccomp: what the child does before it execs."""
    for res, value in ((resource.RLIMIT_CPU, settings["cpu_s"]),
                       (resource.RLIMIT_AS, settings["memory_bytes"]),
                       (resource.RLIMIT_FSIZE, settings["file_bytes"]),
                       (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (value, value))
    if os.geteuid() == 0:
        drop_capabilities()
    _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    restrict_writes_to(settings["folder"])
    install_seccomp(seccomp_filter(os.getpid()))


if __name__ == "__main__":
    try:
        confine(json.loads(sys.argv[1]))
    except (SandboxError, OSError, ValueError) as e:
        print(f"tool sandbox: could not confine the code, so it was not run ({e})",
              file=sys.stderr)
        sys.exit(SETUP_FAILED)
    os.execv(sys.executable, [sys.executable, "-I", "main.py"])
