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

from collections.abc import Sequence
from typing import Any

from modelreg.api import FIELD_MANAGER
from modelreg.api.modelversion import ModelVersionStatus

Obj = dict[str, Any]

# The fields the lifecycle reads back as memory; a forgery of others (conditions,
# phase) is simply overwritten by the next plan. The stage fields have a truth to
# restore (the history); a validation outcome has none but its Job, so a forged
# one is dropped and the Job's own result (or a new run) takes its place: else a
# written "Passed", or a metric, would open a gate.
STAGE_FIELDS = ("stage", "productionRequestedAt")
VALIDATION_FIELDS = ("validation",)
REMEMBERED = STAGE_FIELDS + VALIDATION_FIELDS


def foreign_status_writer(obj: Obj, names: Sequence[str] = REMEMBERED) -> str | None:
    """The manager, other than the operator, that owns one of these status fields."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("subresource") != "status" or entry.get("manager") == FIELD_MANAGER:
            continue
        fields = ((entry.get("fieldsV1") or {}).get("f:status")) or {}
        if any(f"f:{name}" in fields for name in names):
            return str(entry.get("manager") or "an unnamed client")
    return None


def evidence(meta: Obj) -> list[Obj]:
    """The part of `meta`'s managedFields that `foreign_status_writer` reads: other
    managers' entries for the status subresource, with only the remembered fields.
    What the watch-fed cache keeps of a ModelVersion's or RegisteredModel's
    managedFields (`handlers`, `kube.list_for_cache`): the rest, the owner of every
    field of spec and status, is a large part of each object and never read."""
    kept: list[Obj] = []
    for entry in meta.get("managedFields") or []:
        if entry.get("subresource") != "status" or entry.get("manager") == FIELD_MANAGER:
            continue
        fields = ((entry.get("fieldsV1") or {}).get("f:status")) or {}
        remembered: Obj = {f"f:{name}": {} for name in REMEMBERED if f"f:{name}" in fields}
        if remembered:
            kept.append(
                {"manager": entry.get("manager"), "subresource": "status", "fieldsV1": {"f:status": remembered}}
            )
    return kept


def restore(obj: Obj, status: ModelVersionStatus) -> tuple[ModelVersionStatus, str] | None:
    """The status to believe and what was wrong, when somebody else wrote a remembered
    field to something the operator's own records do not give; None when nothing was."""
    said = []
    writer = foreign_status_writer(obj, STAGE_FIELDS)
    truth = trusted(status)
    if writer is not None and (truth.stage, truth.production_requested_at) != (
        status.stage,
        status.production_requested_at,
    ):
        was = status.stage.value if status.stage else "nothing"
        now = truth.stage.value if truth.stage else "unset"
        said.append(f"status.stage was set to {was} by {writer}, not by the operator; restored {now}")
    else:
        truth = status
    writer = foreign_status_writer(obj, VALIDATION_FIELDS)
    if writer is not None and status.validation is not None:
        said.append(f"status.validation was written by {writer}, not by the operator; dropped, so the "
                    "validation Job's own outcome counts")  # fmt: skip
        truth = truth.model_copy(update={"validation": None})
    if not said:
        return None
    return truth, "; ".join(said) + " (only the operator writes status)"


def trusted(status: ModelVersionStatus) -> ModelVersionStatus:
    """The status with its effective stage taken from the operator's own history,
    and no Production request time unless that history says it serves."""
    stage = status.history[-1].stage if status.history else None
    requested = status.production_requested_at if stage is not None and stage.value == "Production" else None
    return status.model_copy(update={"stage": stage, "production_requested_at": requested})
