"""`kubectl modelreg` end to end: run as a person runs it (a subprocess, --kubeconfig),
against the local control plane with the operator running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from modelreg import plugin
from modelreg.devcluster import cluster
from tests.conftest import wait_for
from tests.e2e.conftest import S3, Cluster, Operator
from tests.e2e.registry import (
    SERVING,
    apply,
    deployment,
    model_manifest,
    serve_first_version,
    serving_version,
    set_stage,
    status,
    upload,
    version_manifest,
    wait_condition,
    wait_replicas,
    wait_serving,
    wait_stage,
)

PROMOTION = {"thresholds": [{"metric": "accuracy", "min": 0.85}]}


def modelreg(kube: Cluster, namespace: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`kubectl modelreg ARGS` (the module the kubectl-modelreg executable runs)."""
    command = [sys.executable, "-m", "modelreg.plugin", *args, "-n", namespace, "--kubeconfig", kube.kubeconfig]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def shown(out: subprocess.CompletedProcess[str], title: str) -> str:
    """Print what a person would see, for the record, and return it."""
    print(f"\n$ kubectl modelreg {title}  (exit {out.returncode})\n{out.stdout}{out.stderr}")
    return out.stdout


def test_kubectl_modelreg_lists_explains_promotes_and_rolls_back(
    kube: Cluster, s3: S3, namespace: str, operator: Operator
) -> None:
    serve_first_version(kube, s3, namespace)
    # A deadline well past the 20 s wait below, which is to time out, not see the rollout fail.
    apply(kube, namespace, model_manifest("m", serving=SERVING | {"progressDeadlineSeconds": 90}, promotion=PROMOTION))
    for name, accuracy in (("m-2", 0.95), ("m-3", 0.8)):
        art = upload(s3)
        apply(kube, namespace, version_manifest(name, model="m", version=name[2:], uri=art.uri, sha256=art.sha256,
                                                stage="Staging", metrics={"accuracy": accuracy}))  # fmt: skip
    wait_stage(kube, namespace, "m-2", "Staging")
    wait_condition(kube, namespace, "m-3", "Stalled", status_="True", reason="ThresholdNotMet")
    wait_condition(kube, namespace, "m", "Ready", status_="True", kind="registeredmodel")

    # list: the model, its Production and Staging versions, its health
    out = modelreg(kube, namespace, "list")
    table = shown(out, "list")
    assert out.returncode == 0
    header, row = table.splitlines()[:2]
    assert header.split() == ["MODEL", "PRODUCTION", "STAGING", "BEST", "VERSIONS", "READY", "REASON"]
    assert row.split()[:3] == ["m", "1", "2"]
    rows = json.loads(modelreg(kube, namespace, "list", "-o", "json").stdout)
    assert [(r["model"], r["production"], r["staging"], r["versions"]) for r in rows] == [("m", "1", "2", 3)]

    # why: the gate that holds m-3, and what would release it
    out = modelreg(kube, namespace, "why", "m-3")
    text = shown(out, "why m-3")
    assert out.returncode == 0
    assert "MetricThresholds=False (ThresholdNotMet): accuracy = 0.8 is below the minimum 0.85" in text
    assert "to release: a metric once set cannot change: register a new ModelVersion" in text
    assert "the Service m serves 1" in text
    report = json.loads(modelreg(kube, namespace, "why", "m-3", "-o", "json").stdout)
    assert [h["condition"] for h in report["holds"]] == ["MetricThresholds"]

    # diff: the operator has done all it can (the planner, run on what the plugin read, would
    # write nothing), and m-3's Staging request waits, held
    out = modelreg(kube, namespace, "diff")
    shown(out, "diff")
    assert out.returncode == 0
    diff = json.loads(modelreg(kube, namespace, "diff", "m", "-o", "json").stdout)
    assert [(d["object"], d["action"]) for d in diff] == [("modelversion/m-3", "waits")]
    assert "Development → Staging" in diff[0]["detail"]
    assert "ThresholdNotMet" in diff[0]["detail"]

    # promote: waits until the Service serves m-2, archives m-1's request (Git-tidy)
    out = modelreg(kube, namespace, "promote", "m-2", "--timeout", "180")
    shown(out, "promote m-2")
    assert out.returncode == plugin.EXIT_OK, out.stderr
    assert "modelversion/m-1: spec.stage = Archived" in out.stderr
    assert serving_version(kube, namespace, "m") == "2"
    assert status(kube, namespace, "m-2")["stage"] == "Production"

    # history: every transition, newest first
    out = modelreg(kube, namespace, "history", "m")
    shown(out, "history m")
    assert out.returncode == 0
    history: list[dict[str, Any]] = json.loads(modelreg(kube, namespace, "history", "m", "-o", "json").stdout)
    times = [datetime.fromisoformat(h["time"].replace("Z", "+00:00")) for h in history]
    assert times == sorted(times, reverse=True)
    transitions = [(h["version"], h["stage"], h["reason"]) for h in history if h["source"] == "status"]
    assert ("2", "Production", "Promoted") in transitions[:2]
    assert ("1", "Production", "Promoted") in transitions

    # rollback: back to the version that served before, waited for
    wait_stage(kube, namespace, "m-1", "Archived")
    out = modelreg(kube, namespace, "rollback", "m", "--timeout", "180")
    shown(out, "rollback m")
    assert out.returncode == plugin.EXIT_OK, out.stderr
    assert serving_version(kube, namespace, "m") == "1"
    assert status(kube, namespace, "m-1")["history"][-1]["reason"] == "RolledBack"

    # a promotion a gate refuses: a non-zero exit with the reason from status, and no change made
    out = modelreg(kube, namespace, "promote", "m-3", "--timeout", "120")
    shown(out, "promote m-3")
    assert out.returncode == plugin.EXIT_FAILED
    assert "failed: m-3 is held, nothing was changed: ThresholdNotMet" in out.stderr
    assert "held by MetricThresholds" in out.stderr
    assert kube.get_json("-n", namespace, "modelversion/m-1")["spec"]["stage"] == "Production"
    assert kube.get_json("-n", namespace, "modelversion/m-3")["spec"]["stage"] == "Staging"

    # a promotion whose Pods cannot be scheduled, waited for past --timeout: exit 4 with where it stands;
    # once the node takes Pods again, the same command waits until the Service serves the version
    kube.kubectl("cordon", cluster.NODE_NAME)
    try:
        out = modelreg(kube, namespace, "promote", "m-2", "--timeout", "20")
        # Read before the node takes Pods again: once uncordoned, the switch may finish at once.
        served_while_cordoned = serving_version(kube, namespace, "m")
    finally:
        kube.kubectl("uncordon", cluster.NODE_NAME)
    shown(out, "promote m-2 --timeout 20  (node cordoned)")
    assert out.returncode == plugin.EXIT_TIMEOUT
    # where it stood: rolling out (the message says how far, and why once the operator read the Pods)
    assert "timed out: m-2 Production: Rollout" in out.stderr
    assert "after 20s: " in out.stderr
    assert served_while_cordoned == "1"
    out = modelreg(kube, namespace, "promote", "m-2", "--timeout", "180")
    shown(out, "promote m-2  (node uncordoned)")
    assert out.returncode == plugin.EXIT_OK, out.stderr
    assert serving_version(kube, namespace, "m") == "2"


