"""The lifecycle engine's records: what goes in, what comes out, and the
per-version scratch state shared by deciding and reporting. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from modelreg import gates
from modelreg.api.common import Stage
from modelreg.api.modelversion import ModelVersionSpec, ModelVersionStatus, Phase
from modelreg.api.registeredmodel import RegisteredModelSpec, RegisteredModelStatus
from modelreg.facts import ArtifactCheck, ValidationCheck

ARTIFACT_VERIFIED = "ArtifactVerified"
ROLLED_OUT = "RolledOut"


@dataclass(frozen=True)
class VersionInput:
    name: str
    generation: int
    spec: ModelVersionSpec
    status: ModelVersionStatus
    artifact: ArtifactCheck | None = None  # None: not checked this time; keep what status says
    uid: str = ""
    created: datetime | None = None  # metadata.creationTimestamp: the older of two same-version objects wins
    validation: ValidationCheck | None = None  # None: the model validates nothing now; status.validation stays


@dataclass(frozen=True)
class ModelInput:
    name: str
    generation: int
    spec: RegisteredModelSpec
    status: RegisteredModelStatus


@dataclass(frozen=True)
class Event:
    kind: str  # "ModelVersion" or "RegisteredModel"
    name: str
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Plan:
    versions: dict[str, ModelVersionStatus]
    model: RegisteredModelStatus | None
    events: list[Event] = field(default_factory=list)
    production: str | None = None  # object name of the version serving Production
    rolling_out: str | None = None  # object name of the version whose rollout gates the switch
    staging: str | None = None  # object name of the newest Staging version: the staging Service's
    retry: bool = False  # a transient failure or a gate not known yet: reconcile again with backoff


@dataclass
class Work:
    """Per-version scratch state while planning."""

    v: VersionInput
    verdicts: list[gates.Verdict]
    artifact_ok: bool
    artifact_transient: bool
    requested_at: datetime | None
    effective: Stage
    reason: str = ""  # why the effective stage changes, if it does
    note: str = ""  # the same for a person: history and Events
    message: str = ""  # why the version is held, waiting or stalled: conditions
    phase: Phase = Phase.READY
    stalled: str | None = None
    waiting: str | None = None
    skipped_staging: str = ""  # why the Strict stage order lets it into Production without Staging: history

    def gates_pass(self) -> bool:
        return all(verdict.passed for verdict in self.verdicts)

    def failed_gates(self) -> list[gates.Verdict]:
        return [verdict for verdict in self.verdicts if not verdict.passed]


def timestamp(value: datetime | None) -> float:
    return value.timestamp() if value else 0.0
