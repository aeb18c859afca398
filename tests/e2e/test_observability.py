"""Metrics and logs of a running operator: its Prometheus endpoint, scraped while it
registers and promotes a version, says what happened; with `--log-format json`
every line it writes is one JSON object, and a reconcile's lines say whose."""

from __future__ import annotations

import json
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from modelreg.devcluster import processes
from tests.conftest import wait_for
from tests.e2e.conftest import S3, Cluster, StartOperator
from tests.e2e.registry import apply, model_manifest, serve_first_version, upload, version_manifest, wait_stage


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def value(text: str, metric: str, **labels: str) -> float:
    """The sum of the samples named `metric` whose labels include `labels` (0: none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_metrics_move_when_a_version_is_registered_and_promoted(
    kube: Cluster, s3: S3, namespace: str, start_operator: StartOperator
) -> None:
    port = processes.free_port()
    start_operator("--metrics-bind-address", f"127.0.0.1:{port}")
    before = scrape(port)
    assert value(before, "controller_runtime_reconcile_total", controller="registeredmodel", result="success") == 0
    assert "workqueue_depth" in before  # every series is there before the first reconcile

    serve_first_version(kube, s3, namespace)

    def promoted() -> str | None:
        text = scrape(port)
        serving = value(text, "modelreg_versions", namespace=namespace, model="m", stage="Production")
        return text if serving == 1 else None

    text = wait_for(promoted, timeout=30, what="the versions gauge to count one Production version")
    ns = {"namespace": namespace, "model": "m"}
    assert value(text, "controller_runtime_reconcile_total", controller="registeredmodel", result="success") > 0
    assert value(text, "controller_runtime_reconcile_time_seconds_count", controller="registeredmodel") > 0
    assert value(text, "workqueue_adds_total", name="registeredmodel") > 0
    assert value(text, "workqueue_queue_duration_seconds_count", name="registeredmodel") > 0
    assert value(text, "workqueue_work_duration_seconds_count", name="registeredmodel") > 0
    assert value(text, "modelreg_stage_transitions_total", stage="Production", **ns) >= 1
    assert value(text, "modelreg_artifact_verification_duration_seconds_count", result="Verified") > 0
    assert value(text, "modelreg_artifact_verified_size_bytes_count") > 0
    assert value(text, "modelreg_production_switch_duration_seconds_count", **ns) == 1
    assert value(text, "modelreg_versions", stage="Development", **ns) == 0
    assert value(text, "leader_election_master_status", name="modelreg-operator") == 1  # no election: leads
    ours = ("controller_runtime_", "workqueue_", "modelreg_", "leader_election_")
    print("\n--- the scrape (our series, no buckets) ---")
    print("\n".join(line for line in text.splitlines() if line.startswith(ours) and "_bucket{" not in line))


def test_a_failing_gate_is_counted(kube: Cluster, s3: S3, namespace: str, start_operator: StartOperator) -> None:
    port = processes.free_port()
    start_operator("--metrics-bind-address", f"127.0.0.1:{port}")
    art = upload(s3)
    apply(kube, namespace, model_manifest("m"))
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=art.uri, sha256="0" * 64,
                                            stage="Staging"))  # fmt: skip

    def counted() -> float | None:
        n = value(scrape(port), "modelreg_gate_failures_total", namespace=namespace, model="m", gate="ArtifactVerified")
        return n or None

    assert wait_for(counted, timeout=60, what="a failed ArtifactVerified gate in the metrics") >= 1


def test_json_logs_carry_the_reconcile_context(
    kube: Cluster, s3: S3, namespace: str, start_operator: StartOperator
) -> None:
    op = start_operator("--log-format", "json")
    art = upload(s3)
    apply(kube, namespace, model_manifest("m"))
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=art.uri, sha256=art.sha256,
                                            stage="Staging"))  # fmt: skip
    wait_stage(kube, namespace, "m-1", "Staging")

    def reconciled() -> list[dict[str, object]] | None:
        lines = [json.loads(line) for line in op.log().splitlines() if line.strip()]  # each line one object
        found = [r for r in lines if str(r.get("message", "")).startswith("reconciled ")]
        return lines if found else None

    lines = wait_for(reconciled, timeout=30, what="a 'reconciled' line in the operator's log")
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    reconciles = [r for r in lines if str(r["message"]).startswith("reconciled ")]
    for line in reconciles:
        assert line["namespace"] == namespace, line
        assert line["model"] == "m", line
        assert isinstance(line["reconcile_id"], str), line
        assert len(line["reconcile_id"]) == 16, line
    assert len({r["reconcile_id"] for r in reconciles}) == len(reconciles)  # one id per reconcile
