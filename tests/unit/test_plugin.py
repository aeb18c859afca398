"""`kubectl modelreg`: the rows, reports and verdicts it makes of read objects, and its arguments."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelreg import plugin, reconciling
from modelreg.api.common import Stage
from modelreg.staging import StageChangeError

REPO = Path(__file__).resolve().parents[2]


def mv(name: str, *, version: str, stage: str = "Staging", status: dict[str, Any] | None = None,
       generation: int = 1) -> dict[str, Any]:  # fmt: skip
    return {"metadata": {"name": name, "namespace": "ns", "generation": generation},
            "spec": {"model": "m", "version": version, "stage": stage}, "status": status or {}}  # fmt: skip


def cond(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def test_the_executable_follows_krews_naming() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl-modelreg"] == "modelreg.plugin:main"


def test_list_rows_say_production_staging_and_health() -> None:
    model = {"metadata": {"name": "m", "namespace": "ns"},
             "status": {"productionVersion": "1", "stagingVersion": "2", "bestVersion": "2",
                        "conditions": [cond("Ready", "True", "Ready")]}}  # fmt: skip
    orphan = mv("o-1", version="1") | {"spec": {"model": "o", "version": "1"}}
    rows = plugin.model_rows([model], [mv("m-1", version="1"), mv("m-2", version="2"), orphan])
    assert rows == [
        {"namespace": "ns", "model": "m", "production": "1", "staging": "2", "best": "2", "versions": 2,
         "ready": "True", "reason": "Ready"},
        {"namespace": "ns", "model": "o", "production": "", "staging": "", "best": "", "versions": 1,
         "ready": "False", "reason": "NoRegisteredModel"},
    ]  # fmt: skip
    text = plugin.table(rows, ["model", "production", "ready"])
    assert text.splitlines()[0].split() == ["MODEL", "PRODUCTION", "READY"]
    assert text.splitlines()[1].split() == ["m", "1", "True"]


def test_history_is_newest_first_and_events_do_not_repeat_transitions() -> None:
    v1 = mv("m-1", version="1", status={"history": [
        {"stage": "Development", "time": "2026-01-01T10:00:00Z", "reason": "Registered", "message": "a"},
        {"stage": "Production", "time": "2026-01-01T10:05:00Z", "reason": "Promoted", "message": "b"}]})  # fmt: skip
    v2 = mv("m-2", version="2", status={"history": [
        {"stage": "Staging", "time": "2026-01-01T10:03:00Z", "reason": "Registered", "message": "c"}]})  # fmt: skip
    events = [
        # repeats m-1's Promoted transition: left out
        {"involvedObject": {"name": "m-1"}, "reason": "Promoted", "message": "b",
         "lastTimestamp": "2026-01-01T10:05:01Z"},
        # not in status (a gate failed): kept
        {"involvedObject": {"name": "m-2"}, "reason": "MetricThresholdsFailed", "message": "held",
         "lastTimestamp": "2026-01-01T10:04:00Z"},
    ]  # fmt: skip
    rows = plugin.history_rows([v1, v2], events)
    assert [(r["version"], r["reason"]) for r in rows] == [
        ("1", "Promoted"), ("2", "MetricThresholdsFailed"), ("2", "Registered"), ("1", "Registered")]  # fmt: skip
    assert [r["source"] for r in rows] == ["status", "event", "status", "status"]
    # within one second, the later transition of a version first
    same = mv("m-1", version="1", status={"history": [
        {"stage": "Development", "time": "2026-01-01T10:00:00Z", "reason": "Registered"},
        {"stage": "Production", "time": "2026-01-01T10:00:00Z", "reason": "Promoted"}]})  # fmt: skip
    assert [r["reason"] for r in plugin.history_rows([same], [])] == ["Promoted", "Registered"]


def test_why_names_the_gate_and_what_releases_it() -> None:
    message = "accuracy 0.7 is below 0.8; to release: register a version with accuracy >= 0.8"
    v = mv("m-2", version="2", stage="Staging", status={"stage": "Development", "phase": "Blocked", "conditions": [
        cond("MetricThresholds", "False", "BelowThreshold", message),
        cond("ArtifactVerified", "True", "Verified", "ok"),
        cond("Ready", "False", "BelowThreshold", f"cannot enter Staging: held by MetricThresholds: {message}"),
        cond("Stalled", "True", "BelowThreshold", "...")]})  # fmt: skip
    model = {"status": {"productionVersion": "1"}}
    report = plugin.why_report(v, model, {"modelreg.dev/version": "1"})
    assert report["holds"] == [{"condition": "MetricThresholds", "status": "False", "reason": "BelowThreshold",
                                "message": "accuracy 0.7 is below 0.8",
                                "release": "register a version with accuracy >= 0.8"}]  # fmt: skip
    assert report["release"] == "register a version with accuracy >= 0.8"
    assert report["served"] is False
    text = plugin.render_why(report)
    assert "MetricThresholds=False (BelowThreshold): accuracy 0.7 is below 0.8" in text
    assert "to release: register a version with accuracy >= 0.8" in text
    assert "the Service m serves 1" in text


def test_why_of_a_settled_version() -> None:
    v = mv("m-1", version="1", stage="Production", status={"stage": "Production", "phase": "Ready", "conditions": [
        cond("Ready", "True", "Ready", "Production; artifact verified")]})  # fmt: skip
    report = plugin.why_report(v, None, {"modelreg.dev/version": "1"})
    assert report["served"] is True
    assert report["holds"] == []
    assert "nothing holds it" in plugin.render_why(report)


@pytest.mark.parametrize(
    ("status", "selector", "state", "reason"),
    [
        # the status is of the previous generation: not judged, even though it looks failed
        ({"observedGeneration": 1, "stage": "Staging", "phase": "Blocked"}, {}, "waiting", "NotObserved"),
        ({"observedGeneration": 2, "stage": "Production", "phase": "Ready"}, {"modelreg.dev/version": "2"},
         "done", "Serving"),
        # Production but the Service still selects the old version
        ({"observedGeneration": 2, "stage": "Production", "phase": "Ready"}, {"modelreg.dev/version": "1"},
         "waiting", "Ready"),
        ({"observedGeneration": 2, "stage": "Staging", "phase": "Blocked", "conditions": [
            cond("Ready", "False", "BelowThreshold", "m"), cond("Stalled", "True", "BelowThreshold", "held by X")]},
         {"modelreg.dev/version": "1"}, "failed", "BelowThreshold"),
        ({"observedGeneration": 2, "stage": "Staging", "phase": "Failed", "conditions": [
            cond("Stalled", "True", "RolloutFailed", "unschedulable")]}, {}, "failed", "RolloutFailed"),
        ({"observedGeneration": 2, "stage": "Staging", "phase": "Promoting", "conditions": [
            cond("Ready", "False", "RolloutInProgress", "1/2")]}, {}, "waiting", "RolloutInProgress"),
    ],
)  # fmt: skip
def test_promotion_verdict(status: dict[str, Any], selector: dict[str, str], state: str, reason: str) -> None:
    verdict = plugin.promotion_verdict(mv("m-2", version="2", stage="Production", status=status, generation=2),
                                       selector, target=Stage.PRODUCTION)  # fmt: skip
    assert (verdict.state, verdict.reason) == (state, reason)


def test_a_held_version_is_refused_before_any_change_toward_production_only() -> None:
    held = {"observedGeneration": 2, "stage": "Development", "phase": "Blocked",
            "conditions": [cond("Stalled", "True", "ThresholdNotMet", "held by MetricThresholds: x")]}  # fmt: skip
    v = mv("m-3", version="3", status=held, generation=2)
    verdict = plugin.held_before_request(v, target=Stage.PRODUCTION)
    assert verdict == plugin.Verdict("failed", "ThresholdNotMet", "held by MetricThresholds: x")
    assert plugin.held_before_request(v, target=Stage.STAGING) is None
    # a status of an older generation says nothing about the request being made
    assert plugin.held_before_request(mv("m-3", version="3", status=held, generation=3),
                                      target=Stage.PRODUCTION) is None  # fmt: skip


def test_rollback_goes_to_the_version_that_last_left_production() -> None:
    def was_prod(name: str, version: str, at: str, stage: str = "Archived") -> dict[str, Any]:
        return mv(name, version=version, stage=stage, status={"stage": stage, "history": [
            {"stage": "Production", "time": at}, {"stage": stage, "time": "2026-01-02T00:00:00Z"}]})  # fmt: skip

    current = mv("m-3", version="3", stage="Production", status={"stage": "Production", "history": [
        {"stage": "Production", "time": "2026-01-03T00:00:00Z"}]})  # fmt: skip
    versions = [was_prod("m-1", "1", "2026-01-01T00:00:00Z"), was_prod("m-2", "2", "2026-01-01T12:00:00Z"),
                current, mv("m-4", version="4")]  # fmt: skip
    assert plugin.rollback_target(versions, asked=None)["metadata"]["name"] == "m-2"
    assert plugin.rollback_target(versions, asked="1")["metadata"]["name"] == "m-1"
    assert plugin.rollback_target(versions, asked="m-1")["metadata"]["name"] == "m-1"
    with pytest.raises(StageChangeError, match="no version"):
        plugin.rollback_target(versions, asked="9")
    with pytest.raises(StageChangeError, match="no earlier Production version"):
        plugin.rollback_target([current], asked=None)


def test_json_and_yaml_carry_the_same_rows() -> None:
    rows = [{"model": "m", "production": "1", "versions": 2}]
    assert json.loads(plugin.render(rows, output="json")) == rows
    assert yaml.safe_load(plugin.render(rows, output="yaml")) == rows
    assert plugin.render([], output="table", columns=["model"]) == "No resources found."


def test_arguments() -> None:
    p = plugin.parser()
    args = p.parse_args(["list", "-A", "-o", "json", "--context", "kind", "--kubeconfig", "/k"])
    assert (args.command, args.all_namespaces, args.output, args.context, args.kubeconfig) == (
        "list", True, "json", "kind", "/k")  # fmt: skip
    args = p.parse_args(["promote", "m-2", "-n", "team", "--timeout", "30"])
    assert (args.version, args.namespace, args.timeout, args.to) == ("m-2", "team", 30.0, "Production")
    args = p.parse_args(["rollback", "m"])
    assert (args.model, args.version) == ("m", None)
    with pytest.raises(SystemExit) as exc:
        p.parse_args(["list", "-o", "wide"])
    assert exc.value.code == plugin.EXIT_USAGE
    with pytest.raises(SystemExit):
        p.parse_args([])


def test_completion_of_subcommands_flags_values_and_names() -> None:
    names = {"models": ["fraud", "m"], "versions": ["fraud-1", "m-1", "m-2"]}
    assert plugin.completions([""]) == list(plugin.SUBCOMMANDS)
    assert plugin.completions(["pr"]) == ["promote"]
    assert plugin.completions(["promote", "m-"], **names) == ["m-1", "m-2"]
    assert plugin.completions(["history", ""], **names) == ["fraud", "m"]
    assert plugin.completions(["rollback", "m", ""], **names) == ["m-1", "m-2"]
    # the value of an option is not a positional argument
    assert plugin.completions(["why", "-n", "team", ""], **names) == names["versions"]
    assert plugin.completions(["why", "m-1", "-o", ""], **names) == ["table", "json", "yaml"]
    assert plugin.completions(["promote", "m-2", "--to", "S"]) == ["Staging"]
    assert plugin.completions(["list", "--all"]) == ["--all-namespaces"]
    assert plugin.completions(["why", "m-1", ""], **names) == []


def test_the_completion_executable_follows_kubectls_naming() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl_complete-modelreg"] == "modelreg.plugin:complete_main"


def test_diff_lists_what_is_asked_and_not_yet_so() -> None:
    settled = mv("m-1", version="1", stage="Production", status={"observedGeneration": 1, "stage": "Production"})
    ready = cond("Ready", "False", "ThresholdNotMet", "held by MetricThresholds: low; to release: retrain")
    held = mv("m-3", version="3", stage="Staging", status={"observedGeneration": 1, "stage": "Development",
              "phase": "Blocked", "conditions": [ready]})  # fmt: skip
    unseen = mv("m-4", version="4", stage="Production", status={"observedGeneration": 1, "stage": "Production"},
                generation=2)  # fmt: skip
    model = {"metadata": {"name": "m", "generation": 3}, "status": {"observedGeneration": 2}}
    rows = plugin.waiting_rows([model], [settled, held, unseen])
    assert [(r["object"], r["action"], r["detail"].split(":")[0]) for r in rows] == [
        ("registeredmodel/m", "waits", "NotObserved"),
        ("modelversion/m-3", "waits", "Development → Staging (Blocked)"),
        ("modelversion/m-4", "waits", "Production → Production (-)"),
    ]
    assert rows[1]["detail"].endswith("ThresholdNotMet: held by MetricThresholds: low")
    assert rows[1]["release"] == "retrain"


def test_diff_puts_the_next_writes_first_and_does_not_repeat_a_version_they_change() -> None:
    waiting = [{"object": "modelversion/m-2", "action": "waits", "detail": "Staging → Production", "release": ""},
               {"object": "modelversion/m-3", "action": "waits", "detail": "held", "release": "retrain"}]  # fmt: skip
    changes = [reconciling.Change("deployment/m-2", "update", "replicas 1 → 2"),
               reconciling.Change("modelversion/m-2", "status", "phase Staged → RollingOut")]  # fmt: skip
    rows = plugin.diff_rows(changes, waiting)
    assert [(r["object"], r["action"]) for r in rows] == [
        ("deployment/m-2", "update"), ("modelversion/m-2", "status"), ("modelversion/m-3", "waits")]  # fmt: skip
