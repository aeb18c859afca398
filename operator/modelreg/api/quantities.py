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
