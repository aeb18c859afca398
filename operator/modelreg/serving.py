"""Render the objects that serve a model: one Deployment per deployed version
and the `<model>` / `<model>-staging` Services. Pure: dicts in, dicts out.

Called by `reconciling` with the lifecycle plan's decisions. Only the fields of
`RegisteredModel.spec.serving` reach the Pod spec; everything else is fixed
here, with a restricted security context.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from modelreg.api.common import API_VERSION, Stage
from modelreg.api.modelversion import KIND as VERSION_KIND
from modelreg.api.registeredmodel import ARTIFACT_PATH_ENV, Serving, Toleration
from modelreg.api.registeredmodel import KIND as MODEL_KIND
from modelreg.facts import Rollout, RolloutState
from modelreg.troubles import Trouble
from modelreg.versionorder import newest_key

Obj = dict[str, Any]

MODEL_LABEL = "modelreg.dev/model"
VERSION_LABEL = "modelreg.dev/version"
FETCH_CONTAINER = "fetch-artifact"  # the init container that fetches and re-checks the artifact
STAGE_LABEL = "modelreg.dev/stage"
MANAGED_BY = {"app.kubernetes.io/managed-by": "modelreg"}
MODELS_DIR = "/models"
ARTIFACT_PATH = f"{MODELS_DIR}/artifact"
DEFAULT_OPERATOR_IMAGE = "ghcr.io/modelreg/modelreg:0.1.0"
# How long a serving container keeps serving after its Pod is told to go (before its
# SIGTERM). When the Service switches version the old Pods are scaled down at once, but
# each node's kube-proxy routes new connections to them until it has seen the switch:
# without this pause those connections were reset or refused (tests/e2e/test_real_traffic.py).
DRAIN_SECONDS = 5

_MAX_NAME = 63
_DIGEST_LEN = 8
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PLAIN_VERSION = re.compile(r"^[a-z0-9]([a-z0-9.]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def deployment_name(model: str, version: str) -> str:
    """`<model>-<version>` when that is a valid name and the version has no
    hyphen; otherwise a sanitized form ending in a short hash of the version, so
    distinct versions never share a name. A hyphen in a plain name would make it
    ambiguous across models (model `iris-a` version `1` and model `iris` version
    `a-1` would both be `iris-a-1`); without one, the last hyphen splits model
    from version.

    The hash always survives: what is cut to fit 63 characters is the readable
    part. Admission keeps model names short enough (52) that only the version is
    cut; for a longer model (stored before that rule) the model is cut too, and
    the hash then covers the model as well, as its full name is no longer shown.
    """
    plain = f"{model}-{version}"
    if _PLAIN_VERSION.match(version) and len(plain) <= _MAX_NAME:
        return plain
    safe = re.sub(r"[^a-z0-9-]+", "-", version.lower()).strip("-") or "v"
    hashed = version if len(model) + 3 + _DIGEST_LEN <= _MAX_NAME else f"{model}/{version}"
    digest = hashlib.sha256(hashed.encode()).hexdigest()[:_DIGEST_LEN]
    readable = f"{model}-{safe}"[: _MAX_NAME - _DIGEST_LEN - 1].rstrip("-")
    return f"{readable}-{digest}"


def version_label(version: str) -> str:
    """A label value for the version (label values allow fewer characters than versions)."""
    if _LABEL_VALUE.match(version) and len(version) <= 63:
        return version
    digest = hashlib.sha256(version.encode()).hexdigest()[:8]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", version).strip("_.-")[:50] or "v"
    return f"{safe}_{digest}"


def service_names(model: str) -> tuple[str, str]:
    return model, f"{model}-staging"


@dataclass(frozen=True)
class VersionRef:
    """What rendering needs to know about one version."""

    name: str  # the ModelVersion object's name
    uid: str
    version: str
    uri: str
    digest: str  # sha256 hex the init container re-verifies


@dataclass(frozen=True)
class StorageEnv:
    """How the init container reaches the store."""

    endpoint: str | None = None
    region: str | None = None
    secret_name: str | None = None
    access_key_id_key: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_key: str = "AWS_SECRET_ACCESS_KEY"


def render_deployment(
    *,
    model: str,
    serving: Serving,
    version: VersionRef,
    stage: Stage,
    replicas: int | None,
    storage: StorageEnv,
    operator_image: str = DEFAULT_OPERATOR_IMAGE,
) -> Obj:
    """The Deployment of one version. `replicas` None leaves the count to an autoscaler."""
    selector = {MODEL_LABEL: model, VERSION_LABEL: version_label(version.version)}
    spec: Obj = {
        "selector": {"matchLabels": selector},
        "progressDeadlineSeconds": serving.progress_deadline_seconds,
        "revisionHistoryLimit": 2,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {"labels": selector | MANAGED_BY},
            "spec": _pod_spec(serving=serving, version=version, storage=storage, operator_image=operator_image),
        },
    }
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(model, version.version),
            # The stage lives on the Deployment, not the Pod template: a stage change
            # must not restart Pods.
            "labels": selector | MANAGED_BY | {STAGE_LABEL: stage.value},
            "ownerReferences": [owner_reference(VERSION_KIND, version.name, version.uid)],
        },
        "spec": spec,
    }


def render_service(*, model: str, model_uid: str, serving: Serving, staging: bool, version: str | None) -> Obj:
    """`<model>` (Production) or `<model>-staging`. With no version, it selects no Pod."""
    name = service_names(model)[1 if staging else 0]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "labels": {MODEL_LABEL: model, STAGE_LABEL: "Staging" if staging else "Production"} | MANAGED_BY,
            "ownerReferences": [owner_reference(MODEL_KIND, model, model_uid)],
        },
        "spec": {
            "type": "ClusterIP",
            # An empty version label value matches no Pod: an endpoint with nothing behind
            # it is honest, one pointing at the wrong version is not.
            "selector": {MODEL_LABEL: model, VERSION_LABEL: version_label(version) if version else ""},
            "ports": [{"name": "http", "port": 80, "targetPort": serving.port, "protocol": "TCP"}],
        },
    }


def _pod_spec(*, serving: Serving, version: VersionRef, storage: StorageEnv, operator_image: str) -> Obj:
    container: Obj = {
        "name": "server",
        "image": serving.image,
        "ports": [{"name": "http", "containerPort": serving.port, "protocol": "TCP"}],
        "env": [{"name": ARTIFACT_PATH_ENV, "value": ARTIFACT_PATH}]
        + [{"name": e.name, "value": e.value} for e in serving.env],
        "volumeMounts": [{"name": "model", "mountPath": MODELS_DIR, "readOnly": True}],
        "securityContext": restricted(),
    }
    if serving.args:
        container["args"] = list(serving.args)
    # Quantities as strings, as the API server returns them: the Kubernetes client refuses
    # an integer (`nvidia.com/gpu: 1`) where its model says Quantity is a string.
    wanted = (("requests", serving.resources.requests), ("limits", serving.resources.limits))
    resources = {k: {name: str(q) for name, q in v.items()} for k, v in wanted if v}
    if resources:
        container["resources"] = resources
    container["readinessProbe"] = _readiness_probe(serving)
    # The kubelet's own sleep: no binary needed in the image (Kubernetes 1.30+).
    container["lifecycle"] = {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}}
    return artifact_pod(container=container, version=version, storage=storage, operator_image=operator_image,
                        serving=serving)  # fmt: skip


def artifact_pod(*, container: Obj, version: VersionRef, storage: StorageEnv, operator_image: str,
                 serving: Serving | None) -> Obj:  # fmt: skip
    """A Pod spec whose `container` finds the verified artifact at ARTIFACT_PATH: the
    `fetch-artifact` init container downloads it and re-checks the recorded digest
    first. Restricted security context; placed by `serving`'s nodeSelector and
    tolerations. Shared by serving Deployments and validation Jobs (`validating`)."""
    fetch: Obj = {
        "name": FETCH_CONTAINER,
        "image": operator_image,
        "args": ["fetch-artifact", "--uri", version.uri, "--sha256", version.digest, "--dest", ARTIFACT_PATH],
        "volumeMounts": [{"name": "model", "mountPath": MODELS_DIR}],
        "securityContext": restricted(),
    }
    if env := _storage_env(storage):  # the API server drops an empty list; so do we
        fetch["env"] = env
    pod: Obj = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [fetch],
        "containers": [container],
        "volumes": [{"name": "model", "emptyDir": {}}],
    }
    if serving is not None and serving.node_selector:
        pod["nodeSelector"] = dict(serving.node_selector)
    if serving is not None and serving.tolerations:
        pod["tolerations"] = [_toleration(t) for t in serving.tolerations]
    return pod


def _readiness_probe(serving: Serving) -> Obj:
    """The user's HTTP GET, or a TCP connect to the serving port: without any probe a
    Pod would take traffic as soon as its process starts, before the model is loaded."""
    probe = serving.readiness_probe
    if probe is None:
        return {"tcpSocket": {"port": serving.port}, "periodSeconds": 5, "failureThreshold": 3}
    rendered: Obj = {
        "httpGet": {"path": probe.path, "port": serving.port},
        "periodSeconds": probe.period_seconds,
        "failureThreshold": probe.failure_threshold,
        "timeoutSeconds": probe.timeout_seconds,
    }
    if probe.initial_delay_seconds:  # the API server does not store a 0 here: rendering it would be drift forever
        rendered["initialDelaySeconds"] = probe.initial_delay_seconds
    return rendered


def _toleration(toleration: Toleration) -> Obj:
    # Only the fields given, as given: the API server drops empty strings, and a field
    # rendered that the live object lacks would read as drift on every reconcile.
    fields = {"key": toleration.key, "operator": toleration.operator, "value": toleration.value,
              "effect": toleration.effect, "tolerationSeconds": toleration.toleration_seconds}  # fmt: skip
    return {k: str(v) if isinstance(v, str) else v for k, v in fields.items() if v not in (None, "")}


def _storage_env(storage: StorageEnv) -> list[Obj]:
    env: list[Obj] = []
    if storage.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": storage.endpoint})
    if storage.region:
        env.append({"name": "AWS_REGION", "value": storage.region})
    if storage.secret_name:
        for var, key in (("AWS_ACCESS_KEY_ID", storage.access_key_id_key),
                         ("AWS_SECRET_ACCESS_KEY", storage.secret_access_key_key)):  # fmt: skip
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": storage.secret_name, "key": key}}})
    return env


def restricted() -> Obj:
    """The container security context of everything the operator runs."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def owner_reference(kind: str, name: str, uid: str) -> Obj:
    return {"apiVersion": API_VERSION, "kind": kind, "name": name, "uid": uid, "controller": True,
            "blockOwnerDeletion": True}  # fmt: skip


