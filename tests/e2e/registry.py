"""Helpers for e2e tests of the registry: manifests, S3 objects and status reads."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from modelreg import artifacts
from modelreg.devcluster import cluster
from tests.conftest import wait_for
from tests.e2e.conftest import S3, Cluster

BUCKET = "modelreg-e2e"


def model_manifest(name: str, **spec: Any) -> str:
    return json.dumps({"apiVersion": "modelreg.dev/v1alpha1", "kind": "RegisteredModel",
                       "metadata": {"name": name}, "spec": spec})  # fmt: skip


def version_manifest(
    name: str,
    *,
    model: str,
    version: str,
    uri: str,
    sha256: str | None = None,
    stage: str = "Development",
    metrics: dict[str, float] | None = None,
) -> str:
    artifact: dict[str, Any] = {"uri": uri}
    if sha256:
        artifact["sha256"] = sha256
    spec = {"model": model, "version": version, "stage": stage, "artifact": artifact,
            "metrics": metrics or {"accuracy": 0.9}}  # fmt: skip
    return json.dumps({"apiVersion": "modelreg.dev/v1alpha1", "kind": "ModelVersion",
                       "metadata": {"name": name}, "spec": spec})  # fmt: skip


@dataclass
class Artifact:
    uri: str
    sha256: str


def upload(s3: S3, *, data: bytes | None = None, store_checksum: bool = True) -> Artifact:
    """A fresh object with unique content; with `store_checksum` the store keeps its SHA-256."""
    data = data if data is not None else f"model weights {uuid.uuid4()}".encode()
    client = s3.client()
    artifacts.ensure_bucket(client, BUCKET)
    key = f"models/{uuid.uuid4().hex}/model.bin"
    extra = {"ChecksumAlgorithm": "SHA256"} if store_checksum else {}
    client.put_object(Bucket=BUCKET, Key=key, Body=data, **extra)
    return Artifact(uri=f"s3://{BUCKET}/{key}", sha256=hashlib.sha256(data).hexdigest())


def secret_manifest(name: str, data: dict[str, bytes], *, opted_in: bool = True) -> str:
    """A Secret with storage credentials; `opted_in` labels it for the operator's use."""
    labels = {"modelreg.dev/storage-credentials": "true"} if opted_in else {}
    encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": labels},
                       "type": "Opaque", "data": encoded})  # fmt: skip


def apply(kube: Cluster, namespace: str, manifest: str) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)


def set_stage(kube: Cluster, namespace: str, name: str, stage: str) -> None:
    patch = json.dumps({"spec": {"stage": stage}})
    kube.kubectl("patch", "-n", namespace, "modelversion", name, "--type=merge", "-p", patch)


def status(kube: Cluster, namespace: str, name: str, kind: str = "modelversion") -> dict[str, Any]:
    return dict(kube.get_json("-n", namespace, f"{kind}/{name}").get("status") or {})


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions", []) if c["type"] == type_), {})


def wait_stage(kube: Cluster, namespace: str, name: str, stage: str, *, timeout: float = 60) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        st = status(kube, namespace, name)
        return st if st.get("stage") == stage else None

    return wait_for(probe, timeout=timeout, what=f"{name} to reach effective stage {stage}")


def wait_condition(
    kube: Cluster, namespace: str, name: str, type_: str, *, status_: str, reason: str | None = None,
    timeout: float = 60, kind: str = "modelversion",
) -> dict[str, Any]:  # fmt: skip
    def probe() -> dict[str, Any] | None:
        st = status(kube, namespace, name, kind)
        c = condition(st, type_)
        if c.get("status") == status_ and (reason is None or c.get("reason") == reason):
            return st
        return None

    return wait_for(probe, timeout=timeout, what=f"{kind}/{name} condition {type_}={status_} ({reason})")


