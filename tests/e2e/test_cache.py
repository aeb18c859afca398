"""The watch-fed cache (issue 11): an idle operator reads nothing from the API,
and a status planned from an outdated read never lands. Real API server."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from modelreg import kube as kubeapi
from tests.conftest import wait_for
from tests.e2e.conftest import S3, Cluster, Operator
from tests.e2e.registry import apply, serve_first_version, set_stage, status, version_manifest


def operator_reads(audit_log: str, namespace: str, *, after: int) -> list[dict[str, Any]]:
    """GETs and LISTs (not watches) in `namespace` by the operator's own client,
    from byte `after` of the audit log on."""
    reads = []
    with open(audit_log) as f:
        f.seek(after)
        for line in f:
            entry = json.loads(line)
            if (
                entry.get("stage") == "ResponseComplete"
                and entry.get("verb") in ("get", "list")
                and (entry.get("objectRef") or {}).get("namespace") == namespace
                and str(entry.get("userAgent", "")).startswith(kubeapi.USER_AGENT)
            ):
                reads.append(entry)
    return reads


def test_an_idle_operator_resyncs_from_the_cache_without_api_reads(
    kube: Cluster, s3: S3, namespace: str, operator: Operator
) -> None:
    """Before the cache, every resync (every 3 s here) listed the models and made a
    GET and four LISTs per model, the namespace's autoscalers among them."""
    if kube.audit_log is None:
        pytest.fail("the dev cluster writes an audit log; this test needs it")
    serve_first_version(kube, s3, namespace)

    def settled() -> bool | None:  # more than a resync period (3 s) without a write by the operator
        before = len(operator.log())
        time.sleep(4)
        return "writes" not in operator.log()[before:] or None

    wait_for(settled, timeout=60, what="a settled model")
    start = os.path.getsize(kube.audit_log)
    # An interval, not a condition: what is measured is that nothing happens in it
    # (three resync periods of the fixture's 3 s).
    time.sleep(10)
    reads = operator_reads(kube.audit_log, namespace, after=start)
    assert [(r["verb"], r["requestURI"]) for r in reads] == []
    # And the resync still sees drift: a stage change is acted on (from the watch, at once).
    set_stage(kube, namespace, "m-1", "Archived")
    wait_for(lambda: status(kube, namespace, "m-1").get("stage") == "Production" or None, timeout=30,
             what="m-1 still serving (HeldServing)")  # fmt: skip


def test_a_status_planned_from_an_outdated_read_is_refused(kube: Cluster, s3: S3, namespace: str) -> None:
    """The conditional status write the cache relies on: another writer moved the
    version on after our read, so the API server refuses the write (409 → Stale)."""
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri="s3://bucket/key"))
    client = kubeapi.new_client(kube.kubeconfig)
    read = kubeapi.read_version(client, namespace=namespace, name="m-1")
    assert read is not None
    set_stage(kube, namespace, "m-1", "Staging")  # somebody's edit after our read
    with pytest.raises(kubeapi.Stale):
        kubeapi.apply_status(client, read, {"stage": "Production"},
                             resource_version=read["metadata"]["resourceVersion"])  # fmt: skip
    assert status(kube, namespace, "m-1").get("stage") != "Production"
    fresh = kubeapi.read_version(client, namespace=namespace, name="m-1")
    assert fresh is not None
    written = kubeapi.apply_status(client, fresh, {"stage": "Staging"},
                                   resource_version=fresh["metadata"]["resourceVersion"])  # fmt: skip
    assert written is not None
    assert int(written) > int(fresh["metadata"]["resourceVersion"])
    assert status(kube, namespace, "m-1").get("stage") == "Staging"