def replicas_for(stage: Stage, serving: Serving, *, rolling_out: bool) -> int:
    """Production (and a version rolling out to it) runs `replicas`; Staging
    `stagingReplicas`; anything else is kept scaled to zero."""
    if stage is Stage.PRODUCTION or rolling_out:
        return serving.replicas
    if stage is Stage.STAGING:
        return serving.staging_replicas
    return 0


# --- which objects, from the lifecycle's decisions --------------------------------------


@dataclass(frozen=True)
class Placement:
    """One version as serving sees it."""

    ref: VersionRef | None  # None when the artifact was never verified (nothing to deploy)
    stage: Stage  # effective stage
    since: float = 0.0  # when it entered its effective stage (epoch seconds)


@dataclass(frozen=True)
class ServingPlan:
    deployments: list[Obj]
    delete: list[str]  # Deployment names to remove
    services: list[Obj]


def plan_serving(
    *,
    model: str,
    model_uid: str,
    serving: Serving,
    storage: StorageEnv,
    versions: dict[str, Placement],
    production: str | None,
    rolling_out: str | None,
    existing: set[str],
    staging: str | None = None,
    autoscaled: Collection[str],
    retention: int,
    operator_image: str = DEFAULT_OPERATOR_IMAGE,
) -> ServingPlan:
    """Deployments for Production, a version rolling out to it and Staging;
    archived versions keep theirs at zero replicas within `retention`."""
    deployments, delete = [], []
    # Newest first; versions archived within the same second go by version order.
    archived = sorted(
        (name for name, p in versions.items() if p.stage is Stage.ARCHIVED and p.ref is not None),
        key=lambda n: newest_key(versions[n].since, versions[n].ref.version),  # type: ignore[union-attr]
        reverse=True,
    )
    kept_archived = set(archived[:retention])
    for name, p in sorted(versions.items()):
        if p.ref is None:
            continue
        dep_name = deployment_name(model, p.ref.version)
        wanted = name in (production, rolling_out) or p.stage is Stage.STAGING
        keep_scaled_down = dep_name in existing and (name in kept_archived or p.stage is Stage.DEVELOPMENT)
        if wanted or keep_scaled_down:
            replicas = replicas_for(p.stage, serving, rolling_out=name == rolling_out) if wanted else 0
            deployments.append(
                render_deployment(
                    model=model,
                    serving=serving,
                    version=p.ref,
                    stage=p.stage,
                    replicas=None if dep_name in autoscaled and wanted else replicas,
                    storage=storage,
                    operator_image=operator_image,
                )
            )
        elif dep_name in existing:
            delete.append(dep_name)

    def version_of(name: str | None) -> str | None:
        ref = versions[name].ref if name else None
        return ref.version if ref else None

    services = [
        render_service(
            model=model, model_uid=model_uid, serving=serving, staging=False, version=version_of(production)
        ),
        render_service(model=model, model_uid=model_uid, serving=serving, staging=True, version=version_of(staging)),
    ]
    return ServingPlan(deployments=deployments, delete=delete, services=services)


