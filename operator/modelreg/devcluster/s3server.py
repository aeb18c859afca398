"""A real S3-compatible server (versitygw, POSIX backend) on a loopback port.

Called by `devcluster.cluster` for the demo and by the test fixtures, which also
stop and restart it to show that the operator rides out a storage outage. The
data and metadata directories survive a restart; only `down` removes them.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from modelreg.devcluster import processes


@dataclass(frozen=True)
class S3Config:
    port: int
    access_key: str
    secret_key: str
    region: str
    data_dir: str
    meta_dir: str
    log: str
    # Loopback unless a real node's Pods must reach it (they cannot reach the host's 127.0.0.1).
    host: str = "127.0.0.1"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"


def new_config(directory: Path, *, host: str = "127.0.0.1") -> S3Config:
    """`host` is the address it listens on; another than loopback exposes it to
    whatever reaches that address (the tests use the real node's, for its Pods)."""
    return S3Config(
        port=processes.free_port(),
        access_key="modelreg" + secrets.token_hex(4),
        secret_key=secrets.token_urlsafe(24),
        region="us-east-1",
        data_dir=str(directory / "data"),
        meta_dir=str(directory / "meta"),
        log=str(directory / "s3.log"),
        host=host,
    )


def start(config: S3Config, *, binary: Path, tie_to_parent: bool = False, timeout: float = 30) -> processes.Process:
    for d in (config.data_dir, config.meta_dir):
        Path(d).mkdir(parents=True, exist_ok=True)
    argv: list[str | os.PathLike[str]] = [
        binary,
        "--access", config.access_key,
        "--secret", config.secret_key,
        "--region", config.region,
        "--port", f"{config.host}:{config.port}",
        "--quiet",
        "posix",
        # Metadata (including stored checksums) in a sidecar directory, so the
        # server works on filesystems without user xattrs.
        "--sidecar", config.meta_dir,
        config.data_dir,
    ]  # fmt: skip
    proc = processes.start("s3", argv, log=Path(config.log), tie_to_parent=tie_to_parent)
    wait_listening(config.port, proc=proc, timeout=timeout, host=config.host)
    return proc


def wait_listening(port: int, *, proc: processes.Process, timeout: float, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"the S3 server exited at start:\n{processes.tail(proc.log)}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    processes.stop(proc)
    raise TimeoutError(f"the S3 server did not listen on {host}:{port} within {timeout:.0f}s")
