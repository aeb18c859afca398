"""Invalid manifests are refused by the API server itself (schema and CEL rules)
with a message a person can act on; nothing of them is stored."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from modelreg import serving
from modelreg.api.common import Stage
from modelreg.api.registeredmodel import Serving
from tests.conftest import wait_for
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
LONG_PREFIX = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # a DNS subdomain of 253 characters

INVALID_ON_CREATE: list[tuple[str, dict[str, Any], str | tuple[str, ...]]] = [
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
    # Model names become Service and Deployment names.
    ("model name dots", model(metadata__name="iris.v2"), ("metadata.name", "must be a DNS-1035 label")),
    ("model name digit first", model(metadata__name="1iris"), ("metadata.name", "must be a DNS-1035 label")),
    ("model name long", model(metadata__name="m" * 53),
     ("metadata.name", "at most 52 characters", "<model>-staging")),
    ("model name staging", model(metadata__name="iris-staging"),
     ("metadata.name", "must not end in '-staging'", "staging Service")),
    ("version model digit first", version(spec__model="1iris"), ("spec.model", "must be a DNS-1035 label")),
    ("version model long", version(spec__model="m" * 53), ("spec.model", "at most 52 characters")),
    ("version model staging", version(spec__model="iris-staging"), ("spec.model", "must not end in '-staging'")),
    # What the API server would refuse once rendered into a Deployment.
    ("quantity text", model(spec__serving__resources={"requests": {"cpu": "lots"}}),
     ("spec.serving.resources.requests", "must be a Kubernetes quantity")),
    ("quantity negative", model(spec__serving__resources={"limits": {"memory": -1}}),
     ("spec.serving.resources.limits", "must be a Kubernetes quantity of at least 0")),
    ("quantity negative text", model(spec__serving__resources={"limits": {"memory": "-1Gi"}}),
     ("spec.serving.resources.limits", "must be a Kubernetes quantity of at least 0")),
    ("request over limit", model(spec__serving__resources={"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}),
     ("spec.serving.resources", "each request must be at most the limit")),
    ("request above limit units", model(spec__serving__resources={"requests": {"cpu": "1500m"}, "limits": {"cpu": 1}}),
     ("spec.serving.resources", "each request must be at most the limit")),
    ("resource unknown", model(spec__serving__resources={"requests": {"gpu": 1}}),
     ("spec.serving.resources.requests", "resource names must be cpu, memory")),
    ("resource kubernetes.io", model(spec__serving__resources={"limits": {"kubernetes.io/gpu": 1}}),
     ("spec.serving.resources.limits", "resource names must be cpu, memory")),
    ("gpu request without limit", model(spec__serving__resources={"requests": {"nvidia.com/gpu": 1}}),
     ("spec.serving.resources", "cannot be overcommitted")),
    ("hugepages below limit", model(spec__serving__resources={"requests": {"hugepages-2Mi": "32Mi"},
                                                               "limits": {"hugepages-2Mi": "64Mi"}}),
     ("spec.serving.resources", "cannot be overcommitted")),
    ("gpu fraction", model(spec__serving__resources={"limits": {"nvidia.com/gpu": "500m"}}),
     ("spec.serving.resources.limits", "counted in whole units")),
    ("image whitespace", model(spec__serving__image="registry.example.com/server:1 --privileged"),
     ("spec.serving.image", "must be an image reference without whitespace")),
    ("env MODEL_PATH", model(spec__serving__env=[{"name": "MODEL_PATH", "value": "/tmp"}]),
     ("spec.serving.env", "MODEL_PATH is set by the operator")),
    ("env repeated", model(spec__serving__env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
     ("spec.serving.env[1]", "Duplicate value")),
    # Replicas: offline is an explicit act.
    ("replicas zero", model(spec__serving__replicas=0),
     ("spec.serving.replicas", "to take a model offline, remove spec.serving")),
    ("staging replicas zero", model(spec__serving__stagingReplicas=0), ("spec.serving.stagingReplicas", "at least 1")),
    # Sizes stay bounded whatever users put in.
    ("metric name long", version(spec__metrics={"a" * 129: 1.0}), ("spec.metrics", "metric names must be at most 128")),
    ("labels many", version(spec__lineage={"labels": {f"l{i}": "x" for i in range(33)}}),
     "spec.lineage.labels: Too many"),
    ("label name long", version(spec__lineage={"labels": {"a" * 129: "x"}}),
     ("spec.lineage.labels", "label names must be at most 128")),
    ("label value long", version(spec__lineage={"labels": {"a": "x" * 257}}), "spec.lineage.labels.a: Too long"),
    ("version description long", version(spec__description="x" * 4097), "spec.description: Too long"),
    ("model description long", model(spec__description="x" * 4097), "spec.description: Too long"),
    ("env value long", model(spec__serving__env=[{"name": "A", "value": "x" * 2049}]),
     "spec.serving.env[0].value: Too long"),
    ("arg long", model(spec__serving__args=["x" * 2049]), "spec.serving.args[0]: Too long"),
    ("secret key long", model(spec__storage={"credentialsSecret": {"name": "s", "accessKeyIdKey": "k" * 254}}),
     "spec.storage.credentialsSecret.accessKeyIdKey: Too long"),
    # Placement: what Pod validation would refuse in a nodeSelector or a toleration.
    ("selector key", model(spec__serving__nodeSelector={"bad key!": "x"}),
     ("spec.serving.nodeSelector", "node selector keys must be a label key")),
    ("selector key prefix long", model(spec__serving__nodeSelector={"a" * 254 + "/x": "y"}),
     ("spec.serving.nodeSelector", "node selector keys must be a label key")),
    ("selector value", model(spec__serving__nodeSelector={"pool": "a b"}),
     ("spec.serving.nodeSelector", "node selector values must be a label value")),
    ("selector value long", model(spec__serving__nodeSelector={"pool": "x" * 64}),
     "spec.serving.nodeSelector.pool: Too long"),
    ("selector many", model(spec__serving__nodeSelector={f"k{i}": "v" for i in range(33)}),
     "spec.serving.nodeSelector: Too many"),
    ("toleration without key", model(spec__serving__tolerations=[{"value": "x"}]),
     ("spec.serving.tolerations[0]", "a toleration without a key must have operator Exists")),
    ("toleration exists with value", model(spec__serving__tolerations=[{"key": "k", "operator": "Exists",
                                                                        "value": "v"}]),
     ("spec.serving.tolerations[0]", "operator Exists matches any value: leave value out")),
    ("toleration seconds not NoExecute", model(spec__serving__tolerations=[{"key": "k", "effect": "NoSchedule",
                                                                            "tolerationSeconds": 5}]),
     ("spec.serving.tolerations[0]", "tolerationSeconds applies to effect NoExecute only")),
    ("toleration seconds alone", model(spec__serving__tolerations=[{"key": "k", "tolerationSeconds": 5}]),
     ("spec.serving.tolerations[0]", "tolerationSeconds applies to effect NoExecute only")),
    ("toleration seconds negative", model(spec__serving__tolerations=[{"key": "k", "effect": "NoExecute",
                                                                       "tolerationSeconds": -1}]),
     "spec.serving.tolerations[0].tolerationSeconds: Invalid value: -1"),
    ("toleration operator", model(spec__serving__tolerations=[{"key": "k", "operator": "In"}]),
     'spec.serving.tolerations[0].operator: Unsupported value: "In"'),
    ("toleration effect", model(spec__serving__tolerations=[{"key": "k", "effect": "NoRun"}]),
     'spec.serving.tolerations[0].effect: Unsupported value: "NoRun"'),
    ("toleration key", model(spec__serving__tolerations=[{"key": "a b", "operator": "Exists"}]),
     ("spec.serving.tolerations[0].key", "must be a label key")),
    ("toleration value", model(spec__serving__tolerations=[{"key": "k", "value": "a/b"}]),
     ("spec.serving.tolerations[0].value", "must be a label value")),
    ("tolerations many", model(spec__serving__tolerations=[{"key": f"k{i}", "operator": "Exists"} for i in range(33)]),
     "spec.serving.tolerations: Too many"),
    # A version names an object or a prefix inside its bucket.
    ("whole bucket", version(spec__artifact__uri="s3://bucket"),
     ("spec.artifact.uri", "must name an object or a prefix inside the bucket")),
    ("whole bucket slash", version(spec__artifact__uri="s3://bucket/"),
     ("spec.artifact.uri", "must name an object or a prefix inside the bucket")),
    ("key from root", version(spec__artifact__uri="s3://bucket//m.bin"),
     ("spec.artifact.uri", "must name an object or a prefix inside the bucket")),
]  # fmt: skip

VALID_ON_CREATE: list[tuple[str, dict[str, Any]]] = [
    ("model name at the limit", model(metadata__name="m" * 52)),
    ("model name with staging inside", model(metadata__name="staging-iris")),
    ("version model at the limit", version(spec__model="m" * 52)),
    ("resources", model(spec__serving__resources={
        "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "1G", "hugepages-2Mi": "64Mi",
                     "nvidia.com/gpu": 1},
        "limits": {"cpu": 1, "memory": "1Gi", "hugepages-2Mi": "64Mi", "nvidia.com/gpu": 1}})),
    ("gpu limit only", model(spec__serving__resources={"limits": {"example.com/fpga": "2"}})),
    ("request without limit", model(spec__serving__resources={"requests": {"cpu": "4"}, "limits": {"memory": "1e9"}})),
    ("env", model(spec__serving__env=[{"name": "MODEL_DIR", "value": "/models"}, {"name": "B"}])),
    ("prefix", version(spec__artifact__uri="s3://bucket/models/iris/")),
    ("placement", model(spec__serving__nodeSelector={"kubernetes.io/arch": "amd64", "nvidia.com/gpu.present": "true",
                                                      "empty": ""},
                        spec__serving__tolerations=[
                            {"operator": "Exists"},
                            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                            {"key": "k", "value": "v", "effect": "NoExecute", "tolerationSeconds": 300},
                            {"key": "k", "operator": "Equal", "value": ""}, {"key": "", "operator": "Exists"}])),
    ("placement at the limits", model(spec__serving__nodeSelector={LONG_PREFIX + f"/{i:02d}" + "n" * 61: "v" * 63
                                                                    for i in range(32)},
                                      spec__serving__tolerations=[{"key": LONG_PREFIX + f"/{i:02d}" + "n" * 61,
                                                                   "value": "v" * 63, "effect": "NoExecute",
                                                                   "tolerationSeconds": 31536000} for i in range(32)])),
    ("metrics at the limits", version(spec__metrics={f"{i:03d}" + "m" * 125: 1.0 for i in range(64)})),
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
def test_invalid_manifest_is_rejected(kube: Cluster, crds: Path, namespace: str, obj: dict,  # type: ignore[type-arg]
                                      expected: str | tuple[str, ...]) -> None:  # fmt: skip
    out = _apply(kube, namespace, obj, "--dry-run=server")
    assert out.returncode != 0, f"accepted: {json.dumps(obj)[:1000]}"
    for part in (expected,) if isinstance(expected, str) else expected:  # the field, and the rule in words
        assert part in out.stderr, out.stderr


@pytest.mark.parametrize("obj", [c[1] for c in VALID_ON_CREATE], ids=[c[0] for c in VALID_ON_CREATE])
def test_valid_manifest_near_the_limits_is_accepted(kube: Cluster, crds: Path, namespace: str, obj: dict) -> None:  # type: ignore[type-arg]
    out = _apply(kube, namespace, obj, "--dry-run=server")
    assert out.returncode == 0, out.stderr


# Pod validation takes names under kubernetes.io/ as native resources, but no node offers
# one to containers: a Pod asking for it would never be scheduled, so the model refuses it.
STRICTER_THAN_PODS = {"resource kubernetes.io"}
RESOURCE_CASES = [(c[0], c[1]["spec"]["serving"]["resources"], c[0] in STRICTER_THAN_PODS) for c in INVALID_ON_CREATE
                  if "resources" in c[1].get("spec", {}).get("serving", {})] + [
                 (c[0], c[1]["spec"]["serving"]["resources"], True) for c in VALID_ON_CREATE
                  if "resources" in c[1].get("spec", {}).get("serving", {})]  # fmt: skip


@pytest.mark.parametrize(
    ("resources", "deployment_ok"), [c[1:] for c in RESOURCE_CASES], ids=[c[0] for c in RESOURCE_CASES]
)
def test_resources_are_admitted_exactly_when_their_deployment_would_be(
    kube: Cluster, crds: Path, namespace: str, resources: dict[str, Any], deployment_ok: bool
) -> None:
    # The rules stand in for Pod validation: what the model admits must render into a
    # Deployment the API server takes, and what it refuses, into one it refuses
    # (but for STRICTER_THAN_PODS).
    spec = Serving.model_validate({"image": "registry.example.com/server:1", "resources": resources})
    ref = serving.VersionRef(name="m-1", uid="00000000-0000-0000-0000-000000000001", version="1",
                             uri="s3://bucket/m.bin", digest=SHA)  # fmt: skip
    deployment = serving.render_deployment(model="m", serving=spec, version=ref, stage=Stage.PRODUCTION, replicas=1,
                                           storage=serving.StorageEnv())  # fmt: skip
    out = _apply(kube, namespace, deployment, "--dry-run=server")
    assert (out.returncode == 0) == deployment_ok, out.stderr or out.stdout


def _renders(serving_spec: dict[str, Any]) -> bool:
    try:
        Serving.model_validate(serving_spec)
    except ValidationError:
        return False
    return True


# Placement the model refuses, though a Pod would take it: bounded sizes.
PLACEMENT_STRICTER_THAN_PODS = {"selector many"}
_ALL_CASES = [*((name, obj) for name, obj, _ in INVALID_ON_CREATE), *VALID_ON_CREATE]
PLACEMENT_CASES: list[tuple[str, dict[str, Any], bool]] = [
    (name, obj["spec"]["serving"], (name, obj) in VALID_ON_CREATE or name in PLACEMENT_STRICTER_THAN_PODS)
    for name, obj in _ALL_CASES
    if {"nodeSelector", "tolerations"} & set(obj.get("spec", {}).get("serving", {}))
    and _renders(obj["spec"]["serving"])
]


@pytest.mark.parametrize(
    ("serving_spec", "deployment_ok"), [c[1:] for c in PLACEMENT_CASES], ids=[c[0] for c in PLACEMENT_CASES]
)
def test_placement_is_admitted_exactly_when_its_deployment_would_be(
    kube: Cluster, crds: Path, namespace: str, serving_spec: dict[str, Any], deployment_ok: bool
) -> None:
    # As for resources: the CEL rules stand in for Pod validation of nodeSelector and tolerations.
    ref = serving.VersionRef(name="m-1", uid="00000000-0000-0000-0000-000000000001", version="1",
                             uri="s3://bucket/m.bin", digest=SHA)  # fmt: skip
    spec = Serving.model_validate(serving_spec)
    deployment = serving.render_deployment(model="m", serving=spec, version=ref, stage=Stage.PRODUCTION, replicas=1,
                                           storage=serving.StorageEnv())  # fmt: skip
    out = _apply(kube, namespace, deployment, "--dry-run=server")
    assert (out.returncode == 0) == deployment_ok, out.stderr or out.stdout


def test_a_model_stored_before_the_name_rules_can_still_be_updated(kube: Cluster, crds: Path, namespace: str) -> None:
    # Install the CRD as it was before the name rules, store a model they refuse, then
    # bring the checked-in CRD back: new names are refused, the stored model stays editable.
    crd = yaml.safe_load((crds / "modelreg.dev_registeredmodels.yaml").read_text())
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].pop("x-kubernetes-validations")
    legacy = model(metadata__name="legacy-staging")
    try:
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(crd))
        wait_for(lambda: _apply(kube, namespace, legacy).returncode == 0, timeout=30, what="the rule-less CRD")
    finally:
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
    refused = model(metadata__name="fresh-staging")
    wait_for(lambda: _apply(kube, namespace, refused, "--dry-run=server").returncode != 0, timeout=30,
             what="the checked-in CRD to refuse -staging names again")  # fmt: skip
    out = _apply(kube, namespace, model(metadata__name="legacy-staging", spec__description="still editable"))
    assert out.returncode == 0, out.stderr
    stored = kube.get_json("-n", namespace, "registeredmodel/legacy-staging")
    assert stored["spec"]["description"] == "still editable"


def test_a_huge_metrics_map_is_refused(kube: Cluster, crds: Path, namespace: str) -> None:
    # 64 names (maxProperties allows that many) of 23,000 characters: about 1.5 MB, which
    # the API server stored before metric names were bounded. `create` sends it as is
    # (apply would add a copy in an annotation and trip the request size limit first).
    metrics = {f"{i:02d}" + "m" * 23_000: float(i) for i in range(64)}
    obj = version(spec__metrics=metrics)
    body = json.dumps(obj)
    assert len(body) > 1_400_000
    out = kube.run("create", "-n", namespace, "--dry-run=server", "-f", "-", input=body)
    assert out.returncode != 0, "a 1.5 MB metrics map was accepted"
    assert "spec.metrics" in out.stderr, out.stderr[:2000]
    assert "metric names must be at most 128 characters" in out.stderr, out.stderr[:2000]


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


@pytest.mark.parametrize(
    "metrics",
    [{"accuracy": 0.95, "loss": 0.2}, {"loss": 0.2}, None, {"accuracy": 0.9, "loss": 0.3}],
    ids=["raised", "removed", "all removed", "other changed"],
)
def test_a_metric_once_set_cannot_change(kube: Cluster, crds: Path, namespace: str, metrics: dict | None) -> None:  # type: ignore[type-arg]
    # A gate must not be passed by editing a number: metrics are add-only.
    original = version(spec__metrics={"accuracy": 0.9, "loss": 0.2})
    assert _apply(kube, namespace, original).returncode == 0
    updated = copy.deepcopy(original)
    if metrics is None:
        del updated["spec"]["metrics"]
    else:
        updated["spec"]["metrics"] = metrics
    out = kube.run("replace", "-n", namespace, "-f", "-", input=json.dumps(updated))
    assert out.returncode != 0, f"accepted metrics {metrics}"
    assert "spec.metrics" in out.stderr, out.stderr
    assert "may be added to but never changed" in out.stderr, out.stderr
    assert kube.get_json("-n", namespace, "modelversion/v")["spec"]["metrics"] == {"accuracy": 0.9, "loss": 0.2}


def test_a_metric_can_be_added(kube: Cluster, crds: Path, namespace: str) -> None:
    original = version(spec__metrics={"accuracy": 0.9})
    assert _apply(kube, namespace, original).returncode == 0
    original["spec"]["metrics"] = {"accuracy": 0.9, "f1": 0.8}
    out = _apply(kube, namespace, original)
    assert out.returncode == 0, out.stderr
    added = version()  # and metrics can be given to a version registered without any
    added["metadata"]["name"] = "w"
    assert _apply(kube, namespace, added).returncode == 0
    added["spec"]["metrics"] = {"accuracy": 0.7}
    assert _apply(kube, namespace, added).returncode == 0, "metrics could not be added"
    assert kube.get_json("-n", namespace, "modelversion/v")["spec"]["metrics"] == {"accuracy": 0.9, "f1": 0.8}
