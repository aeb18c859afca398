"""A status written by somebody else is not the truth (issue 7, item 9)."""

from __future__ import annotations

from modelreg import tampering
from modelreg.api.common import Stage
from modelreg.api.modelversion import ModelVersionStatus


def entry(manager: str, *fields: str, subresource: str = "status") -> dict[str, object]:
    return {"manager": manager, "operation": "Update", "subresource": subresource,
            "fieldsV1": {"f:status": {f: {} for f in fields}}}  # fmt: skip


def test_only_a_foreign_writer_of_remembered_fields_counts() -> None:
    ours = {"metadata": {"managedFields": [entry("modelreg", "f:stage")]}}
    assert tampering.foreign_status_writer(ours) is None
    conditions_only = {"metadata": {"managedFields": [entry("kubectl-patch", "f:conditions")]}}
    assert tampering.foreign_status_writer(conditions_only) is None
    spec = {"metadata": {"managedFields": [entry("kubectl-client-side-apply", "f:stage", subresource="")]}}
    assert tampering.foreign_status_writer(spec) is None
    forged = {"metadata": {"managedFields": [entry("modelreg", "f:history"), entry("kubectl-patch", "f:stage")]}}
    assert tampering.foreign_status_writer(forged) == "kubectl-patch"


def test_the_trusted_stage_comes_from_the_operators_history() -> None:
    status = ModelVersionStatus.model_validate({
        "stage": "Production", "productionRequestedAt": "2026-11-30T10:00:00Z",
        "history": [{"stage": "Staging", "time": "2026-11-30T09:00:00Z"},
                    {"stage": "Archived", "time": "2026-11-30T09:30:00Z"}],
    })  # fmt: skip
    trusted = tampering.trusted(status)
    assert trusted.stage is Stage.ARCHIVED
    assert trusted.production_requested_at is None
    assert tampering.trusted(ModelVersionStatus.model_validate({"stage": "Production"})).stage is None