def test_kubectl_modelreg_diff_shows_the_writes_the_operator_then_makes(
    kube: Cluster, s3: S3, namespace: str, operator: Operator
) -> None:
    """With the operator stopped, a Production request for m-2: `diff` names the next
    reconcile's writes (scale m-2's Deployment up; m-2's status); the restarted operator
    makes exactly those, and `diff` then follows the switch to its end."""
    serve_first_version(kube, s3, namespace)
    art = upload(s3)
    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=art.uri, sha256=art.sha256,
                                            stage="Staging"))  # fmt: skip
    wait_stage(kube, namespace, "m-2", "Staging")
    wait_replicas(kube, namespace, "m-2", 1)
    operator.stop()
    set_stage(kube, namespace, "m-2", "Production")
    out = modelreg(kube, namespace, "diff", "m")
    shown(out, "diff m  (operator stopped, m-2 asked for Production)")
    diff = json.loads(modelreg(kube, namespace, "diff", "m", "-o", "json").stdout)
    writes = {(d["object"], d["action"]): d["detail"] for d in diff}
    assert writes[("deployment/m-2", "update")] == "replicas 1 → 2"
    assert ("service/m", "update") not in writes, "the Service switches only once m-2 is Available"
    assert "modelversion/m-2" in {d["object"] for d in diff}
    unchanged = deployment(kube, namespace, "m-2")
    assert unchanged is not None
    assert unchanged["spec"]["replicas"] == 1, "diff wrote something"

    operator.start()
    wait_serving(kube, namespace, "m", "2", timeout=90)
    wait_stage(kube, namespace, "m-2", "Production")
    wait_stage(kube, namespace, "m-1", "Archived")
    scaled = deployment(kube, namespace, "m-2")
    assert scaled is not None
    assert scaled["spec"]["replicas"] == 2

    def settled() -> list[Any] | None:
        rows = json.loads(modelreg(kube, namespace, "diff", "m", "-o", "json").stdout)
        return rows if not [r for r in rows if r["action"] != "waits"] else None

    wait_for(settled, timeout=60, what="diff to show no write left")
    out = modelreg(kube, namespace, "diff", "m")
    shown(out, "diff m  (settled)")


