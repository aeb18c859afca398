"""Validation Jobs: whether a version needs one, the Job itself, and what its
outcome is. Pure: dicts and API types in, dicts and facts out.

Called by `reconciling`, once per version and reconcile, with the model's
Jobs and (for Jobs still running) their Pods as the API returns them. The
answer (`Decision`) holds the gate's fact for `lifecycle` (a
`facts.ValidationCheck`), the Job to create and the Jobs to delete.

When a Job runs. A version that asks for a guarded stage it is not in yet,
with a verified artifact, needs the outcome of a Job for its current *key*: a
hash of the artifact digest, the Job template (with the serving placement it
inherits) and the version's generation. The key is on the Job (annotation)
and in status.validation; an outcome recorded for the current key is final, so
a Job runs again only when one of those changes, never on a reconcile alone,
and a Job deleted by its TTL is not recreated. A rollback (a version that
served Production before) is not validated again, as it is not compared to
Production again either.

Failure is anything but exit 0: a non-zero exit (the Job's backoff limit
used up), its deadline, an init container that could not fetch or verify the
artifact, and two that Kubernetes itself never ends, which are read from the
Pods: an image that cannot be pulled and a Pod that cannot be scheduled. Such a
Job is deleted once its failure is recorded (it would wait out its deadline).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelreg import serving
from modelreg.api.common import Stage
from modelreg.api.modelversion import KIND as VERSION_KIND
from modelreg.api.modelversion import MAX_VALIDATION_MESSAGE, ValidationResult, ValidationStatus
from modelreg.api.registeredmodel import ARTIFACT_PATH_ENV, Serving, ValidationJob
from modelreg.facts import ValidationCheck

Obj = dict[str, Any]

VALIDATION_LABEL = "modelreg.dev/validation"  # on validation Pods: the model's name (never the version label)
KEY_ANNOTATION = "modelreg.dev/validation-key"
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"  # set by the Job controller on its Pods
CONTAINER = "validate"
MAX_METRICS = 64
MAX_METRIC_NAME = 128
_KEY_LENGTH = 32
_SUFFIX = "-validate-"
# Waiting reasons that no retry of the kubelet fixes; the Job would wait out its deadline.
_PULL = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
_CONFIG = frozenset({"CreateContainerConfigError", "CreateContainerError"})
# Failures read from a Pod while its Job runs on: that Job is deleted.
STUCK = frozenset({"ImagePullFailed", "Unschedulable", "ContainerConfigError"})


@dataclass(frozen=True)
class Setting:
    """What a model's validation Jobs are made of, besides the version."""

    namespace: str
    model: str
    template: ValidationJob
    served: Serving | None  # spec.serving: the Job runs where the serving Pods run
    storage: serving.StorageEnv
    operator_image: str
    production_version: str | None = None  # the version serving Production, if any
    production_endpoint: str | None = None  # its URL through the model's Service


@dataclass(frozen=True)
class Version:
    """One version as validation sees it."""

    name: str  # the ModelVersion object
    uid: str
    generation: int
    version: str
    uri: str
    metrics: Mapping[str, float]
    stage: Stage  # requested
    effective: Stage
    served_before: bool  # a request for Production is then a rollback
    digest: str | None  # sha256:<hex>, when the artifact is verified
    record: ValidationStatus | None  # status.validation


@dataclass(frozen=True)
class Decision:
    check: ValidationCheck | None  # None: no gate, and status.validation stays as it is
    create: Obj | None = None
    delete: tuple[str, ...] = ()  # Job names


