"""The shipped monitoring pieces match the operator: the dashboard queries only
metrics the operator exports, and the Deployment, Service and ServiceMonitor agree
on the metrics port."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import generate_latest

from modelreg.metrics import Metrics, parse_bind_address

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def exported_names() -> set[str]:
    text = generate_latest(Metrics().registry).decode()
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    # Histograms are queried through their series.
    return names | {f"{n}{s}" for n in names for s in ("_bucket", "_count", "_sum", "_total")}


def test_the_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads((MANIFESTS / "monitoring" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\b((?:modelreg|controller_runtime|workqueue)_[a-z_]+)", e)}
    assert used, exprs
    assert used <= exported_names(), used - exported_names()
    # The headline metrics each have a panel.
    for name in ("modelreg_versions", "modelreg_stage_transitions_total", "modelreg_gate_failures_total",
                 "controller_runtime_reconcile_total", "workqueue_depth"):  # fmt: skip
        assert name in used


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_deployment_service_and_servicemonitor_agree_on_the_metrics_port() -> None:
    [deployment] = [d for d in docs(MANIFESTS / "base" / "operator.yaml") if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    bind = parse_bind_address(env["MODELREG_METRICS_BIND_ADDRESS"])
    assert bind is not None
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == bind[1]
    [service] = docs(MANIFESTS / "base" / "metrics.yaml")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["metadata"]["annotations"]["prometheus.io/port"] == str(bind[1])
    [monitor] = docs(MANIFESTS / "monitoring" / "servicemonitor.yaml")
    kustomized = docs(MANIFESTS / "base" / "kustomization.yaml")[0]["labels"][0]["pairs"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (service["metadata"]["labels"] | kustomized).items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
