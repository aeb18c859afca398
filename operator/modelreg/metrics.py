"""The operator's Prometheus metrics: every one is defined here, and served here.

Created once by `running` and handed to what records them: the work queue
(`QueueMetrics`), the workers in `handlers` (reconciles, and what a reconcile's
plan says: `observe_reconcile`), and the artifact `verifying` pool. Recording
never raises and never blocks on I/O; prometheus_client's values are
thread-safe, so the verifier's threads and the event loop record alike.

The names and labels of the first two groups are controller-runtime's (and
client-go's), so dashboards and alerts written for Go operators work unchanged.

Reconciles (label `controller`, always "registeredmodel"):
- `controller_runtime_reconcile_total{controller,result}`: counter; result is
  success, error, requeue (a retry with backoff: storage, a gate not known yet,
  a rollout under way) or requeue_after (unused here, kept at 0 as
  controller-runtime reports every result).
- `controller_runtime_reconcile_errors_total{controller}`: counter of reconciles
  that raised.
- `controller_runtime_reconcile_time_seconds{controller}`: histogram of one
  reconcile's duration.

Work queue (label `name`, "registeredmodel"):
- `workqueue_depth{name}`: gauge, keys waiting (not those being worked on).
- `workqueue_adds_total{name}`: counter of keys added that were not already waiting.
- `workqueue_queue_duration_seconds{name}`: histogram, from add to a worker taking it.
- `workqueue_work_duration_seconds{name}`: histogram, from take to done.
- `workqueue_retries_total{name}`: counter of keys put back with backoff.

Leader election (client-go's name; label `name`, the Lease, "modelreg-operator"):
- `leader_election_master_status{name}`: gauge, 1 while this replica leads (always
  1 without `--leader-elect`), 0 while it follows and its workers wait.

The registry's own (labels namespace, model):
- `modelreg_stage_transitions_total{namespace,model,stage,reason}`: counter of
  effective-stage changes written to a version's status (stage entered; reason as
  in status.history, e.g. Promoted, RolledBack, Registered).
- `modelreg_gate_failures_total{namespace,model,gate,reason}`: counter of gate
  conditions that newly turned False (or changed reason while False).
- `modelreg_artifact_verification_duration_seconds{result}`: histogram of one
  artifact check (result: the ArtifactVerified reason, e.g. Verified, NotFound).
- `modelreg_artifact_verification_bytes_total`: counter of bytes downloaded to
  hash artifacts the store had no SHA-256 for.
- `modelreg_artifact_verified_size_bytes`: histogram of verified artifacts' sizes.
- `modelreg_production_switch_duration_seconds{namespace,model}`: histogram, from
  a version's Production request (status.productionRequestedAt) to its status
  saying Production (gates, rollout and the Service switch included).
- `modelreg_versions{namespace,model,stage}`: gauge, versions by effective stage.

And prometheus_client's `process_*` and `python_*` metrics of the process.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Mapping

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from modelreg import gates
from modelreg.api.common import Condition, Stage
from modelreg.api.modelversion import ModelVersionStatus
from modelreg.lifecycle import ARTIFACT_VERIFIED

CONTROLLER = "registeredmodel"
LEASE = "modelreg-operator"  # the Lease the replicas elect their leader with (leading.Settings)
RESULTS = ("success", "error", "requeue", "requeue_after")
# The promotion gates' condition types (see `gates`).
_GATES = {ARTIFACT_VERIFIED, gates.METRIC_THRESHOLDS, gates.COMPARED_TO_PRODUCTION, gates.STAGE_ORDER,
          gates.VALIDATION_PASSED}  # fmt: skip
# Seconds to minutes: a reconcile is milliseconds, a verification or a rollout minutes.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    """All metrics, on one registry (a fresh one unless given: tests make their own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No `*_created` series: controller-runtime has none, and they double what a scrape carries.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # (unannotated in prometheus_client)
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if registry is None:  # the process's own: memory, CPU, open files, GC (as the default registry has)
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                r.register(collector)
        self.reconcile_total = Counter("controller_runtime_reconcile_total", "Total number of reconciliations per "
                                       "controller", ["controller", "result"], registry=r)  # fmt: skip
        self.reconcile_errors = Counter("controller_runtime_reconcile_errors_total", "Total number of reconciliation "
                                        "errors per controller", ["controller"], registry=r)  # fmt: skip
        self.reconcile_time = Histogram("controller_runtime_reconcile_time_seconds", "Length of time per "
                                        "reconciliation per controller", ["controller"], buckets=_BUCKETS,
                                        registry=r)  # fmt: skip
        for result in RESULTS:  # every series exists from the start, as controller-runtime does
            self.reconcile_total.labels(CONTROLLER, result)
        self.reconcile_errors.labels(CONTROLLER)
        self.queue = QueueMetrics(CONTROLLER, r)
        self.stage_transitions = Counter("modelreg_stage_transitions_total", "Effective-stage changes written to "
                                         "ModelVersion status", ["namespace", "model", "stage", "reason"],
                                         registry=r)  # fmt: skip
        self.gate_failures = Counter("modelreg_gate_failures_total", "Promotion gates that newly failed",
                                     ["namespace", "model", "gate", "reason"], registry=r)  # fmt: skip
        self.verification_time = Histogram("modelreg_artifact_verification_duration_seconds", "Duration of one "
                                           "artifact verification", ["result"], buckets=_BUCKETS,
                                           registry=r)  # fmt: skip
        self.verification_bytes = Counter("modelreg_artifact_verification_bytes", "Bytes downloaded to hash "
                                          "artifacts", registry=r)  # fmt: skip
        self.verified_size = Histogram("modelreg_artifact_verified_size_bytes", "Size of verified artifacts",
                                       buckets=tuple(float(4**i) for i in range(5, 19)), registry=r)  # fmt: skip
        self.switch_time = Histogram("modelreg_production_switch_duration_seconds", "From a Production request "
                                     "to the version serving Production", ["namespace", "model"],
                                     buckets=_BUCKETS, registry=r)  # fmt: skip
        self.versions = Gauge("modelreg_versions", "ModelVersions by effective stage",
                              ["namespace", "model", "stage"], registry=r)  # fmt: skip
        # client-go's name: 1 while this replica leads (always, without an election), 0 while it follows.
        self.leader = Gauge("leader_election_master_status", "Whether this replica is the leader (1) or not (0)",
                            ["name"], registry=r)  # fmt: skip
        self.leader.labels(LEASE).set(0)
        self._lock = threading.Lock()  # guards `_models`
        self._models: set[tuple[str, str]] = set()

    def leading(self, leads: bool, lease: str = LEASE) -> None:
        self.leader.labels(lease).set(1 if leads else 0)

    def observe_reconcile(self, *, result: str, seconds: float) -> None:
        self.reconcile_total.labels(CONTROLLER, result).inc()
        self.reconcile_time.labels(CONTROLLER).observe(seconds)
        if result == "error":
            self.reconcile_errors.labels(CONTROLLER).inc()

    def observe_plan(
        self,
        *,
        namespace: str,
        model: str,
        before: Mapping[str, ModelVersionStatus],
        after: Mapping[str, ModelVersionStatus],
        now: datetime.datetime,
    ) -> None:
        """What one reconcile wrote, read from the version statuses before and after
        (name → status): transitions, gates that newly failed, a Production switch,
        and the count by stage. Called after the statuses were written."""
        for name, new in after.items():
            old = before.get(name, ModelVersionStatus())
            if new.stage is not None and new.stage is not old.stage:
                reason = new.history[-1].reason if new.history else "Changed"
                self.stage_transitions.labels(namespace, model, new.stage.value, reason).inc()
                if new.stage is Stage.PRODUCTION and new.production_requested_at is not None:
                    waited = (now - new.production_requested_at).total_seconds()
                    self.switch_time.labels(namespace, model).observe(max(0.0, waited))
            for gate, reason in _newly_failed(old.conditions, new.conditions):
                self.gate_failures.labels(namespace, model, gate, reason).inc()
        self.set_versions(namespace=namespace, model=model, stages=[s.stage for s in after.values()])

    def set_versions(self, *, namespace: str, model: str, stages: list[Stage | None]) -> None:
        """Versions by stage; a model with none left loses its series."""
        with self._lock:
            if not stages:
                if (namespace, model) in self._models:
                    self._models.discard((namespace, model))
                    for stage in Stage:
                        self.versions.remove(namespace, model, stage.value)
                return
            self._models.add((namespace, model))
            for stage in Stage:
                self.versions.labels(namespace, model, stage.value).set(sum(1 for s in stages if s is stage))

    def observe_verification(self, *, result: str, seconds: float, downloaded: int, size: int | None) -> None:
        self.verification_time.labels(result).observe(seconds)
        self.verification_bytes.inc(downloaded)
        if size is not None:
            self.verified_size.observe(size)


class QueueMetrics:
    """client-go's work queue metrics for one queue; `WorkQueue` calls these."""

    def __init__(self, name: str, registry: CollectorRegistry) -> None:
        r = registry
        self.depth = Gauge("workqueue_depth", "Current depth of workqueue", ["name"], registry=r).labels(name)
        self.adds = Counter("workqueue_adds", "Total number of adds handled by workqueue", ["name"],
                            registry=r).labels(name)  # fmt: skip
        self.queue_time = Histogram("workqueue_queue_duration_seconds", "How long in seconds an item stays in "
                                    "workqueue before being requested", ["name"], buckets=_BUCKETS,
                                    registry=r).labels(name)  # fmt: skip
        self.work_time = Histogram("workqueue_work_duration_seconds", "How long in seconds processing an item "
                                   "from workqueue takes", ["name"], buckets=_BUCKETS,
                                   registry=r).labels(name)  # fmt: skip
        self.retries = Counter("workqueue_retries", "Total number of retries handled by workqueue", ["name"],
                               registry=r).labels(name)  # fmt: skip


def _newly_failed(old: list[Condition], new: list[Condition]) -> list[tuple[str, str]]:
    before = {c.type: (c.status, c.reason) for c in old}
    return [
        (c.type, c.reason)
        for c in new
        if c.type in _GATES and c.status == "False" and before.get(c.type) != (c.status, c.reason)
    ]


def parse_bind_address(value: str) -> tuple[str, int] | None:
    """`host:port` → (host, port); "" or "0" → None (no metrics endpoint)."""
    if value in ("", "0"):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(metrics: Metrics, bind: tuple[str, int]) -> None:
    """Serve /metrics (any path, in fact) on a daemon thread of prometheus_client's."""
    start_http_server(bind[1], addr=bind[0], registry=metrics.registry)