def decide(
    setting: Setting | None, v: Version, *, jobs: Sequence[Obj], pods: Sequence[Obj], now: datetime.datetime
) -> Decision:
    """`jobs`: the model's validation Jobs (this version's are picked by owner);
    `pods`: the Pods of those still running (picked by the Job's uid)."""
    mine = [j for j in jobs if _owner(j) == v.name]
    unfinished = [j for j in mine if not finished(j)]
    if setting is None or v.stage.value not in setting.template.stages or v.effective is v.stage:
        return Decision(_settled(v.record, gated=setting is not None, now=now), delete=_names(unfinished))
    if v.stage is Stage.PRODUCTION and v.served_before:
        settled = _settled(v.record, gated=False, now=now)
        rollback = ValidationCheck(
            True,
            "Rollback",
            "this version served Production before; a rollback is not validated again",
            record=settled.record if settled else None,
        )
        return Decision(rollback, delete=_names(unfinished))
    if v.digest is None:
        waiting = ValidationCheck(None, "WaitingForArtifact", "the validation Job runs once the artifact is verified")
        return Decision(waiting)
    key = validation_key(setting, digest=v.digest, generation=v.generation)
    stale = _names(j for j in unfinished if job_key(j) != key)
    if v.record is not None and v.record.key == key and v.record.result is not ValidationResult.RUNNING:
        return Decision(_from_record(v.record), delete=stale)
    job = next((j for j in mine if job_key(j) == key), None)
    if job is None:
        name = job_name(setting.model, v, key)
        started = now.replace(microsecond=0)
        record = ValidationStatus(
            key=key,
            job_name=name,
            result=ValidationResult.RUNNING,
            reason="Running",
            message=f"validation Job {name} is running",
            generation=v.generation,
            digest=v.digest,
            started_at=started,
        )
        return Decision(_from_record(record), create=render_job(setting, v, key=key, name=name), delete=stale)
    uid = (job.get("metadata") or {}).get("uid")
    own_pods = [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(JOB_UID_LABEL) == uid]
    record = outcome(job, own_pods, now=now, key=key, generation=v.generation, digest=v.digest, previous=v.record)
    if record.result is ValidationResult.FAILED and record.reason in STUCK and not finished(job):
        stale += (job["metadata"]["name"],)  # no image, no node: nothing left to wait for but its deadline
    return Decision(_from_record(record), delete=stale)


def validation_key(setting: Setting, *, digest: str, generation: int) -> str:
    """What a Job's outcome depends on: the artifact, the template (and the serving
    placement it runs on), the version's generation. Not the Production version,
    the operator's image or the store's address: changing those reruns nothing."""
    placement = {}
    if setting.served is not None:
        placement = setting.served.model_dump(mode="json", by_alias=True, include={"node_selector", "tolerations"})
    basis = {
        "digest": digest,
        "generation": generation,
        "placement": placement,
        "template": setting.template.model_dump(mode="json", by_alias=True),
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:_KEY_LENGTH]


def job_name(model: str, v: Version, key: str) -> str:
    """`<model>-<version>-validate-<hash>` cut to 63 characters (the Job controller
    labels its Pods with the name). The hash covers the object's name and the key,
    so two versions, or two keys of one version, never share a Job."""
    digest = hashlib.sha256(f"{v.name}/{key}".encode()).hexdigest()[:8]
    base = serving.deployment_name(model, v.version)[: 63 - len(_SUFFIX) - len(digest)].rstrip("-")
    return f"{base}{_SUFFIX}{digest}"


