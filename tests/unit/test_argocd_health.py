"""The Argo CD health scripts in manifests/argocd, run in Lua 5.1 (the dialect of
Argo CD's gopher-lua) on status shapes the operator writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import pytest
import yaml

HEALTH = Path(__file__).resolve().parents[2] / "manifests" / "argocd" / "argocd-cm-health.yaml"
KINDS = ["ModelVersion", "RegisteredModel"]


def health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    script = yaml.safe_load(HEALTH.read_text())["data"][f"resource.customizations.health.modelreg.dev_{kind}"]
    runtime = lua51.LuaRuntime()
    # Argo CD hands the object to the script as the global `obj`.
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(script)
    return {"status": result["status"], "message": result["message"]}


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