def fully_available(deployment: Obj) -> bool:
    """Every wanted Pod of the latest spec is available (trivially so at zero
    replicas). Only a Deployment that is not gets its Pods read for `rollout_of`."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    replicas = int(spec.get("replicas", 1))
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    return replicas == 0 or (
        int(status.get("observedGeneration", 0)) >= int((deployment.get("metadata") or {}).get("generation", 0))
        and int(status.get("updatedReplicas", 0)) >= replicas
        and int(status.get("availableReplicas", 0)) >= replicas
        and conditions.get("Available", {}).get("status") == "True"
    )


def rollout_of(
    deployment: Obj, *, want_replicas: int, trouble: Trouble | None = None,
    requested_at: datetime.datetime | None = None, now: datetime.datetime | None = None,
) -> Rollout:  # fmt: skip
    """How a version's Deployment is doing, for the lifecycle's switch decision.

    `trouble` is what its Pods say (`troubles.pod_trouble`, read only while the
    Deployment is not fully available); the message quotes it. Pods that are stuck
    (crash-looping, an image that cannot be pulled, a missing Secret) mark the
    rollout `stuck` at once, without waiting for the progress deadline: the
    serving version is then reported failed, a promotion stuck (`lifecycle`).
    Computed afresh on every reconcile, so Pods that recover make it Progressing
    or Available again.

    `requested_at` (with `now`): when the version was asked for Production, for a
    version that is to take over. Kubernetes times only rollouts of a new template
    against `progressDeadlineSeconds`, never a scale-up: a kept Deployment scaled
    up again for a rollback keeps the Progressing reason of its last completed
    rollout (NewReplicaSetAvailable) and would wait forever. Such a scale-up fails
    here once the deadline has passed since the request."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    replicas = int(spec.get("replicas", 1))
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    progressing = conditions.get("Progressing", {})
    current = int(status.get("observedGeneration", 0)) >= int(meta.get("generation", 0))
    trouble = trouble if replicas > 0 else None
    why = f"; {trouble.message}" if trouble is not None else ""
    if (
        current
        and replicas > 0
        and progressing.get("status") == "False"
        and (progressing.get("reason") == "ProgressDeadlineExceeded")
    ):
        message = f"Deployment {meta.get('name')}: {progressing.get('message', '')}".strip()
        return Rollout(RolloutState.FAILED, message + why)
    failure = conditions.get("ReplicaFailure", {})
    if replicas > 0 and failure.get("status") == "True":
        # Pods that cannot even be created (an invalid image reference, a quota):
        # waiting for the progress deadline would only delay saying so.
        reason = failure.get("reason", "ReplicaFailure")
        return Rollout(RolloutState.FAILED, f"Deployment {meta.get('name')}: {reason}: {failure.get('message', '')}")
    if replicas >= max(want_replicas, 1) and fully_available(deployment):
        return Rollout(RolloutState.AVAILABLE, f"Deployment {meta.get('name')} is Available")
    available = int(status.get("availableReplicas", 0))
    message = f"Deployment {meta.get('name')}: {available}/{replicas} Pods available{why}"
    deadline = int(spec.get("progressDeadlineSeconds", 600))
    untimed = progressing.get("reason") == "NewReplicaSetAvailable"  # no rollout under way: a scale-up
    if untimed and replicas > 0 and requested_at and now and (now - requested_at).total_seconds() > deadline:
        return Rollout(RolloutState.FAILED, f"{message}, {deadline}s after the Production request "
                       "(progressDeadlineSeconds)", available=available)  # fmt: skip
    return Rollout(RolloutState.PROGRESSING, message, available=available, stuck=trouble is not None and trouble.stuck)
