"""Two replicas of the operator and one Lease (issue #10, item 5): only the leader
reconciles; when it stops, or dies, the other takes over and finishes the work.

The replicas run as processes on the host against the dev cluster (kwok nodes), with
`--leader-elect`, so each handover is timed precisely and the leader can be SIGKILLed.
tests/e2e/test_real_traffic.py does the same with the installed Deployment's Pods on
the real node. The figures are printed (`-s` shows them).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from modelreg.devcluster import processes
from tests.conftest import wait_for
from tests.e2e.conftest import S3, Cluster, Operator, StartOperator
from tests.e2e.invariants import Invariants
from tests.e2e.registry import (
    apply,
    serve_first_version,
    set_stage,
    upload,
    version_manifest,
    wait_replicas,
    wait_serving,
    wait_stage,
)
from tests.e2e.test_observability import scrape, value

LEASE = "modelreg-operator"
LEASE_SECONDS = 15  # leading.Settings' default, client-go's
RETRY_SECONDS = 2


@dataclass
class Replica:
    """One `modelreg run --leader-elect`, and its metrics endpoint."""

    operator: Operator
    metrics_port: int

    def leads(self) -> bool:
        try:
            return value(scrape(self.metrics_port), "leader_election_master_status", name=LEASE) == 1
        except OSError:
            return False

    def reconciles(self) -> float:
        return value(scrape(self.metrics_port), "controller_runtime_reconcile_total")


StartReplica = Callable[[], Replica]


@pytest.fixture
def start_replica(namespace: str, start_operator: StartOperator) -> StartReplica:
    """A replica whose Lease is in the test's namespace."""

    def start() -> Replica:
        port = processes.free_port()
        op = start_operator("--metrics-bind-address", f"127.0.0.1:{port}",
                            "--leader-elect", "--leader-election-namespace", namespace)  # fmt: skip
        return Replica(op, port)

    return start


def lease(kube: Cluster, namespace: str) -> dict[str, Any]:
    return dict(kube.get_json("lease", LEASE, "-n", namespace)["spec"])


def acquired_at(spec: dict[str, Any]) -> float:
    """The Lease's acquireTime (microseconds) as a Unix time."""
    return datetime.datetime.fromisoformat(spec["acquireTime"].replace("Z", "+00:00")).timestamp()


def leader_of(a: Replica, b: Replica) -> tuple[Replica, Replica]:
    """(leader, follower) once exactly one of the two leads."""

    def one() -> tuple[Replica, Replica] | None:
        la, lb = a.leads(), b.leads()
        return (a, b) if la and not lb else (b, a) if lb and not la else None

    return wait_for(one, timeout=30, what="exactly one replica to lead")


def test_only_the_leader_reconciles_and_a_follower_takes_over_a_stopped_one(
    kube: Cluster, s3: S3, namespace: str, start_replica: StartReplica, invariants: Invariants
) -> None:
    """SIGTERM (a rolling update, `kubectl delete pod`): the leader finishes what it
    is doing and releases the Lease, and the follower takes over at its next poll,
    long before the lease would have expired."""
    a, b = start_replica(), start_replica()
    leader, follower = leader_of(a, b)
    held = lease(kube, namespace)
    assert held["leaseDurationSeconds"] == LEASE_SECONDS
    serve_first_version(kube, s3, namespace)
    assert leader.reconciles() > 0
    assert follower.reconciles() == 0, "a follower reconciled"
    # A standby queues nothing (its workqueue_depth would otherwise alert forever).
    standby = scrape(follower.metrics_port)
    assert value(standby, "workqueue_adds_total") == value(standby, "workqueue_depth") == 0

    # Version 2 asks for Production; the leader is stopped while it switches.
    v2 = upload(s3)
    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=v2.uri, sha256=v2.sha256,
                                            stage="Staging"))  # fmt: skip
    wait_stage(kube, namespace, "m-2", "Staging", timeout=60)
    set_stage(kube, namespace, "m-2", "Production")
    stopped = time.time()
    leader.operator.stop()  # SIGTERM, and waits for the process to end
    ended = time.time()
    wait_for(follower.leads, timeout=LEASE_SECONDS, what="the follower to lead")
    spec = lease(kube, namespace)
    takeover = acquired_at(spec) - stopped
    print(f"\ntakeover after SIGTERM: {takeover:.2f}s after the signal "
          f"(the old leader took {ended - stopped:.2f}s to finish; lease {LEASE_SECONDS}s)")  # fmt: skip
    assert spec["holderIdentity"] != held["holderIdentity"]
    # Released, not expired: within two polls of the old leader's end.
    assert acquired_at(spec) - ended < 2 * RETRY_SECONDS + 1, spec
    wait_stage(kube, namespace, "m-2", "Production", timeout=60)
    wait_serving(kube, namespace, "m", "2")
    wait_replicas(kube, namespace, "m-2", 2)
    wait_stage(kube, namespace, "m-1", "Archived", timeout=30)
    assert "released the lease" in leader.operator.log()


def test_a_follower_takes_over_a_dead_leader_within_the_lease(
    kube: Cluster, s3: S3, namespace: str, start_replica: StartReplica, invariants: Invariants
) -> None:
    """SIGKILL (a crash, an OOM kill, a lost node): nobody releases the Lease; the
    follower takes over once it has gone unrenewed for its duration, and finishes
    the rollback that was asked for while no replica led."""
    a, b = start_replica(), start_replica()
    serve_first_version(kube, s3, namespace)
    v2 = upload(s3)
    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=v2.uri, sha256=v2.sha256,
                                            stage="Staging"))  # fmt: skip
    wait_stage(kube, namespace, "m-2", "Staging", timeout=60)
    leader, follower = leader_of(a, b)
    renewed = lease(kube, namespace)["renewTime"]
    killed = time.time()
    leader.operator.kill()
    set_stage(kube, namespace, "m-2", "Production")  # asked while nobody leads
    time.sleep(LEASE_SECONDS / 2)
    assert not follower.leads(), "the follower took over a lease that had not expired"
    assert wait_stage(kube, namespace, "m-1", "Production", timeout=1)  # nothing moved without a leader
    wait_for(follower.leads, timeout=LEASE_SECONDS + 2 * RETRY_SECONDS, what="the follower to lead")
    takeover = acquired_at(lease(kube, namespace)) - killed
    print(f"\ntakeover after SIGKILL: {takeover:.2f}s (lease {LEASE_SECONDS}s, last renewal {renewed})")
    assert takeover <= LEASE_SECONDS + 2 * RETRY_SECONDS
    wait_stage(kube, namespace, "m-2", "Production", timeout=60)
    wait_serving(kube, namespace, "m", "2")
