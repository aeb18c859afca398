"""Kubernetes int-or-string values (resource quantities, ports by name).

A separate tiny module because both the serving types and the CRD generator
must agree on the marker that becomes `x-kubernetes-int-or-string`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

INT_OR_STRING_MARK = "x-kubernetes-int-or-string"

IntOrString = Annotated[int | str, Field(json_schema_extra={INT_OR_STRING_MARK: True})]
"""An integer or a string, as Kubernetes quantities are (`cpu: 1`, `cpu: 500m`)."""

# resource.Quantity's syntax without a sign: a Pod may not ask for a negative amount.
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

# Checked by the API server only (the pattern lives in the schema, not in pydantic's
# string branch), so a stored object from before these rules still parses.
Quantity = Annotated[int | str, Field(json_schema_extra={
    INT_OR_STRING_MARK: True,
    "pattern": QUANTITY_PATTERN,
    "maxLength": 64,
    "x-kubernetes-validations": [{
        "rule": "isQuantity(string(self)) && quantity(string(self)).compareTo(quantity('0')) >= 0",
        "message": "must be a Kubernetes quantity of at least 0, e.g. 2, 500m (CPU) or 512Mi, 1Gi (bytes)",
    }],
})]  # fmt: skip
"""A resource amount: an integer or a Kubernetes quantity string (`cpu: 1`, `cpu: 500m`, `memory: 1Gi`)."""
