"""Start and stop the dev cluster's background processes.

Called by `devcluster.cluster` and `devcluster.s3server`. Each process runs in a
session (and so a process group) of its own, so stopping it also stops anything
it spawned. A process is remembered by pid *and* start time, so a recycled pid
never gets a signal meant for a process that is long gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Process:
    name: str
    pid: int
    started: int  # kernel start time (clock ticks since boot), from /proc/<pid>/stat
    log: str

    def alive(self) -> bool:
        return _start_time(self.pid) == self.started


def start(
    name: str,
    argv: Sequence[str | os.PathLike[str]],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    tie_to_parent: bool = False,
) -> Process:
    """Start `argv` in the background with output to `log`.

    With `tie_to_parent`, the kernel sends SIGTERM when the caller dies, so a
    killed test session cannot leave a cluster behind.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [os.fspath(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent if tie_to_parent else None,
        )
    return Process(name=name, pid=proc.pid, started=_start_time(proc.pid) or 0, log=str(log))


def stop(process: Process, *, timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever of it is left after `timeout`."""
    if process.alive():
        _signal_group(process.pid, signal.SIGTERM)
        if not _wait_gone(process, timeout):
            _signal_group(process.pid, signal.SIGKILL)
            _wait_gone(process, 5)
    _reap(process.pid)


def kill(process: Process, *, timeout: float = 5.0) -> None:
    """SIGKILL the process group at once: a crash, with no chance to clean up."""
    if process.alive():
        _signal_group(process.pid, signal.SIGKILL)
        _wait_gone(process, timeout)
    _reap(process.pid)


def _wait_gone(process: Process, timeout: float) -> bool:
    """Wait for the leader and every member of its group to exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(process.pid)
        if not process.alive() and not _group_exists(process.pid):
            return True
        time.sleep(0.05)
    return False


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_port() -> int:
    """A loopback port that was free a moment ago (the caller binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: str | Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    return ""


def start_time(pid: int) -> int | None:
    """The kernel start time of `pid`, or None if it is gone: with the pid, a process's identity."""
    return _start_time(pid)


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so split after its ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited; only the reaping is missing
        return None
    return int(fields[19])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