def test_kubectl_modelreg_errors_are_one_line_and_non_zero(kube: Cluster, namespace: str) -> None:
    out = modelreg(kube, namespace, "why", "nothing-here")
    assert out.returncode == plugin.EXIT_ERROR
    assert out.stderr.strip() == f"error: ModelVersion 'nothing-here' not found in namespace '{namespace}'"
    out = modelreg(kube, namespace, "list", "--context", "no-such-context")
    assert out.returncode == plugin.EXIT_ERROR
    assert "no-such-context" in out.stderr
    assert "Traceback" not in out.stderr


def test_kubectl_runs_the_plugin_and_completes_its_words(
    kube: Cluster, crds: Path, namespace: str, tmp_path: Path
) -> None:
    """kubectl itself finds `kubectl-modelreg` and `kubectl_complete-modelreg` on PATH
    (here: shims running this checkout, as the installed console scripts would)."""
    for name, first in (("kubectl-modelreg", ""), ("kubectl_complete-modelreg", "__complete ")):
        shim = tmp_path / name
        shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m modelreg.plugin {first}"$@"\n')
        shim.chmod(0o755)
    apply(kube, namespace, model_manifest("m"))
    for name in ("m-1", "m-2"):
        apply(kube, namespace, version_manifest(name, model="m", version=name[2:], uri="s3://bucket/k"))
    env = os.environ | {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    flags = ["-n", namespace, f"--kubeconfig={kube.kubeconfig}"]

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kube.kubectl_path, *args], capture_output=True, text=True, env=env, timeout=60)

    out = kubectl("modelreg", "list", *flags, "-o", "json")
    assert out.returncode == 0, out.stderr
    assert [r["model"] for r in json.loads(out.stdout)] == ["m"]
    out = kubectl("__complete", "modelreg", "promote", *flags, "m-")
    print(f"$ kubectl __complete modelreg promote ... m-\n{out.stdout}")
    assert out.stdout.splitlines()[:2] == ["m-1", "m-2"]
    out = kubectl("__complete", "modelreg", "h")
    assert out.stdout.splitlines()[0] == "history"
