"""Types shared by both kinds: conditions, stages and the API's identity.

Pure data (pydantic), imported by the operator, the lifecycle engine and the
CRD generator alike; no I/O.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

GROUP = "modelreg.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "modelreg"
FIELD_MANAGER = "modelreg"

# Kubernetes object names (RFC 1123 subdomain) and label values, for CEL-free checks.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class Stage(enum.StrEnum):
    DEVELOPMENT = "Development"
    STAGING = "Staging"
    PRODUCTION = "Production"
    ARCHIVED = "Archived"


class ApiModel(BaseModel):
    """Base of every API type: camelCase on the wire is spelled out per field,
    attribute docstrings become the CRD's descriptions."""

    model_config = ConfigDict(
        use_attribute_docstrings=True,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )


class Condition(ApiModel):
    """A kstatus / metav1.Condition-shaped observation."""

    type: Annotated[str, Field(max_length=316)]
    """Condition type, e.g. Ready, Reconciling, Stalled, ArtifactVerified."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: Annotated[str, Field(max_length=1024)] = ""
    """One CamelCase word a program can switch on."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """What happened and what a person can do about it."""
    observed_generation: Annotated[int | None, Field(alias="observedGeneration")] = None
    """The metadata.generation this condition was computed from."""
    last_transition_time: Annotated[datetime | None, Field(alias="lastTransitionTime")] = None
    """When status last changed."""


def cel(rule: str, message: str, *, reason: str | None = None) -> JsonDict:
    """A CEL validation rule for `x-kubernetes-validations`."""
    entry: JsonDict = {"rule": rule, "message": message}
    if reason:
        entry["reason"] = reason
    return entry


def immutable(path: str, hint: str) -> JsonDict:
    """Schema extra that makes a field unchangeable after create."""
    return {"x-kubernetes-validations": [cel("self == oldSelf", f"{path} is immutable: {hint}")]}


def friendly(rule: str, message: str) -> JsonDict:
    """A CEL twin of a pattern, whose message says what a valid value looks like."""
    return {"x-kubernetes-validations": [cel(rule, message)]}
