"""Facts the operator gathers from the outside world, as plain values.

Produced by `artifacts` (and later the rollout watcher) and consumed by the
pure `lifecycle` engine, which never performs I/O itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from modelreg.api.modelversion import ArtifactStatus, ValidationStatus


class ArtifactReason(enum.StrEnum):
    VERIFIED = "Verified"
    NOT_FOUND = "ArtifactNotFound"
    ACCESS_DENIED = "AccessDenied"
    CHECKSUM_MISMATCH = "ChecksumMismatch"
    STORAGE_UNAVAILABLE = "StorageUnavailable"
    STORAGE_MISCONFIGURED = "StorageMisconfigured"
    INVALID = "InvalidArtifact"
    LIMIT_EXCEEDED = "VerificationLimitExceeded"  # bigger or slower to hash than the operator allows
    VERIFYING = "Verifying"  # a check runs; nothing may be decided on the old result meanwhile


@dataclass(frozen=True)
class ArtifactCheck:
    """The outcome of verifying one version's artifact."""

    reason: ArtifactReason
    message: str
    facts: ArtifactStatus | None = None

    @property
    def ok(self) -> bool:
        return self.reason is ArtifactReason.VERIFIED

    @property
    def transient(self) -> bool:
        """Worth retrying as is: the store did not answer (or not yet), it did not say no."""
        return self.reason in (ArtifactReason.STORAGE_UNAVAILABLE, ArtifactReason.VERIFYING)


@dataclass(frozen=True)
class ValidationCheck:
    """Where a version's validation Job stands (`validating.decide`), for its gate.

    `passed` None: not known yet (the Job runs, or waits for the artifact). `record`
    is what status.validation says from now on (None: keep what it says)."""

    passed: bool | None
    reason: str
    message: str
    record: ValidationStatus | None = None
    gated: bool = True  # False: no gate now (nothing asks for one), only the record to keep


class RolloutState(enum.StrEnum):
    PROGRESSING = "Progressing"
    AVAILABLE = "Available"
    FAILED = "Failed"


@dataclass(frozen=True)
class Rollout:
    """How the Deployment of a version that is to serve Production is doing."""

    state: RolloutState
    message: str = ""
    available: int | None = None  # Pods available, when known
    # Progressing, but its Pods are stuck (crash-looping, an image that cannot be
    # pulled, a missing Secret): waiting will not help, though fixing the cause will.
    # Said at once; a rollout to Production still ends only at its progress deadline.
    stuck: bool = False
