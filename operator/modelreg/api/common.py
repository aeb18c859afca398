"""Types shared by both kinds: conditions, stages and the API's identity.

Pure data (pydantic), imported by the operator, the lifecycle engine and the
CRD generator alike; no I/O.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict, JsonValue

GROUP = "modelreg.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "modelreg"
FIELD_MANAGER = "modelreg"

# Kubernetes object names (RFC 1123 subdomain) and label values, for CEL-free checks.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Service names must be DNS-1035 labels: a letter first, no dots.
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# The operator names Services `<model>` and `<model>-staging` and Deployments
# `<model>-<version>`, falling back to `<model>-<v>-<8 hex digits>` for versions
# that do not fit: 52 leaves room for that fallback (11 characters) within 63.
MAX_MODEL_NAME = 52
STAGING_SUFFIX = "-staging"


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


def cel(rule: str, message: str, *, reason: str | None = None, field_path: str | None = None) -> JsonDict:
    """A CEL validation rule for `x-kubernetes-validations`."""
    entry: JsonDict = {"rule": rule, "message": message}
    if reason:
        entry["reason"] = reason
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def immutable(path: str, hint: str) -> JsonDict:
    """Schema extra that makes a field unchangeable after create."""
    return {"x-kubernetes-validations": [cel("self == oldSelf", f"{path} is immutable: {hint}")]}


def friendly(rule: str, message: str) -> JsonDict:
    """A CEL twin of a pattern, whose message says what a valid value looks like."""
    return {"x-kubernetes-validations": [cel(rule, message)]}


def rules(*entries: JsonDict) -> JsonDict:
    """Schema extra holding several CEL rules, each with its own message."""
    return {"x-kubernetes-validations": list(entries)}


def model_name_rules(path: str) -> list[JsonDict]:
    """What a model name must be for the operator to name its Services and
    Deployments after it; `path` is the CEL expression of the name."""
    return [
        cel(
            f"{path}.matches('{DNS_1035_LABEL}')",
            "a model name must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter "
            "and ending with a letter or digit, no dots (it names the model's Services)",
        ),
        cel(
            f"size({path}) <= {MAX_MODEL_NAME}",
            f"a model name must be at most {MAX_MODEL_NAME} characters: the operator names the Services <model> "
            "and <model>-staging and the Deployments <model>-<version>, and each must fit in 63",
        ),
        cel(
            f"!{path}.endsWith('{STAGING_SUFFIX}')",
            f"a model name must not end in '{STAGING_SUFFIX}': model x's staging Service is named "
            f"x{STAGING_SUFFIX}, which would be this model's Production Service",
        ),
    ]


def admission_only(**schema: JsonValue) -> JsonDict:
    """Schema keywords the API server enforces but the operator's parsing does not.

    Limits added after objects may already be stored go here: the API server
    lets unchanged stored values stay (validation ratcheting), and the operator
    must keep reading such an object rather than drop it and disturb what serves.
    """
    return dict(schema)
