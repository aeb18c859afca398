"""How GitOps tools read modelreg's objects, for tests: the Argo CD health scripts
of manifests/argocd run in Lua 5.1 (the dialect of Argo CD's gopher-lua), and the
kstatus rules Flux's health checks apply. Used by tests/unit/test_argocd_health.py,
tests/unit/test_flux_example.py and tests/e2e/test_gitops.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import yaml

REPO = Path(__file__).resolve().parents[1]
HEALTH = REPO / "manifests" / "argocd" / "argocd-cm-health.yaml"
FIXTURES = REPO / "tests" / "unit" / "fixtures" / "gitops"
KINDS = ["ModelVersion", "RegisteredModel"]
# Argo CD's health statuses; a script returning anything else is a bug.
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """What Argo CD shows for `obj`: the script's {status, message}."""
    script = yaml.safe_load(HEALTH.read_text())["data"][f"resource.customizations.health.modelreg.dev_{kind}"]
    runtime = lua51.LuaRuntime()
    # Argo CD hands the object to the script as the global `obj`.
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(script)
    return {"status": result["status"], "message": result["message"]}


def kstatus(obj: dict[str, Any]) -> str:
    """kstatus' generic rules (what Flux's `healthChecks` apply to a custom
    resource): a status older than the spec is InProgress, Reconciling=True is
    InProgress, Stalled=True is Failed, anything else Current. kstatus skips the
    generation check when status.observedGeneration is absent, so an object the
    operator has not reached yet counts as Current: examples/flux's CEL
    expressions close that gap."""
    status = obj.get("status") or {}
    observed = status.get("observedGeneration")
    if observed is not None and observed != obj["metadata"].get("generation"):
        return "InProgress"
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    if conditions.get("Reconciling") == "True":
        return "InProgress"
    if conditions.get("Stalled") == "True":
        return "Failed"
    return "Current"


# Argo CD's reading and Flux's reading of one object must agree.
ARGO_FOR_KSTATUS = {"Current": "Healthy", "InProgress": "Progressing", "Failed": "Degraded"}


def scrub(obj: dict[str, Any]) -> dict[str, Any]:
    """A captured object as a fixture: what the health checks read, without the
    server's bookkeeping (uids, managed fields, resource versions, namespaces)."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    for key in ("uid", "resourceVersion", "managedFields", "namespace", "creationTimestamp", "annotations"):
        meta.pop(key, None)
    return out
