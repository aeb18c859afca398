"""The RegisteredModel kind: one model, how it is served, promoted and stored."""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import ConfigDict, Field

from modelreg.api.common import ApiModel, Condition, admission_only, cel, friendly, model_name_rules, rules
from modelreg.api.quantities import Quantity

KIND = "RegisteredModel"
PLURAL = "registeredmodels"
SINGULAR = "registeredmodel"

# metadata.name names the model's Services and Deployments (checked on the root schema,
# the only place a CRD's rules can read metadata.name). A name never changes, so it is
# checked on create only: a model stored before these rules can still be updated
# (validation ratcheting does not cover the root, which changes with every update).
NAME_RULES = [
    {**rule, "rule": f"oldSelf.hasValue() || ({rule['rule']})", "optionalOldSelf": True,
     "fieldPath": ".metadata.name", "reason": "FieldValueInvalid"}
    for rule in model_name_rules("self.metadata.name")
]  # fmt: skip

ARTIFACT_PATH_ENV = "MODEL_PATH"
"""The variable through which the operator tells the model server where the artifact is."""

# Resource names a container may ask for: the built-in ones, huge pages of one size,
# and extended resources named with a domain (nvidia.com/gpu), as Pod validation has them.
_HUGEPAGES = r"^hugepages-[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
_EXTENDED = (  # a DNS subdomain, '/', a name part (backslash doubled for the CEL string)
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_RESOURCE_NAME_RULE = cel(
    f"self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'] || k.matches('{_HUGEPAGES}')"
    f" || (k.matches('{_EXTENDED}') && !k.contains('kubernetes.io/') && !k.startsWith('requests.')))",
    "resource names must be cpu, memory, ephemeral-storage, hugepages-<size> (e.g. hugepages-2Mi) or an "
    "extended resource with a domain prefix (e.g. nvidia.com/gpu)",
)
_WHOLE_EXTENDED_RULE = cel(
    "self.all(k, !k.contains('/') || !isQuantity(string(self[k])) || quantity(string(self[k])).isInteger())",
    "extended resources (such as nvidia.com/gpu) are counted in whole units, e.g. 1 or 2",
)
_RESOURCE_MAP = {"maxProperties": 16, **rules(_RESOURCE_NAME_RULE, _WHOLE_EXTENDED_RULE)}


class EnvVar(ApiModel):
    """A plain environment variable for the serving container."""

    name: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")]
    """Variable name; MODEL_PATH is the operator's (the artifact's path)."""
    value: Annotated[str, Field(json_schema_extra=admission_only(maxLength=2048))] = ""
    """Variable value (at most 2048 characters)."""


class Resources(ApiModel):
    """CPU, memory and other resources for the serving container, as in a Pod spec."""

    model_config = ConfigDict(json_schema_extra=rules(cel(
        "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits)"
        " || !isQuantity(string(self.requests[k])) || !isQuantity(string(self.limits[k]))"
        " || quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)",
        "each request must be at most the limit of the same resource: a Pod whose request exceeds its "
        "limit is refused",
    ), cel(
        # Pods may not overcommit huge pages or extended resources.
        "!has(self.requests) || self.requests.all(k, !(k.contains('/') || k.startsWith('hugepages-'))"
        " || (has(self.limits) && k in self.limits && (!isQuantity(string(self.requests[k]))"
        " || !isQuantity(string(self.limits[k]))"
        " || quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) == 0)))",
        "hugepages-<size> and extended resources (such as nvidia.com/gpu) cannot be overcommitted: give each "
        "a limit, and a request only if it equals that limit",
    )))  # fmt: skip

    requests: Annotated[dict[str, Quantity], Field(json_schema_extra=_RESOURCE_MAP)] = {}
    """Minimum resources, e.g. {cpu: 500m, memory: 1Gi}. Names: cpu, memory, ephemeral-storage,
    hugepages-<size>, or an extended resource with a domain prefix such as nvidia.com/gpu."""
    limits: Annotated[dict[str, Quantity], Field(json_schema_extra=_RESOURCE_MAP)] = {}
    """Maximum resources; each request must be at most its limit (equal, for hugepages-<size> and extended
    resources, which need a limit)."""


# Label keys (a qualified name with an optional DNS-subdomain prefix) and label values, as
# Pod validation checks nodeSelector and tolerations. Backslashes doubled for CEL strings.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_LABEL_NAME}$"
_LABEL_VALUE = rf"^({_LABEL_NAME})?$"
_LABEL_KEY_MESSAGE = (
    "must be a label key: an optional DNS subdomain prefix of at most 253 characters and '/', then a name of "
    "at most 63 letters, digits, '-', '_' or '.' that starts and ends with a letter or digit "
    "(e.g. kubernetes.io/arch, gpu)"
)
_LABEL_VALUE_MESSAGE = (
    "must be a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
)
MAX_LABEL_KEY = 253 + 1 + 63


def _label_key_rule(expr: str) -> str:
    return f"{expr}.matches('{_LABEL_KEY}') && ({expr}.indexOf('/') <= 253)"


class TaintEffect(enum.StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class TolerationOperator(enum.StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class Toleration(ApiModel):
    """A taint the serving Pods tolerate, as in a Pod spec."""

    model_config = ConfigDict(json_schema_extra=rules(cel(
        "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
        "a toleration without a key must have operator Exists (it then tolerates every taint)",
    ), cel(
        "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
        "a toleration with operator Exists matches any value: leave value out",
    ), cel(
        "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
        "tolerationSeconds applies to effect NoExecute only (how long a Pod stays bound once the taint appears)",
    )))  # fmt: skip

    key: Annotated[str | None, Field(max_length=MAX_LABEL_KEY, json_schema_extra=rules(cel(
        f"self == '' || ({_label_key_rule('self')})", _LABEL_KEY_MESSAGE)))] = None  # fmt: skip
    """Taint key to match; without it, operator must be Exists and every taint is tolerated."""
    operator: TolerationOperator | None = None
    """Equal (the default: key and value must match) or Exists (any value of the key)."""
    value: Annotated[str | None, Field(max_length=63, json_schema_extra=rules(cel(
        f"self.matches('{_LABEL_VALUE}')", _LABEL_VALUE_MESSAGE)))] = None  # fmt: skip
    """Taint value to match, with operator Equal."""
    effect: TaintEffect | None = None
    """Taint effect to match: NoSchedule, PreferNoSchedule or NoExecute; without it, every effect."""
    toleration_seconds: Annotated[int | None, Field(alias="tolerationSeconds", ge=0, le=31536000)] = None
    """With effect NoExecute: seconds a Pod stays on a node after the taint appears (without it, forever)."""


class ReadinessProbe(ApiModel):
    """An HTTP GET that tells when a serving Pod can take traffic."""

    path: Annotated[str, Field(pattern=r"^/", max_length=2048)] = "/"
    """Path to GET on the serving port."""
    initial_delay_seconds: Annotated[int, Field(alias="initialDelaySeconds", ge=0)] = 0
    """Seconds after start before the first probe."""
    period_seconds: Annotated[int, Field(alias="periodSeconds", ge=1)] = 5
    """Seconds between probes."""
    failure_threshold: Annotated[int, Field(alias="failureThreshold", ge=1)] = 3
    """Consecutive failures before the Pod is marked not ready."""
    timeout_seconds: Annotated[int, Field(alias="timeoutSeconds", ge=1, le=60)] = 1
    """Seconds a probe may take before it counts as failed (Kubernetes' default is 1: a
    server busy with predictions may need more, or its Pods all turn unready at once)."""


class Serving(ApiModel):
    """How versions of this model run. Only these fields reach the Pod spec."""

    image: Annotated[str, Field(min_length=1, max_length=1024, json_schema_extra={
        **admission_only(pattern=r"^\S+$"),
        **friendly("self.matches(r'^\\S+$')", "must be an image reference without whitespace, "
                   "e.g. registry.example.com/team/server:1.0")})]  # fmt: skip
    """Container image of the model server (no whitespace); the artifact is mounted at /models
    and its path is in the MODEL_PATH variable."""
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    """Port the model server listens on."""
    args: Annotated[list[Annotated[str, Field(json_schema_extra=admission_only(maxLength=2048))]],
                    Field(max_length=64)] = []  # fmt: skip
    """Arguments of the model server (at most 64, each at most 2048 characters)."""
    env: Annotated[list[EnvVar], Field(max_length=128, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
        **rules(cel(f"self.all(e, e.name != '{ARTIFACT_PATH_ENV}')",
                    f"{ARTIFACT_PATH_ENV} is set by the operator to the artifact's path; name the variable "
                    "differently"))})] = []  # fmt: skip
    """Environment variables of the model server, each name once; MODEL_PATH is set by the operator."""
    resources: Resources = Resources()
    """Resource requests and limits of the model server."""
    replicas: Annotated[int, Field(ge=0, le=1000, json_schema_extra=rules(cel(
        "self >= 1",
        "must be at least 1; to take a model offline, remove spec.serving (the operator then deletes the "
        "model's Deployments)")))] = 1  # fmt: skip
    """Replicas of the Production version, at least 1. To take a model offline, remove spec.serving."""
    staging_replicas: Annotated[int, Field(alias="stagingReplicas", ge=0, le=1000, json_schema_extra=rules(cel(
        "self >= 1",
        "must be at least 1: a Staging version is served for testing; to serve nothing, set no version's "
        "stage to Staging")))] = 1  # fmt: skip
    """Replicas of the Staging version, at least 1."""
    readiness_probe: Annotated[ReadinessProbe | None, Field(alias="readinessProbe")] = None
    """Readiness probe, an HTTP GET on the serving port. Without it, a TCP connection to the serving port
    every 5 seconds: a Pod takes traffic once its server accepts connections."""
    node_selector: Annotated[dict[str, Annotated[str, Field(max_length=63)]], Field(
        alias="nodeSelector", json_schema_extra={"maxProperties": 32, **rules(
            cel(f"self.all(k, {_label_key_rule('k')})", f"node selector keys {_LABEL_KEY_MESSAGE}"),
            cel(f"self.all(k, self[k].matches('{_LABEL_VALUE}'))", f"node selector values {_LABEL_VALUE_MESSAGE}"),
        )})] = {}  # fmt: skip
    """Node labels the serving Pods require (at most 32), e.g. {nvidia.com/gpu.present: "true"}."""
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = []
    """Taints the serving Pods tolerate (at most 32), e.g. of nodes reserved for GPU workloads."""
    progress_deadline_seconds: Annotated[int, Field(alias="progressDeadlineSeconds", ge=10)] = 600
    """Seconds a rollout may take before it counts as failed."""


class Direction(enum.StrEnum):
    HIGHER_IS_BETTER = "HigherIsBetter"
    LOWER_IS_BETTER = "LowerIsBetter"


class MetricThreshold(ApiModel):
    """Bounds a metric must meet before a version may enter Staging or Production."""

    metric: Annotated[str, Field(min_length=1, max_length=128)]
    """Metric name, as in ModelVersion spec.metrics."""
    min: float | None = None
    """Smallest value allowed (inclusive)."""
    max: float | None = None
    """Largest value allowed (inclusive)."""


class CompareToProduction(ApiModel):
    """The candidate must be at least as good as the serving version on one metric."""

    metric: Annotated[str, Field(min_length=1, max_length=128)]
    """Metric name to compare."""
    direction: Direction = Direction.HIGHER_IS_BETTER
    """Whether higher or lower values are better."""
    margin: Annotated[float, Field(ge=0)] = 0.0
    """How much worse than Production the candidate may be (absolute)."""


class StageOrder(enum.StrEnum):
    FREE = "Free"
    """Production may be asked for from Staging or Archived, or at creation (admission refuses only
    Development → Production on update)."""
    STRICT = "Strict"
    """Production requires a Staging entry in the version's status.history, except for a rollback or a
    restore from Git (the version's artifact digest already served Production for this model, or no
    version of the model has served Production yet)."""


class BestBy(ApiModel):
    """The metric by which the best version of the model is named in its status."""

    metric: Annotated[str, Field(min_length=1, max_length=128)]
    """Metric name, as in ModelVersion spec.metrics."""
    direction: Direction = Direction.HIGHER_IS_BETTER
    """Whether higher or lower values are better."""


VALIDATION_ENV_PREFIX = "MODELREG_"
"""Variables the operator sets for a validation Job (the version's facts) start with this."""


class GuardedStage(enum.StrEnum):
    """A stage a validation Job can guard."""

    STAGING = "Staging"
    PRODUCTION = "Production"


class ValidationJob(ApiModel):
    """A Job the operator runs for each version that asks for a guarded stage, on the same
    verified artifact as serving (mounted at /models, path in MODEL_PATH); exit 0 passes."""

    image: Annotated[str, Field(min_length=1, max_length=1024, json_schema_extra={
        **admission_only(pattern=r"^\S+$"),
        **friendly("self.matches(r'^\\S+$')", "must be an image reference without whitespace, "
                   "e.g. registry.example.com/team/validate:1.0")})]  # fmt: skip
    """Container image of the validation (no whitespace)."""
    command: Annotated[list[Annotated[str, Field(json_schema_extra=admission_only(maxLength=2048))]],
                       Field(max_length=64)] = []  # fmt: skip
    """Entrypoint (at most 64 items); without it, the image's own."""
    args: Annotated[list[Annotated[str, Field(json_schema_extra=admission_only(maxLength=2048))]],
                    Field(max_length=64)] = []  # fmt: skip
    """Arguments (at most 64, each at most 2048 characters)."""
    env: Annotated[list[EnvVar], Field(max_length=64, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
        **rules(cel(f"self.all(e, e.name != '{ARTIFACT_PATH_ENV}' && !e.name.startsWith('{VALIDATION_ENV_PREFIX}'))",
                    f"{ARTIFACT_PATH_ENV} and names starting with {VALIDATION_ENV_PREFIX} are set by the operator "
                    "(the version's facts); name the variable differently"))})] = []  # fmt: skip
    """Environment variables, each name once. The operator adds MODEL_PATH and MODELREG_MODEL, MODELREG_VERSION,
    MODELREG_STAGE, MODELREG_DIGEST, MODELREG_ARTIFACT_URI, MODELREG_METRICS (JSON), and MODELREG_PRODUCTION_VERSION
    and MODELREG_PRODUCTION_ENDPOINT when a version serves Production."""
    resources: Resources = Resources()
    """Resource requests and limits of the validation container."""
    active_deadline_seconds: Annotated[int, Field(alias="activeDeadlineSeconds", ge=1, le=86400)] = 600
    """Seconds the Job may run, artifact download included; past them it fails (reason DeadlineExceeded)."""
    backoff_limit: Annotated[int, Field(alias="backoffLimit", ge=0, le=10)] = 0
    """Retries of a failed Pod before the Job fails."""
    ttl_seconds_after_finished: Annotated[int, Field(alias="ttlSecondsAfterFinished", ge=0, le=604800)] = 3600
    """Seconds a finished Job (and its Pods and logs) is kept; its outcome stays in the version's
    status.validation."""
    stages: Annotated[list[GuardedStage], Field(min_length=1, max_length=2, json_schema_extra={
        "x-kubernetes-list-type": "set"})] = [GuardedStage.STAGING, GuardedStage.PRODUCTION]  # fmt: skip
    """Stages the Job guards: a version enters one only once its Job passed."""


class Promotion(ApiModel):
    """Gates a version must pass before Staging and Production."""

    thresholds: Annotated[list[MetricThreshold], Field(max_length=64, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["metric"]})] = []  # fmt: skip
    """Per-metric bounds."""
    compare_to_production: Annotated[CompareToProduction | None, Field(alias="compareToProduction")] = None
    """Require the candidate to match or beat the serving version."""
    stage_order: Annotated[StageOrder, Field(alias="stageOrder")] = StageOrder.FREE
    """Free (the default) or Strict: with Strict, a version enters Production only after it has been in Staging
    (its status.history says so), also when created at Production; a rollback and a restore from Git are exempt.
    The operator holds such a version with StageOrder=False, reason StagingRequired."""
    best_by: Annotated[BestBy | None, Field(alias="bestBy")] = None
    """The metric and direction that name status.bestVersion, among the versions whose artifact is verified
    (whatever their stage). Without it, compareToProduction's metric and direction, if set."""
    validation: ValidationJob | None = None
    """A validation Job each version must pass before the guarded stages. It runs on the serving
    placement (spec.serving's nodeSelector and tolerations) and with the serving Pods' security context."""