def render_job(setting: Setting, v: Version, *, key: str, name: str) -> Obj:
    """The Job: the serving Pods' init container fetches and re-verifies the artifact,
    then the template's container runs with the version's facts in its environment."""
    assert v.digest is not None
    t = setting.template
    facts = {
        ARTIFACT_PATH_ENV: serving.ARTIFACT_PATH,
        "MODELREG_MODEL": setting.model,
        "MODELREG_VERSION": v.version,
        "MODELREG_STAGE": v.stage.value,
        "MODELREG_DIGEST": v.digest,
        "MODELREG_ARTIFACT_URI": v.uri,
        "MODELREG_METRICS": json.dumps(dict(sorted(v.metrics.items()))),
    }
    if setting.production_version is not None:
        facts["MODELREG_PRODUCTION_VERSION"] = setting.production_version
    if setting.production_endpoint is not None:
        facts["MODELREG_PRODUCTION_ENDPOINT"] = setting.production_endpoint
    container: Obj = {
        "name": CONTAINER,
        "image": t.image,
        "env": [{"name": k, "value": value} for k, value in facts.items()]
        + [{"name": e.name, "value": e.value} for e in t.env],
        # /tmp writable: the root file system is read-only, and test scripts write scratch files.
        "volumeMounts": [
            {"name": "model", "mountPath": serving.MODELS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": serving.restricted(),
        # A failure that wrote no message still says something: the end of its log.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if t.command:
        container["command"] = list(t.command)
    if t.args:
        container["args"] = list(t.args)
    wanted = (("requests", t.resources.requests), ("limits", t.resources.limits))
    if resources := {k: {n: str(q) for n, q in r.items()} for k, r in wanted if r}:
        container["resources"] = resources
    ref = serving.VersionRef(
        name=v.name, uid=v.uid, version=v.version, uri=v.uri, digest=v.digest.removeprefix("sha256:")
    )
    pod = serving.artifact_pod(
        container=container,
        version=ref,
        storage=setting.storage,
        operator_image=setting.operator_image,
        serving=setting.served,
    )
    pod["volumes"].append({"name": "tmp", "emptyDir": {}})
    pod["restartPolicy"] = "Never"
    labels = {serving.MODEL_LABEL: setting.model, serving.VERSION_LABEL: serving.version_label(v.version)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": labels | serving.MANAGED_BY,
            "annotations": {KEY_ANNOTATION: key},
            "ownerReferences": [serving.owner_reference(VERSION_KIND, v.name, v.uid)],
        },
        "spec": {
            "backoffLimit": t.backoff_limit,
            "activeDeadlineSeconds": t.active_deadline_seconds,
            "ttlSecondsAfterFinished": t.ttl_seconds_after_finished,
            # Not the version label: the model's Services select Pods by model and version.
            "template": {"metadata": {"labels": {VALIDATION_LABEL: setting.model} | serving.MANAGED_BY}, "spec": pod},
        },
    }


def outcome(
    job: Obj,
    pods: Sequence[Obj],
    *,
    now: datetime.datetime,
    key: str,
    generation: int,
    digest: str,
    previous: ValidationStatus | None = None,
) -> ValidationStatus:
    """What one Job says: Passed, Failed (with why) or still Running."""
    meta, status = job.get("metadata") or {}, job.get("status") or {}
    name = str(meta.get("name", ""))
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    started = previous.started_at if previous is not None and previous.key == key else None
    base = {
        "key": key,
        "jobName": name,
        "generation": generation,
        "digest": digest,
        "startedAt": started or _time(meta.get("creationTimestamp")) or now.replace(microsecond=0),
    }
    done = conditions.get("Complete") or conditions.get("SuccessCriteriaMet")
    if done is not None:
        said = _container_message(_last(pods, phase="Succeeded"), CONTAINER)
        message = f"validation Job {name} succeeded" + (f": {_tail(said)}" if said else "")
        finished = _time(status.get("completionTime")) or _time(done.get("lastTransitionTime"))
        passed = {"result": "Passed", "reason": "Succeeded", "message": message, "metrics": metrics_of(said) or None}
        return ValidationStatus.model_validate(base | passed | {"finishedAt": finished or now})
    failed = conditions.get("Failed") or conditions.get("FailureTarget")
    if failed is not None:
        reason, message = _failure(name, failed, pods)
        said = _container_message(_last(pods, phase="Failed"), CONTAINER)
        finished = _time(failed.get("lastTransitionTime")) or now
        failure = {"result": "Failed", "reason": reason, "message": message, "metrics": metrics_of(said) or None}
        return ValidationStatus.model_validate(base | failure | {"finishedAt": finished})
    stuck = _stuck(name, pods)
    if stuck is not None:
        return ValidationStatus.model_validate(
            base
            | {"result": "Failed", "reason": stuck[0], "message": stuck[1], "finishedAt": now.replace(microsecond=0)}
        )
    return ValidationStatus.model_validate(
        base | {"result": "Running", "reason": "Running", "message": f"validation Job {name} is running"}
    )


def metrics_of(message: str) -> dict[str, float]:
    """A JSON object of numbers in a termination message (the whole message, or its
    last line): at most 64, names at most 128 characters; anything else is ignored."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    for text in (message, lines[-1] if lines else ""):
        try:
            found = json.loads(text)
        except ValueError:
            continue
        if isinstance(found, dict):
            numbers = {
                str(k): float(n)
                for k, n in found.items()
                if isinstance(n, int | float)
                and not isinstance(n, bool)
                and math.isfinite(n)
                and 0 < len(str(k)) <= MAX_METRIC_NAME
            }
            return dict(sorted(numbers.items())[:MAX_METRICS])
    return {}


def _failure(name: str, failed: Obj, pods: Sequence[Obj]) -> tuple[str, str]:
    reason = str(failed.get("reason") or "Failed")
    if reason == "DeadlineExceeded":
        return reason, f"validation Job {name} ran past its activeDeadlineSeconds: {_tail(failed.get('message', ''))}"
    last = _last(pods, phase="Failed")
    for kind, key in (("init container", "initContainerStatuses"), ("container", "containerStatuses")):
        for cs in (last.get("status") or {}).get(key) or [] if last else []:
            term = (cs.get("state") or {}).get("terminated") or {}
            code = int(term.get("exitCode", 0))
            if code != 0:
                what = "ArtifactFetchFailed" if kind == "init container" else "Failed"
                said = _tail(str(term.get("message") or ""))
                text = f"validation Job {name}: {kind} {cs.get('name')} exited {code}"
                return what, text + (f": {said}" if said else "")
    return reason, f"validation Job {name} failed ({reason}): {_tail(failed.get('message', ''))}".rstrip(": ")


def _stuck(name: str, pods: Sequence[Obj]) -> tuple[str, str] | None:
    """A Pod that waits for what will not come: an image, a node, its config."""
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name", ""))):
        status = pod.get("status") or {}
        for c in status.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
                why = _tail(c.get("message", ""))
                return "Unschedulable", f"validation Job {name}: its Pod cannot be scheduled: {why}"
        for kind, key in (("init container", "initContainerStatuses"), ("container", "containerStatuses")):
            for cs in status.get(key) or []:
                waiting = (cs.get("state") or {}).get("waiting") or {}
                reason = waiting.get("reason", "")
                detail = _tail(str(waiting.get("message") or reason))
                if reason in _PULL:
                    return "ImagePullFailed", (
                        f"validation Job {name}: {kind} {cs.get('name')} cannot pull image "
                        f"{cs.get('image', '')!r}: {detail}"
                    )
                if reason in _CONFIG:
                    what = f"{kind} {cs.get('name')} cannot start"
                    return "ContainerConfigError", f"validation Job {name}: {what}: {detail}"
    return None


def _settled(record: ValidationStatus | None, *, gated: bool, now: datetime.datetime) -> ValidationCheck | None:
    """A version that needs no Job now: the last outcome stays in status (and, with
    `gated`, in its condition); a Job still running is cancelled (deleted)."""
    if record is None:
        return None
    if record.result is ValidationResult.RUNNING:
        cancelled = record.model_copy(
            update={
                "result": ValidationResult.FAILED,
                "reason": "Cancelled",
                "finished_at": now.replace(microsecond=0),
                "message": f"validation Job {record.job_name} was cancelled: the version no longer needs it",
            }
        )
        return ValidationCheck(None, "Cancelled", cancelled.message, cancelled, gated=False)
    return _from_record(record) if gated else None


def _from_record(record: ValidationStatus) -> ValidationCheck:
    passed = {ValidationResult.PASSED: True, ValidationResult.FAILED: False}.get(record.result)
    reason = "ValidationRunning" if passed is None else record.reason
    return ValidationCheck(passed, reason, record.message, record)


def _last(pods: Sequence[Obj], *, phase: str) -> Obj | None:
    """The Pod of that phase that started last (a retried Job has several)."""
    found = [p for p in pods if (p.get("status") or {}).get("phase") == phase]
    return max(found, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp", "")), default=None)


def _container_message(pod: Obj | None, container: str) -> str:
    for cs in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container:
            term = (cs.get("state") or {}).get("terminated") or {}
            return str(term.get("message") or "")
    return ""


def _tail(text: str) -> str:
    """The end of a message, on one line: errors say what went wrong last."""
    line = " | ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())
    return line if len(line) <= MAX_VALIDATION_MESSAGE else "…" + line[-(MAX_VALIDATION_MESSAGE - 1) :]


def finished(job: Obj) -> bool:
    """Complete or Failed: nothing of it runs any more (its TTL now counts)."""
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def _owner(job: Obj) -> str | None:
    refs = (job.get("metadata") or {}).get("ownerReferences") or []
    return next((r.get("name") for r in refs if r.get("controller") and r.get("kind") == VERSION_KIND), None)


def job_key(job: Obj) -> str | None:
    """The key a Job was made for (its annotation)."""
    return ((job.get("metadata") or {}).get("annotations") or {}).get(KEY_ANNOTATION)


def _names(jobs: Any) -> tuple[str, ...]:
    return tuple(str(j["metadata"]["name"]) for j in jobs)


def _time(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).replace(microsecond=0)
    if isinstance(value, str) and value:
        return datetime.datetime.fromisoformat(value).astimezone(datetime.UTC).replace(microsecond=0)
    return None
