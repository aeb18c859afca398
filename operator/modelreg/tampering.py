"""Statuses written by someone other than the operator. Pure.

Called by `reconciling` when it reads a ModelVersion, and by `handlers` to tell
a forged status write from the echo of the operator's own. The operator uses
a version's status as its memory (effective stage, when Production was asked
for), so a status that somebody else wrote (`kubectl patch --subresource=status`,
a script with status rights) must not become the truth. Who wrote which field
is in `metadata.managedFields`; the history of stage transitions, which only
the operator appends to, says which stage the version really has. The
operator's next status apply takes the fields back (server-side apply with
force), so a forgery is restored once, with one Event, and never fought in a loop.
"""

from __future__ import annotations

from typing import Any

from modelreg.api import FIELD_MANAGER
from modelreg.api.modelversion import ModelVersionStatus

Obj = dict[str, Any]

# The fields the lifecycle reads back as memory; a forgery of others (conditions,
# phase) is simply overwritten by the next plan.
REMEMBERED = ("stage", "productionRequestedAt")


def foreign_status_writer(obj: Obj) -> str | None:
    """The manager, other than the operator, that owns a remembered status field."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("subresource") != "status" or entry.get("manager") == FIELD_MANAGER:
            continue
        fields = ((entry.get("fieldsV1") or {}).get("f:status")) or {}
        if any(f"f:{name}" in fields for name in REMEMBERED):
            return str(entry.get("manager") or "an unnamed client")
    return None


def trusted(status: ModelVersionStatus) -> ModelVersionStatus:
    """The status with its effective stage taken from the operator's own history,
    and no Production request time unless that history says it serves."""
    stage = status.history[-1].stage if status.history else None
    requested = status.production_requested_at if stage is not None and stage.value == "Production" else None
    return status.model_copy(update={"stage": stage, "production_requested_at": requested})
