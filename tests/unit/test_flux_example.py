"""The Flux example (examples/flux) names our kinds as the CRDs serve them, and the
objects the operator writes (captured from e2e runs into tests/unit/fixtures/gitops)
carry the kstatus fields Flux's health checks read. No Flux here: its CEL
expressions are checked for shape, not evaluated."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.gitops import ARGO_FOR_KSTATUS, FIXTURES, KINDS, REPO, health, kstatus

FLUX = REPO / "examples" / "flux"


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((FLUX / name).read_text())
    return doc


def served_api_versions() -> dict[str, str]:
    """kind → group/version of the storage version, from the generated CRDs."""
    out = {}
    for path in (REPO / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd.get("kind") != "CustomResourceDefinition":
            continue
        storage = next(v["name"] for v in crd["spec"]["versions"] if v["storage"])
        out[crd["spec"]["names"]["kind"]] = f"{crd['spec']['group']}/{storage}"
    return out


def captured() -> list[tuple[str, dict[str, Any]]]:
    return [(p.stem, json.loads(p.read_text())) for p in sorted(FIXTURES.glob("*.json"))]


def test_the_kustomization_reads_the_git_repository() -> None:
    source, ks = load("gitrepository.yaml"), load("kustomization.yaml")
    assert (source["apiVersion"], source["kind"]) == ("source.toolkit.fluxcd.io/v1", "GitRepository")
    assert (ks["apiVersion"], ks["kind"]) == ("kustomize.toolkit.fluxcd.io/v1", "Kustomization")
    assert ks["spec"]["sourceRef"] == {"kind": "GitRepository", "name": source["metadata"]["name"]}
    assert ks["metadata"]["namespace"] == source["metadata"]["namespace"]


def test_health_checks_name_our_kinds_as_served_and_the_example_objects() -> None:
    served = served_api_versions()
    spec = load("kustomization.yaml")["spec"]
    examples = {(d["kind"], d["metadata"]["name"]) for p in (REPO / "examples").glob("*.yaml")
                for d in yaml.safe_load_all(p.read_text()) if d}  # fmt: skip
    checks = spec["healthChecks"]
    assert {c["kind"] for c in checks} == set(KINDS)
    for c in checks:
        assert c["apiVersion"] == served[c["kind"]]
        assert (c["kind"], c["name"]) in examples
        assert c["namespace"] == spec["targetNamespace"]


def test_cel_health_expressions_cover_our_kinds_and_kstatus_conditions() -> None:
    served = served_api_versions()
    exprs = load("kustomization.yaml")["spec"]["healthCheckExprs"]
    assert sorted(e["kind"] for e in exprs) == sorted(KINDS)
    for e in exprs:
        assert e["apiVersion"] == served[e["kind"]]
        assert set(e) == {"apiVersion", "kind", "current", "inProgress", "failed"}
        assert "c.type == 'Ready' && c.status == 'True'" in e["current"]
        assert "c.type == 'Stalled' && c.status == 'True'" in e["failed"]
        # In progress until the operator has observed this generation, status or not.
        assert "!has(status.observedGeneration)" in e["inProgress"]
        assert "status.observedGeneration != metadata.generation" in e["inProgress"]
        assert "c.type == 'Reconciling' && c.status == 'True'" in e["inProgress"]
        for expr in (e["current"], e["inProgress"], e["failed"]):
            assert expr.count("(") == expr.count(")")


@pytest.mark.parametrize(("label", "obj"), [c for c in captured() if c[1].get("status")])
def test_captured_objects_carry_kstatus_fields(label: str, obj: dict[str, Any]) -> None:
    status = obj["status"]
    assert isinstance(status["observedGeneration"], int)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert {"Ready", "Reconciling", "Stalled"} <= set(conditions)
    # Reconciling and Stalled are never both True (kstatus reads the first it meets).
    assert not (conditions["Reconciling"]["status"] == conditions["Stalled"]["status"] == "True")
    if status["observedGeneration"] == obj["metadata"]["generation"]:
        for c in conditions.values():
            assert c["observedGeneration"] == obj["metadata"]["generation"], (label, c)
    # Flux's reading and Argo CD's agree on every real object.
    assert ARGO_FOR_KSTATUS[kstatus(obj)] == health(obj["kind"], obj)["status"], label


def test_the_captures_include_each_reading() -> None:
    readings = {kstatus(obj) for _, obj in captured() if obj.get("status")}
    assert readings == {"Current", "InProgress", "Failed"}


@pytest.mark.parametrize(("label", "obj"), [c for c in captured() if not c[1].get("status")])
def test_an_object_without_status_is_the_gap_the_cel_expressions_close(label: str, obj: dict[str, Any]) -> None:
    # kstatus skips the generation check without status.observedGeneration: bare
    # kstatus would call a ModelVersion the operator has not reached yet current.
    assert kstatus(obj) == "Current"
    assert health(obj["kind"], obj)["status"] == "Progressing"
