"""Invalid manifests are refused by the API server itself (schema and CEL rules)
with a message a person can act on; nothing of them is stored."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Cluster

SHA = "a" * 64


def version(**overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "modelreg.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "v"},
        "spec": {"model": "m", "version": "1", "artifact": {"uri": "s3://bucket/model.bin", "sha256": SHA}},
    }
    return _merge(obj, overrides)


def model(**overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "modelreg.dev/v1alpha1",
        "kind": "RegisteredModel",
        "metadata": {"name": "m"},
        "spec": {"serving": {"image": "registry.example.com/server:1"}},
    }
    return _merge(obj, overrides)


def _merge(obj: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    for path, value in overrides.items():
        node = out
        keys = path.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if value is _DELETE:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return out


_DELETE = object()

INVALID_ON_CREATE = [
    ("no model", version(spec__model=_DELETE), "spec.model: Required value"),
    ("no artifact", version(spec__artifact=_DELETE), "spec.artifact: Required value"),
    ("no spec", version(spec=_DELETE), "spec: Required value"),
    ("http uri", version(spec__artifact__uri="https://example.com/m.bin"), "must be s3://bucket/key for one object"),
    ("short bucket", version(spec__artifact__uri="s3://ab/m.bin"), "spec.artifact.uri in body should match"),
    ("sha not hex", version(spec__artifact__sha256="z" * 64), "must be 64 lowercase hexadecimal digits, as sha256s"),
    ("sha upper", version(spec__artifact__sha256="A" * 64), "spec.artifact.sha256 in body should match"),
    ("sha short", version(spec__artifact__sha256="a" * 63), "spec.artifact.sha256 in body should match"),
    ("sha long", version(spec__artifact__sha256="a" * 65), "spec.artifact.sha256: Too long"),
    ("unknown stage", version(spec__stage="Prod"), 'spec.stage: Unsupported value: "Prod"'),
    ("version spaces", version(spec__version="1 0"), "spec.version in body should match"),
    ("version long", version(spec__version="1" * 64), "spec.version: Too long"),
    ("model upper", version(spec__model="Fraud"), "spec.model in body should match"),
    ("metric text", version(spec__metrics={"accuracy": "high"}), "spec.metrics.accuracy: Invalid value"),
    ("git commit", version(spec__lineage={"gitCommit": "not-a-sha"}), "spec.lineage.gitCommit in body should match"),
    ("port zero", model(spec__serving__port=0), "spec.serving.port: Invalid value: 0"),
    ("port high", model(spec__serving__port=70000), "spec.serving.port: Invalid value: 70000"),
    ("no image", model(spec__serving={"port": 8080}), "spec.serving.image: Required value"),
    ("replicas negative", model(spec__serving__replicas=-1), "spec.serving.replicas: Invalid value: -1"),
    ("direction", model(spec__promotion={"compareToProduction": {"metric": "a", "direction": "Up"}}),
     'spec.promotion.compareToProduction.direction: Unsupported value: "Up"'),
    ("margin negative", model(spec__promotion={"compareToProduction": {"metric": "a", "margin": -1}}),
     "spec.promotion.compareToProduction.margin: Invalid value: -1"),
    ("duplicate threshold", model(spec__promotion={"thresholds": [{"metric": "a", "min": 1}, {"metric": "a"}]}),
     "Duplicate value"),
    ("endpoint scheme", model(spec__storage={"endpoint": "ftp://store"}), "spec.storage.endpoint in body should match"),
    ("retention", model(spec__retention={"archivedDeployments": 1000}), "spec.retention.archivedDeployments"),
    ("env name", model(spec__serving__env=[{"name": "1BAD", "value": "x"}]), "spec.serving.env[0].name"),
]  # fmt: skip

INVALID_UPDATES = [
    ("model", {"model": "other"}, "spec.model is immutable"),
    ("version", {"version": "2"}, "spec.version is immutable"),
    ("artifact", {"artifact": {"uri": "s3://bucket/other.bin", "sha256": SHA}}, "spec.artifact is immutable"),
    ("dev to prod", {"stage": "Production"}, "cannot move from Development straight to Production"),
]


def _apply(kube: Cluster, namespace: str, obj: dict[str, Any], *extra: str) -> Any:
    return kube.run("apply", "-n", namespace, *extra, "-f", "-", input=json.dumps(obj))


@pytest.mark.parametrize(("obj", "expected"), [c[1:] for c in INVALID_ON_CREATE], ids=[c[0] for c in INVALID_ON_CREATE])
def test_invalid_manifest_is_rejected(kube: Cluster, crds: Path, namespace: str, obj: dict, expected: str) -> None:  # type: ignore[type-arg]
    out = _apply(kube, namespace, obj, "--dry-run=server")
    assert out.returncode != 0, f"accepted: {json.dumps(obj)}"
    assert expected in out.stderr, out.stderr


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in INVALID_UPDATES], ids=[c[0] for c in INVALID_UPDATES])
def test_forbidden_update_is_rejected(kube: Cluster, crds: Path, namespace: str, change: dict, expected: str) -> None:  # type: ignore[type-arg]
    original = version()
    assert _apply(kube, namespace, original).returncode == 0
    updated = copy.deepcopy(original)
    updated["spec"].update(change)
    out = _apply(kube, namespace, updated)
    assert out.returncode != 0, f"accepted update {change}"
    assert expected in out.stderr, out.stderr
    stored = kube.get_json("-n", namespace, "modelversion/v")["spec"]
    assert stored["model"] == "m"
    assert stored.get("stage", "Development") == "Development"


def test_staging_then_production_is_allowed(kube: Cluster, crds: Path, namespace: str) -> None:
    original = version()
    assert _apply(kube, namespace, original).returncode == 0
    for stage in ("Staging", "Production", "Archived", "Production"):
        original["spec"]["stage"] = stage
        out = _apply(kube, namespace, original)
        assert out.returncode == 0, out.stderr


def test_created_straight_in_production_is_allowed(kube: Cluster, crds: Path, namespace: str) -> None:
    out = _apply(kube, namespace, version(spec__stage="Production"))
    assert out.returncode == 0, out.stderr
