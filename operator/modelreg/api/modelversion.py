"""The ModelVersion kind: one trained artifact of a model and the stage asked for it."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field

from modelreg.api.common import (
    ApiModel,
    Condition,
    Stage,
    admission_only,
    cel,
    friendly,
    immutable,
    model_name_rules,
    rules,
)

KIND = "ModelVersion"
PLURAL = "modelversions"
SINGULAR = "modelversion"
SHORT_NAMES = ["mv"]

S3_URI = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
SHA256_HEX = r"^[a-f0-9]{64}$"
VERSION_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._+-]*[A-Za-z0-9])?$"
MAX_HISTORY = 20
# The key must not be empty nor start with '/': a version names an object or a prefix
# inside its bucket, never the whole bucket.
IN_BUCKET_RULE = cel(
    "self.matches('^s3://[^/]+/[^/]')",
    "must name an object or a prefix inside the bucket, as s3://bucket/key or s3://bucket/prefix/ (the key is "
    "not empty and does not start with '/'): a whole bucket cannot be a version's artifact",
)
MAX_KEY = 128  # metric and label names
SHA256_RULE = friendly(f"self.matches('{SHA256_HEX}')", "must be 64 lowercase hexadecimal digits, as sha256sum prints")


class Artifact(ApiModel):
    """Where the trained model is stored and what it must hash to."""

    uri: Annotated[str, Field(pattern=S3_URI, max_length=2048, json_schema_extra=rules(cel(
        f"self.matches('{S3_URI}')",
        "must be s3://bucket/key for one object or s3://bucket/prefix/ for a directory; the bucket name has "
        "3 to 63 lowercase letters, digits, dots or hyphens"), IN_BUCKET_RULE))]  # fmt: skip
    """s3://bucket/key for one object, or s3://bucket/prefix/ (trailing slash) for a directory;
    never a whole bucket."""
    sha256: Annotated[str | None, Field(pattern=SHA256_HEX, max_length=64, json_schema_extra=SHA256_RULE)] = None
    """Expected SHA-256 (64 lowercase hex digits); for a prefix, of its sorted manifest."""
    format: Annotated[str | None, Field(max_length=64)] = None
    """Serialization format, e.g. onnx, safetensors, pickle (informational)."""


class Lineage(ApiModel):
    """Where the version came from."""

    experiment: Annotated[str | None, Field(max_length=256)] = None
    """Experiment name."""
    run_id: Annotated[str | None, Field(alias="runId", max_length=256)] = None
    """Training run id."""
    git_commit: Annotated[str | None, Field(alias="gitCommit", pattern=r"^[a-f0-9]{7,64}$")] = None
    """Commit of the training code."""
    dataset: Annotated[str | None, Field(max_length=1024)] = None
    """Dataset name or URI."""
    labels: Annotated[
        dict[str, Annotated[str, Field(json_schema_extra=admission_only(maxLength=256))]],
        Field(json_schema_extra={
            **admission_only(maxProperties=32),
            **rules(cel(f"self.all(k, size(k) <= {MAX_KEY})", f"label names must be at most {MAX_KEY} characters")),
        }),
    ] = {}  # fmt: skip
    """Free-form labels: at most 32, names at most 128 characters, values at most 256."""


class ModelVersionSpec(ApiModel):
    """Desired state of one model version."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "(has(oldSelf.stage) ? oldSelf.stage : 'Development') != 'Development'"
                    " || (has(self.stage) ? self.stage : 'Development') != 'Production'",
                    "spec.stage cannot move from Development straight to Production: promote to Staging first",
                    reason="FieldValueForbidden",
                ),
                # On the spec, not on the map: removing spec.metrics altogether must be
                # refused too, and a rule on a field that is gone is not evaluated.
                cel(
                    "!has(oldSelf.metrics) || oldSelf.metrics.all(k, has(self.metrics) && k in self.metrics"
                    " && self.metrics[k] == oldSelf.metrics[k])",
                    "spec.metrics may be added to but never changed: a metric once set keeps its value and stays "
                    "(the promotion gates read it); register a new ModelVersion for a new evaluation",
                    reason="FieldValueForbidden",
                    field_path=".metrics",
                ),
            ]
        }
    )

    model: Annotated[
        str,
        Field(
            min_length=1,
            max_length=63,
            pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
            json_schema_extra=rules(
                cel("self == oldSelf", "spec.model is immutable: create a new ModelVersion instead"),
                *model_name_rules("self"),
            ),
        ),
    ]
    """Name of the RegisteredModel in the same namespace: a DNS-1035 label of at most 52 characters
    that does not end in -staging (see RegisteredModel). Immutable."""
    version: Annotated[
        str,
        Field(
            min_length=1,
            max_length=63,
            pattern=VERSION_PATTERN,
            json_schema_extra=immutable("spec.version", "create a new ModelVersion instead"),
        ),
    ]
    """Version string, e.g. 3 or 1.4.0; unique within the model. Immutable."""
    artifact: Annotated[
        Artifact, Field(json_schema_extra=immutable("spec.artifact", "register a new ModelVersion for a new artifact"))
    ]
    """The trained model's files. Immutable: register a new version instead."""
    metrics: Annotated[dict[str, float], Field(max_length=64, json_schema_extra=rules(cel(
        f"self.all(k, size(k) <= {MAX_KEY})", f"metric names must be at most {MAX_KEY} characters")))] = {}  # fmt: skip
    """Evaluation metrics by name (at most 64, names at most 128 characters), read by the promotion gates."""
    lineage: Lineage = Lineage()
    """Provenance."""
    stage: Stage = Stage.DEVELOPMENT
    """Requested stage: Development, Staging, Production or Archived."""
    description: Annotated[str, Field(max_length=4096)] = ""
    """What changed in this version."""