class SecretKeyRef(ApiModel):
    """A Secret in the model's namespace holding S3 credentials."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Secret name."""
    access_key_id_key: Annotated[str, Field(alias="accessKeyIdKey", json_schema_extra=admission_only(
        maxLength=253))] = "AWS_ACCESS_KEY_ID"  # fmt: skip
    """Key of the access key id in the Secret."""
    secret_access_key_key: Annotated[str, Field(alias="secretAccessKeyKey", json_schema_extra=admission_only(
        maxLength=253))] = "AWS_SECRET_ACCESS_KEY"  # fmt: skip
    """Key of the secret access key in the Secret."""


class Storage(ApiModel):
    """Where artifacts live. Without it, the operator's ambient AWS credentials are used."""

    endpoint: Annotated[str | None, Field(pattern=r"^https?://", max_length=2048)] = None
    """S3 endpoint URL, for S3-compatible stores; empty for AWS."""
    region: Annotated[str | None, Field(max_length=64)] = None
    """Region of the bucket."""
    credentials_secret: Annotated[SecretKeyRef | None, Field(alias="credentialsSecret")] = None
    """Secret with the access key pair."""


class Retention(ApiModel):
    """How much of the past is kept running-ready."""

    archived_deployments: Annotated[int, Field(alias="archivedDeployments", ge=0, le=100)] = 2
    """Archived versions whose Deployment (scaled to 0) is kept for fast rollback."""