def events(kube: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items = kube.get_json("-n", namespace, "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return list(items)


def operator_writes(audit_log: str, namespace: str) -> list[dict[str, Any]]:
    """Write requests in `namespace` made by anything but kubectl (i.e. the operator)."""
    writes = []
    with open(audit_log) as f:
        for line in f:
            entry = json.loads(line)
            ref = entry.get("objectRef") or {}
            if (
                entry.get("stage") == "ResponseComplete"
                and entry.get("verb") in ("create", "update", "patch", "delete", "deletecollection")
                and ref.get("namespace") == namespace
                and not str(entry.get("userAgent", "")).startswith("kubectl")
            ):
                writes.append(entry)
    return writes


# Placed on the dev cluster's kwok node explicitly: it is tainted, and a real node may run beside it.
SERVING: dict[str, Any] = {"image": "registry.example.com/model-server:1.0", "port": 8080, "replicas": 2,
                           "stagingReplicas": 1, "progressDeadlineSeconds": 10} | cluster.kwok_placement()  # fmt: skip


def deployment(kube: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    out = kube.run("get", "deployment", name, "-n", namespace, "-o", "json")
    return json.loads(out.stdout) if out.returncode == 0 else None


def service_selector(kube: Cluster, namespace: str, name: str) -> dict[str, str] | None:
    out = kube.run("get", "service", name, "-n", namespace, "-o", "json")
    return json.loads(out.stdout)["spec"].get("selector") if out.returncode == 0 else None


def serving_version(kube: Cluster, namespace: str, model: str) -> str | None:
    selector = service_selector(kube, namespace, model) or {}
    return selector.get("modelreg.dev/version") or None


def wait_serving(kube: Cluster, namespace: str, model: str, version: str, *, timeout: float = 90) -> None:
    wait_for(lambda: serving_version(kube, namespace, model) == version, timeout=timeout,
             what=f"Service {model} to select version {version}")  # fmt: skip


def wait_replicas(kube: Cluster, namespace: str, name: str, replicas: int, *, timeout: float = 60) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        d = deployment(kube, namespace, name)
        if d and d["spec"].get("replicas") == replicas and d["status"].get("availableReplicas", 0) == replicas:
            return d
        if d and replicas == 0 and d["spec"].get("replicas") == 0:
            return d
        return None

    return wait_for(probe, timeout=timeout, what=f"Deployment {name} at {replicas} available replicas")


def serve_first_version(kube: Cluster, s3: S3, namespace: str, **serving: object) -> str:
    """Model `m` with version 1 serving Production (2 replicas); returns its artifact URI."""
    art = upload(s3)
    apply(kube, namespace, model_manifest("m", serving=SERVING | serving))
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=art.uri, sha256=art.sha256,
                                            stage="Production"))  # fmt: skip
    wait_stage(kube, namespace, "m-1", "Production", timeout=90)
    wait_serving(kube, namespace, "m", "1")
    wait_replicas(kube, namespace, "m-1", 2)
    return art.uri


def serve_then_lose_everything(kube: Cluster, s3: S3, namespace: str, **model: Any) -> tuple[str, Artifact, Artifact]:
    """A disaster to recover from: model `m` serves version 1 (Production) with version 2 in
    Staging, then everything is deleted, objects and what served them. Returns the
    manifests (what Git holds) and the two artifacts."""
    a, b = upload(s3), upload(s3)
    manifests = "\n---\n".join([
        model_manifest("m", serving=SERVING, **model),
        version_manifest("m-1", model="m", version="1", uri=a.uri, sha256=a.sha256, stage="Production"),
        version_manifest("m-2", model="m", version="2", uri=b.uri, sha256=b.sha256, stage="Staging"),
    ])  # fmt: skip
    apply(kube, namespace, manifests)
    wait_serving(kube, namespace, "m", "1")
    wait_stage(kube, namespace, "m-2", "Staging")
    kube.kubectl("annotate", "modelversion/m-1", "-n", namespace, "modelreg.dev/allow-delete-serving=true")
    kube.kubectl("delete", "modelversions,registeredmodels", "--all", "-n", namespace)
    kube.kubectl("delete", "deployments,services", "--all", "-n", namespace, "--ignore-not-found")
    wait_for(lambda: not kube.get_json("-n", namespace, "deployments")["items"], timeout=60, what="nothing left")
    return manifests, a, b
