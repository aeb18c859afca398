"""The Argo CD health scripts in manifests/argocd, run in Lua 5.1 (the dialect of
Argo CD's gopher-lua) on status shapes the operator writes and on objects
captured from e2e runs (tests/unit/fixtures/gitops, written by
tests/e2e/test_gitops.py with MODELREG_SAVE_GITOPS_FIXTURES=1)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.gitops import ARGO_STATUSES, FIXTURES, KINDS, health


def resource(*, generation: int, observed: int | None, conditions: list[dict[str, str]]) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": conditions}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"metadata": {"name": "x", "generation": generation}, "status": status}


READY = {"type": "Ready", "status": "True", "reason": "Serving", "message": "serving version 2"}
NOT_READY = {"type": "Ready", "status": "False", "reason": "RolloutFailed", "message": "rollout failed"}
STALLED = {"type": "Stalled", "status": "True", "reason": "RolloutFailed", "message": "deadline exceeded"}


@pytest.mark.parametrize("kind", KINDS)
def test_current_and_ready_is_healthy(kind: str) -> None:
    assert health(kind, resource(generation=3, observed=3, conditions=[READY]))["status"] == "Healthy"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("observed", [None, 2])
def test_a_status_older_than_the_spec_is_progressing(kind: str, observed: int | None) -> None:
    # Ready=True from generation 2 says nothing about the spec of generation 3.
    got = health(kind, resource(generation=3, observed=observed, conditions=[READY]))
    assert got == {"status": "Progressing", "message": "the operator has not observed the latest spec yet"}


@pytest.mark.parametrize("kind", KINDS)
def test_stalled_is_degraded(kind: str) -> None:
    got = health(kind, resource(generation=1, observed=1, conditions=[NOT_READY, STALLED]))
    assert got == {"status": "Degraded", "message": "RolloutFailed: deadline exceeded"}


@pytest.mark.parametrize("kind", KINDS)
def test_not_ready_without_stalled_is_progressing(kind: str) -> None:
    assert health(kind, resource(generation=1, observed=1, conditions=[NOT_READY]))["status"] == "Progressing"


@pytest.mark.parametrize("kind", KINDS)
def test_conditions_without_reason_or_message_still_say_something(kind: str) -> None:
    # The CRD requires only type and status: a condition written by hand (kubectl
    # patch --subresource=status) or by another tool may lack the rest. Concatenating
    # a nil there made the script fail, and Argo CD shows a script error instead of health.
    bare = {"type": "Stalled", "status": "True"}
    assert health(kind, resource(generation=1, observed=1, conditions=[bare])) == {
        "status": "Degraded", "message": "Stalled"}  # fmt: skip
    ready = {"type": "Ready", "status": "True"}
    assert health(kind, resource(generation=1, observed=1, conditions=[ready])) == {"status": "Healthy", "message": ""}


# Objects captured from tests/e2e/test_gitops.py: what Argo CD must show for each.
CAPTURED = {
    "modelversion-no-status": ("Progressing", "waiting for the modelreg operator"),
    "registeredmodel-no-status": ("Progressing", "waiting for the modelreg operator"),
    "modelversion-production-ready": ("Healthy", "Production; artifact verified"),
    "registeredmodel-ready": ("Healthy", "Production: 1"),
    # "waiting for the Deployment", then "Deployment m-2: 0/2 Pods available; …", as the rollout goes.
    "modelversion-rolling-out": ("Progressing", "Deployment"),
    "registeredmodel-rolling-out": ("Progressing", "waiting for m-2"),
    "modelversion-spec-not-observed": ("Progressing", "the operator has not observed the latest spec yet"),
    "modelversion-threshold-not-met": ("Degraded", "ThresholdNotMet: cannot enter Staging"),
    "modelversion-checksum-mismatch": ("Degraded", "ChecksumMismatch: cannot enter Staging"),
    "modelversion-rollout-failed": ("Degraded", "RolloutFailed: Deployment m-2"),
    "registeredmodel-ready-beside-failures": ("Healthy", "Production: 1"),
    "modelversion-superseded": ("Degraded", "Superseded: a newer Production request won"),
    "modelversion-validation-running": ("Progressing", "held by ValidationPassed: validation Job"),
    "modelversion-validation-failed": ("Degraded", "DeadlineExceeded: cannot enter Staging"),
    "registeredmodel-serving-refused": ("Degraded", "ServingRefused: the API server refused Deployment m-1"),
}


def captured(label: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads((FIXTURES / f"{label}.json").read_text())
    return obj


def test_every_captured_object_has_an_expectation() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(CAPTURED)


@pytest.mark.parametrize("label", sorted(CAPTURED))
def test_captured_objects(label: str) -> None:
    obj = captured(label)
    expected, says = CAPTURED[label]
    got = health(obj["kind"], obj)
    assert got["status"] in ARGO_STATUSES
    assert got["status"] == expected
    assert says in got["message"], got["message"]
