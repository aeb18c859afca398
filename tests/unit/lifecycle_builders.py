"""Small builders for lifecycle inputs, shared by the scenario and property tests."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from modelreg import lifecycle
from modelreg.api.common import Stage
from modelreg.api.modelversion import ArtifactStatus, ModelVersionSpec, ModelVersionStatus
from modelreg.api.registeredmodel import RegisteredModelSpec, RegisteredModelStatus
from modelreg.facts import ArtifactCheck, ArtifactReason

NOW = datetime.datetime(2026, 11, 27, 12, 0, 0, tzinfo=datetime.UTC)
EARLIER = NOW - datetime.timedelta(hours=1)
DIGEST = "a" * 64

OK = ArtifactCheck(
    ArtifactReason.VERIFIED,
    "verified",
    ArtifactStatus.model_validate({"digest": f"sha256:{DIGEST}", "shortDigest": DIGEST[:12], "size": 10}),
)
MISMATCH = ArtifactCheck(ArtifactReason.CHECKSUM_MISMATCH, "the digest differs")
MISSING = ArtifactCheck(ArtifactReason.NOT_FOUND, "s3://b/k does not exist")
UNAVAILABLE = ArtifactCheck(ArtifactReason.STORAGE_UNAVAILABLE, "the store did not answer")


def model(**spec: Any) -> lifecycle.ModelInput:
    return lifecycle.ModelInput(
        name="iris", generation=1, spec=RegisteredModelSpec.model_validate(spec), status=RegisteredModelStatus()
    )


def version(
    number: str,
    stage: Stage = Stage.DEVELOPMENT,
    *,
    effective: Stage | None = None,
    requested_at: datetime.datetime | None = None,
    metrics: dict[str, float] | None = None,
    artifact: ArtifactCheck | None = OK,
    served_before: bool = False,
    generation: int = 1,
    status: ModelVersionStatus | None = None,
) -> lifecycle.VersionInput:
    if status is None:
        history = []
        if served_before:
            history.append({"stage": "Production", "time": EARLIER.isoformat(), "reason": "Promoted"})
        if effective is not None:
            history.append({"stage": effective.value, "time": EARLIER.isoformat(), "reason": "Promoted"})
        status = ModelVersionStatus.model_validate(
            {
                "stage": effective,
                "productionRequestedAt": requested_at,
                "history": history,
            }
        )
    return lifecycle.VersionInput(
        name=f"iris-{number}",
        generation=generation,
        spec=ModelVersionSpec.model_validate(
            {
                "model": "iris",
                "version": number,
                "stage": stage,
                "artifact": {"uri": f"s3://models/iris/{number}/model.onnx"},
                "metrics": metrics if metrics is not None else {"accuracy": 0.9},
            }
        ),
        status=status,
        artifact=artifact,
    )


def replan(
    before: lifecycle.Plan,
    model_in: lifecycle.ModelInput | None,
    versions: list[lifecycle.VersionInput],
    **kwargs: Any,
) -> lifecycle.Plan:
    """Plan again with the previous plan's statuses as the current ones."""
    fed = [dataclasses.replace(v, status=before.versions[v.name]) for v in versions]
    fed_model = None
    if model_in is not None and before.model is not None:
        fed_model = lifecycle.ModelInput(
            name=model_in.name, generation=model_in.generation, spec=model_in.spec, status=before.model
        )
    return lifecycle.plan(fed_model, fed, now=kwargs.pop("now", NOW), **kwargs)


def stages(plan: lifecycle.Plan) -> dict[str, Stage | None]:
    return {name: status.stage for name, status in plan.versions.items()}


def condition(plan: lifecycle.Plan, name: str, type_: str) -> tuple[str, str]:
    cond = next(c for c in plan.versions[name].conditions if c.type == type_)
    return cond.status, cond.reason