class Phase(enum.StrEnum):
    """One word for where a version is, for `kubectl get` (conditions say why)."""

    READY = "Ready"
    """In its requested stage, artifact verified."""
    PENDING = "Pending"
    """The artifact is not verified yet (or no longer verifies)."""
    RECONCILING = "Reconciling"
    """On its way to the requested stage."""
    WAITING = "Waiting"
    """Waiting for the store to answer; retried with backoff."""
    BLOCKED = "Blocked"
    """A gate or a rule refuses the requested stage; the conditions say which."""
    PROMOTING = "Promoting"
    """Rolling out to Production; the previous version serves until this one is Available."""
    HANDING_OVER = "HandingOver"
    """Asked to leave Production; keeps serving until its successor is Available."""
    HELD = "Held"
    """Asked to leave Production with no successor: keeps serving (remove spec.serving to take the model offline)."""
    SUPERSEDED = "Superseded"
    """Asked for Production, but a newer request won."""
    FAILED = "Failed"
    """Its Production rollout failed; the previous version kept serving."""
    DEGRADED = "Degraded"
    """Serving, but a change to its Deployment did not roll out; the Pods that were serving keep serving."""


class ArtifactStatus(ApiModel):
    """Facts the operator verified about the artifact."""

    digest: str | None = None
    """sha256:<hex> of the object, or of the prefix's manifest."""
    short_digest: Annotated[str | None, Field(alias="shortDigest")] = None
    """First 12 hex digits of the digest, for kubectl get."""
    size: int | None = None
    """Size in bytes (sum over files for a prefix)."""
    etag: str | None = None
    """ETag seen at verification (joined over files for a prefix)."""
    version_id: Annotated[str | None, Field(alias="versionId")] = None
    """Object VersionId, on versioned buckets."""
    checksum_source: Annotated[str | None, Field(alias="checksumSource")] = None
    """Store (the store's own SHA-256) or Streamed (downloaded and hashed)."""
    files: int | None = None
    """Number of objects under a prefix."""
    verified_at: Annotated[datetime | None, Field(alias="verifiedAt")] = None
    """When the artifact was last verified."""


class ValidationResult(enum.StrEnum):
    RUNNING = "Running"
    PASSED = "Passed"
    FAILED = "Failed"


MAX_VALIDATION_MESSAGE = 1024
"""Characters of a validation Job's termination message kept in status (its end)."""


class ValidationStatus(ApiModel):
    """The last validation Job of this version (RegisteredModel spec.promotion.validation)."""

    key: Annotated[str, Field(max_length=64)]
    """Hash of what the Job depended on (artifact digest, Job template, version generation): it runs again only
    when this changes."""
    job_name: Annotated[str, Field(alias="jobName", max_length=63)]
    """The Job; deleted after its ttlSecondsAfterFinished, while this outcome stays."""
    result: ValidationResult
    """Running, Passed or Failed."""
    reason: Annotated[str, Field(max_length=128)] = ""
    """Why, in one word (e.g. Succeeded, Failed, DeadlineExceeded, ImagePullFailed, Unschedulable)."""
    message: Annotated[str, Field(max_length=4096)] = ""
    """What happened, quoting the end of the Job's termination message."""
    generation: int = 0
    """The version's metadata.generation the Job validated."""
    digest: Annotated[str, Field(max_length=80)] = ""
    """The artifact digest the Job validated."""
    # None rather than empty: a server-side apply that empties a map it owned stores null, which the schema refuses.
    metrics: Annotated[dict[str, float] | None, Field(max_length=64)] = None
    """Metrics the Job reported (a JSON object in its termination message); the metric gates read them, over
    spec.metrics of the same name."""
    started_at: Annotated[datetime | None, Field(alias="startedAt")] = None
    """When the Job was created."""
    finished_at: Annotated[datetime | None, Field(alias="finishedAt")] = None
    """When its outcome was known."""


class Transition(ApiModel):
    """One change of effective stage."""

    stage: Stage
    """The stage entered."""
    time: datetime
    """When."""
    reason: str = ""
    """Why, in one word."""
    message: str = ""
    """Why, for a person."""


class ModelVersionStatus(ApiModel):
    """Observed state of a model version, written by the operator."""

    observed_generation: Annotated[int | None, Field(alias="observedGeneration")] = None
    """The metadata.generation this status describes."""
    stage: Stage | None = None
    """Effective stage: what the version really is, which may lag or differ from spec.stage."""
    phase: Phase | None = None
    """One word for where the version is; see the conditions for why."""
    artifact: ArtifactStatus | None = None
    """Verified artifact facts."""
    production_requested_at: Annotated[datetime | None, Field(alias="productionRequestedAt")] = None
    """When the operator first saw spec.stage ask for Production; the newest request wins."""
    deployment_name: Annotated[str | None, Field(alias="deploymentName")] = None
    """The Deployment serving this version, if any."""
    validation: ValidationStatus | None = None
    """The last validation Job's outcome, when the model has one (RegisteredModel spec.promotion.validation)."""
    history: Annotated[list[Transition], Field(max_length=MAX_HISTORY)] = []
    """The last transitions of the effective stage, oldest first."""
    conditions: Annotated[list[Condition], Field(json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})] = []  # fmt: skip
    """Ready, Reconciling, Stalled and one condition per gate."""
