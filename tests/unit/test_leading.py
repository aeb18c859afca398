"""Leader election's own parts (leading.py); the handovers themselves run against a
real API server in tests/e2e/test_leader_election.py and test_real_traffic.py."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import pytest
from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException
from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord

from modelreg import cli, leading


class Leases:
    """Stands in for CoordinationV1Api: counts calls, fails as told."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.error = error

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> Any:
        self.calls.append("read")
        if self.error is not None:
            raise self.error
        return None

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any, **_: Any) -> Any:
        self.calls.append("replace")
        return body


def election(lost: list[bool]) -> leading.Election:
    settings = leading.Settings(namespace="ns", identity="me")
    return leading.Election(settings, ApiClient(), on_lost=lambda: lost.append(True))


def test_a_leader_that_stops_renewing_exits_once() -> None:
    lost: list[bool] = []
    e = election(lost)
    e._started()
    e._stopped()
    e._stopped()  # the library's callback, then the thread's end: one exit
    assert lost == [True]


def test_a_released_lease_is_not_a_lost_one() -> None:
    lost: list[bool] = []
    e = election(lost)
    e._released.set()
    e._stopped()
    assert lost == []


def test_the_campaign_ending_on_an_unexpected_error_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    lost: list[bool] = []
    e = election(lost)

    def broken() -> None:
        e._started()
        raise RuntimeError("a bug in the renew loop")

    monkeypatch.setattr(e._election, "run", broken)
    e._campaign()
    assert lost == [True], "a leader whose renewing thread died went on reconciling"


def test_nothing_is_written_to_the_lease_once_released() -> None:
    released_flag = threading.Event()
    leases = Leases()
    lock = leading._Lock("l", "ns", "me", leading._TimedLeases(leases, timeout=1), released_flag)
    lock.lease_reference = type("Lease", (), {"spec": None})()
    released_flag.set()
    record = LeaderElectionRecord("me", "15", "2026-11-30 10:00:00", "2026-11-30 10:00:00")
    assert lock.update("l", "ns", record) is False
    assert lock.create("l", "ns", record) is False
    assert leases.calls == []


def test_any_failure_of_a_lease_call_reaches_the_library_as_an_api_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The library catches ApiException only; a timeout raised as anything else would
    end its thread. Each cause is logged once, not at every poll."""
    leases = leading._TimedLeases(Leases(error=TimeoutError("read timed out")), timeout=1)
    with caplog.at_level(logging.WARNING, logger="modelreg.leading"):
        for _ in range(3):
            with pytest.raises(ApiException):
                leases.read("l", "ns")
    assert [r.getMessage() for r in caplog.records] == ["Lease call failed: read timed out"]


def test_forbidden_is_logged_and_not_found_is_not(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modelreg.leading"):
        for status, reason in ((404, "Not Found"), (403, "Forbidden")):
            leases = leading._TimedLeases(Leases(error=ApiException(status=status, reason=reason)), timeout=1)
            with pytest.raises(ApiException):
                leases.read("l", "ns")
    assert [r.getMessage() for r in caplog.records] == ["Lease call failed: 403 Forbidden"]


def test_leader_election_outside_a_pod_needs_the_lease_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--leader-elect"]) == 2
    assert "--leader-election-namespace" in capsys.readouterr().err


def test_the_identity_names_the_host_and_is_unique() -> None:
    settings = leading.Settings(namespace="ns")
    first, second = settings.who(), settings.who()
    assert first != second
    assert first.split("_")[0] == socket.gethostname()