class RegisteredModelSpec(ApiModel):
    """Desired state of a registered model."""

    description: Annotated[str, Field(max_length=4096)] = ""
    """What the model does."""
    owner: Annotated[str, Field(max_length=256)] = ""
    """Team or person responsible for the model."""
    serving: Serving | None = None
    """How the Staging and Production versions are served; without it nothing is deployed."""
    promotion: Promotion = Promotion()
    """Gates before Staging and Production."""
    storage: Storage | None = None
    """Artifact store settings."""
    retention: Retention = Retention()
    """How many archived versions keep their Deployment."""


MAX_SERVED_ARTIFACTS = 50


class ServedArtifact(ApiModel):
    """An artifact that served Production for this model."""

    digest: str
    """sha256:<hex> of the artifact."""
    version: str
    """The version that served it (first)."""


class RegisteredModelStatus(ApiModel):
    """Observed state of a registered model, written by the operator."""

    observed_generation: Annotated[int | None, Field(alias="observedGeneration")] = None
    """The metadata.generation this status describes."""
    production_version: Annotated[str | None, Field(alias="productionVersion")] = None
    """Version serving Production."""
    staging_version: Annotated[str | None, Field(alias="stagingVersion")] = None
    """Version in Staging."""
    version_count: Annotated[int, Field(alias="versionCount")] = 0
    """Number of ModelVersions of this model."""
    endpoint: str | None = None
    """Name of the Service that serves Production."""
    best_version: Annotated[str | None, Field(alias="bestVersion")] = None
    """The version with the best value of spec.promotion.bestBy's metric among the versions whose artifact is
    verified, whatever their stage (a tie goes to the higher version)."""
    best_value: Annotated[float | None, Field(alias="bestValue")] = None
    """bestVersion's value of the metric it is best by."""
    served_artifacts: Annotated[list[ServedArtifact], Field(alias="servedArtifacts", max_length=MAX_SERVED_ARTIFACTS,
                                                            )] = []  # fmt: skip
    """Artifacts that served Production, oldest first (the last 50): with stageOrder Strict, a version whose
    digest is here may enter Production again without Staging (a restore). Kept while the model exists."""
    conditions: Annotated[list[Condition], Field(json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})] = []  # fmt: skip
    """Ready, Reconciling, Stalled and warnings such as ConflictingProductionRequests."""
