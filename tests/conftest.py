"""Shared test helpers: deadlines instead of sleeps, and the CI rule that a
missing dependency fails a test rather than skipping it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() == "true"


def local_cluster_only(is_local: bool, what: str) -> None:
    """Some promises are the dev cluster's own (its state directory, audit log).
    CI always runs on the dev cluster, so there a missing one is a failure."""
    if not is_local:
        unavailable(f"{what} needs the local dev cluster (--cluster=local)")


def unavailable(message: str) -> None:
    """A test's cluster or S3 server is missing: fail in CI, skip on a laptop."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing dependency fails, it never skips)")
    pytest.skip(message)


def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
