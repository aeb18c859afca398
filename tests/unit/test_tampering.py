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


VALIDATED = {
    "validation": {
        "result": "Passed",
        "reason": "Succeeded",
        "key": "k1",
        "jobName": "m-1-validate-k1",
        "metrics": {"accuracy": 0.99},
    }
}


def test_a_validation_outcome_written_by_somebody_else_is_dropped() -> None:
    """A forged "Passed" (or metric) would open the validation and metric gates."""
    status = ModelVersionStatus.model_validate(VALIDATED)
    forged = {"metadata": {"managedFields": [entry("kubectl-patch", "f:validation")]}}
    found = tampering.restore(forged, status)
    assert found is not None
    believed, message = found
    assert believed.validation is None
    assert "status.validation was written by kubectl-patch" in message
    ours = {"metadata": {"managedFields": [entry("modelreg", "f:validation")]}}
    assert tampering.restore(ours, status) is None


def test_a_forged_stage_is_restored_and_an_unchanged_one_is_left() -> None:
    status = ModelVersionStatus.model_validate({
        "stage": "Production", "history": [{"stage": "Staging", "time": "2026-11-30T09:00:00Z"}]})  # fmt: skip
    forged = {"metadata": {"managedFields": [entry("kubectl-patch", "f:stage")]}}
    found = tampering.restore(forged, status)
    assert found is not None
    assert found[0].stage is Stage.STAGING
    assert "status.stage was set to Production by kubectl-patch" in found[1]
    honest = status.model_copy(update={"stage": Stage.STAGING})
    assert tampering.restore(forged, honest) is None  # the same value the history gives: nothing to restore


def test_the_cache_keeps_of_managed_fields_exactly_what_tells_a_forgery() -> None:
    """The watch-fed cache keeps only `evidence` of a version's managedFields (issue 11,
    memory): every question `foreign_status_writer` asks gets the same answer from it."""
    spec = entry("kubectl-client-side-apply", "f:stage", subresource="")
    ours = entry("modelreg", "f:stage", "f:history", "f:conditions", "f:artifact")
    cases = [
        [spec, ours],
        [spec, ours, entry("kubectl-patch", "f:conditions", "f:phase")],
        [ours, entry("kubectl-patch", "f:stage", "f:conditions")],
        [ours, entry("script", "f:validation"), entry("kubectl-patch", "f:productionRequestedAt")],
        [{"operation": "Update", "subresource": "status", "fieldsV1": {"f:status": {"f:stage": {}}}}],  # no manager
        [],
    ]
    for fields in cases:
        meta = {"managedFields": fields}
        kept = {"metadata": {"managedFields": tampering.evidence(meta)}}
        for names in (tampering.REMEMBERED, tampering.STAGE_FIELDS, tampering.VALIDATION_FIELDS):
            assert tampering.foreign_status_writer(kept, names) == tampering.foreign_status_writer(
                {"metadata": meta}, names
            )
    # Nothing is kept where nobody else wrote a remembered field: the common case costs nothing.
    assert tampering.evidence({"managedFields": [spec, ours, entry("kubectl-patch", "f:conditions")]}) == []
    assert tampering.evidence({"managedFields": [ours, entry("kubectl-patch", "f:stage", "f:conditions")]}) == [
        {"manager": "kubectl-patch", "subresource": "status", "fieldsV1": {"f:status": {"f:stage": {}}}}
    ]
