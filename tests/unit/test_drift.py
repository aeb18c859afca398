"""Drift is what the operator set and someone changed, not what the API server added."""

from __future__ import annotations

from modelreg.drift import find_drift


def test_defaults_added_by_the_server_are_not_drift() -> None:
    desired = {"spec": {"replicas": 2, "template": {"containers": [{"name": "s", "image": "a:1"}]}}}
    container = {"name": "s", "image": "a:1", "imagePullPolicy": "IfNotPresent"}
    live = {"spec": {"replicas": 2, "revisionHistoryLimit": 10, "template": {"containers": [container]}}}
    assert find_drift(desired, live) == []


def test_changed_values_extra_items_and_missing_fields_are_drift() -> None:
    desired = {"spec": {"replicas": 2, "containers": [{"image": "a:1"}], "selector": {"app": "x"}}}
    live = {"spec": {"replicas": 5, "containers": [{"image": "a:1"}, {"image": "sidecar"}]}}
    assert find_drift(desired, live) == [".spec.replicas", ".spec.containers", ".spec.selector"]


def test_quantities_compare_by_value() -> None:
    assert find_drift({"cpu": "0.5", "memory": "1Gi"}, {"cpu": "500m", "memory": "1024Mi"}) == []
    assert find_drift({"cpu": 1}, {"cpu": "1"}) == []
    assert find_drift({"cpu": "1"}, {"cpu": "2"}) == [".cpu"]
    assert find_drift({"flag": True}, {"flag": 1}) == [".flag"]


def test_empty_lists_and_maps_the_server_dropped_are_not_drift() -> None:
    assert find_drift({"env": [], "labels": {}}, {}) == []
    assert find_drift({"env": [{"name": "A"}]}, {}) == [".env"]
