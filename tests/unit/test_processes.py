"""Background processes stop with their whole group, and a stale pid is never signalled."""

from __future__ import annotations

import sys
from pathlib import Path

from modelreg.devcluster import processes
from tests.conftest import wait_for


def test_stop_kills_the_process_and_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time; "
        f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pidfile)!r}, 'w').write(str(c.pid)); time.sleep(60)"
    )
    proc = processes.start("parent", [sys.executable, "-c", script], log=tmp_path / "log", tie_to_parent=True)
    written = wait_for(lambda: pidfile.read_text() if pidfile.exists() else None, timeout=10, what="the child's pid")
    child_pid = int(written)
    assert proc.alive()

    processes.stop(proc, timeout=5)

    assert not proc.alive()
    assert processes._start_time(child_pid) is None


def test_a_recorded_process_with_another_start_time_is_not_alive(tmp_path: Path) -> None:
    proc = processes.start("sleeper", [sys.executable, "-c", "import time; time.sleep(30)"], log=tmp_path / "log")
    impostor = processes.Process(name="x", pid=proc.pid, started=proc.started + 1, log=proc.log)
    assert not impostor.alive()
    processes.stop(impostor)  # must not signal the real process
    assert proc.alive()
    processes.stop(proc)
    assert not proc.alive()


def test_free_port_is_a_loopback_port() -> None:
    assert 1024 <= processes.free_port() <= 65535
