"""The watch-fed cache: when a reconcile may trust it, and what it holds."""

from __future__ import annotations

import threading
from typing import Any

from modelreg import cache

NS = "ns"


def version(name: str, model: str = "m", rv: str = "1", stage: str = "Development") -> dict[str, Any]:
    return {"kind": "ModelVersion", "metadata": {"namespace": NS, "name": name, "resourceVersion": rv},
            "spec": {"model": model}, "status": {"stage": stage}}  # fmt: skip


def deployment(name: str, model: str = "m", rv: str = "1") -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"namespace": NS, "name": name, "resourceVersion": rv,
                                               "labels": {cache.MODEL_LABEL: model}}}  # fmt: skip


def warm() -> cache.Cache:
    c = cache.Cache()
    c.ready = True
    return c


def test_nothing_is_read_from_a_cache_that_is_not_warm() -> None:
    c = cache.Cache()
    c.put(cache.VERSION, version("v1"))
    assert c.snapshot((NS, "m")) is None
    c.ready = True
    snap = c.snapshot((NS, "m"))
    assert snap is not None
    assert [v["metadata"]["name"] for v in snap.versions] == ["v1"]


def test_a_model_is_read_from_the_api_until_the_watch_shows_our_write() -> None:
    c = warm()
    c.put(cache.VERSION, version("v1", rv="10", stage="Staging"))
    c.expect((NS, "m"), cache.VERSION, "v1", "12")  # we wrote status: Production
    assert c.snapshot((NS, "m")) is None  # the cache still says Staging
    c.put(cache.VERSION, version("v1", rv="11"))  # an older event (someone else's)
    assert c.snapshot((NS, "m")) is None
    c.put(cache.VERSION, version("v1", rv="12", stage="Production"))
    snap = c.snapshot((NS, "m"))
    assert snap is not None
    assert snap.versions[0]["status"]["stage"] == "Production"


def test_a_later_version_than_the_one_written_meets_the_expectation() -> None:
    c = warm()
    c.expect((NS, "m"), cache.VERSION, "v1", "12")
    c.put(cache.VERSION, version("v1", rv="15"))  # the watch relisted past our write
    assert c.snapshot((NS, "m")) is not None


def test_a_write_the_watch_already_delivered_expects_nothing() -> None:
    c = warm()
    c.put(cache.VERSION, version("v1", rv="12"))
    c.expect((NS, "m"), cache.VERSION, "v1", "12")
    assert c.snapshot((NS, "m")) is not None


def test_other_models_are_not_held_back_by_one_models_write() -> None:
    c = warm()
    c.put(cache.VERSION, version("a1", model="a"))
    c.put(cache.VERSION, version("b1", model="b"))
    c.expect((NS, "a"), cache.VERSION, "a1", "9")
    assert c.snapshot((NS, "a")) is None
    assert c.snapshot((NS, "b")) is not None


def test_a_deletion_is_expected_until_the_object_leaves_the_cache() -> None:
    c = warm()
    c.put(cache.DEPLOYMENT, deployment("m-v1"))
    c.expect((NS, "m"), cache.DEPLOYMENT, "m-v1", None)
    assert c.snapshot((NS, "m")) is None
    c.remove(cache.DEPLOYMENT, NS, "m-v1")
    snap = c.snapshot((NS, "m"))
    assert snap is not None
    assert snap.deployments == {}


def test_an_expectation_the_watch_never_meets_expires() -> None:
    now = [0.0]
    c = cache.Cache(clock=lambda: now[0])
    c.ready = True
    c.expect((NS, "m"), cache.DEPLOYMENT, "m-v1", "5")
    assert c.snapshot((NS, "m")) is None
    now[0] = cache.EXPECTATION_TTL + 1
    assert c.snapshot((NS, "m")) is not None


def test_a_distrusted_model_is_read_from_the_api_once() -> None:
    c = warm()
    c.distrust((NS, "m"))
    assert c.snapshot((NS, "m")) is None
    assert c.snapshot((NS, "m")) is not None


def test_owned_objects_are_grouped_by_their_model_label() -> None:
    c = warm()
    c.put(cache.DEPLOYMENT, deployment("a-1", model="a"))
    c.put(cache.DEPLOYMENT, deployment("b-1", model="b"))
    c.put(cache.DEPLOYMENT, deployment("a-1", model="b", rv="2"))  # relabelled
    snap_a, snap_b = c.snapshot((NS, "a")), c.snapshot((NS, "b"))
    assert snap_a is not None
    assert snap_b is not None
    assert snap_a.deployments == {}
    assert sorted(snap_b.deployments) == ["a-1", "b-1"]


def test_keys_name_models_and_the_models_versions_name() -> None:
    c = warm()
    c.put(cache.MODEL, {"kind": "RegisteredModel", "metadata": {"namespace": NS, "name": "m"}})
    c.put(cache.VERSION, version("x1", model="orphan"))
    assert c.keys() == [(NS, "m"), (NS, "orphan")]
    c.remove(cache.VERSION, NS, "x1")
    assert c.keys() == [(NS, "m")]


def test_autoscalers_of_the_namespace_give_their_minimum() -> None:
    c = warm()
    hpa = {"kind": "HorizontalPodAutoscaler", "metadata": {"namespace": NS, "name": "h"},
           "spec": {"scaleTargetRef": {"kind": "Deployment", "apiVersion": "apps/v1", "name": "m-v1"},
                    "minReplicas": 3}}  # fmt: skip
    c.put(cache.HPA, hpa)
    snap = c.snapshot((NS, "m"))
    assert snap is not None
    assert snap.autoscaled == {"m-v1": 3}
    assert c.autoscaled_in("other") == {}


def test_puts_and_snapshots_from_several_threads_stay_consistent() -> None:
    """Watch events (loop) and reconciles (worker threads) at once: every snapshot
    holds each version once, and the index ends matching the objects."""
    c = warm()
    errors: list[str] = []

    def feed(offset: int) -> None:
        for i in range(2000):
            name = f"v{(i + offset) % 50}"
            c.put(cache.VERSION, version(name, model=f"m{i % 3}", rv=str(i)))
            if i % 7 == 0:
                c.remove(cache.VERSION, NS, name)

    def read() -> None:
        for _ in range(2000):
            for m in ("m0", "m1", "m2"):
                snap = c.snapshot((NS, m))
                names = [v["metadata"]["name"] for v in snap.versions] if snap else []
                if len(names) != len(set(names)) or any(
                    v["spec"]["model"] != m for v in (snap.versions if snap else [])
                ):
                    errors.append(f"{m}: {names}")

    threads = [threading.Thread(target=feed, args=(k,)) for k in range(3)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    held = sum(len(s.versions) for m in ("m0", "m1", "m2") if (s := c.snapshot((NS, m))) is not None)
    assert held == len([k for k in c._objects[cache.VERSION]])


def test_primed_objects_hold_their_model_back_until_a_watch_event_or_an_api_read_settles_them() -> None:
    c = cache.Cache()
    c.prime({cache.VERSION: [version("v1"), version("v2")], cache.DEPLOYMENT: [deployment("m-1")]})
    assert c.ready
    assert c.snapshot((NS, "m")) is None  # v2 may have been deleted before Kopf's watch began
    c.put(cache.VERSION, version("v1", rv="2"))
    c.put(cache.DEPLOYMENT, deployment("m-1", rv="2"))
    assert c.snapshot((NS, "m")) is None
    assert c.unconfirmed_kinds((NS, "m")) == {cache.VERSION}
    c.settle((NS, "m"), {cache.VERSION: {"v1"}})  # the API no longer has v2
    snap = c.snapshot((NS, "m"))
    assert snap is not None
    assert [v["metadata"]["name"] for v in snap.versions] == ["v1"]


def test_an_event_older_than_the_primed_object_is_ignored() -> None:
    c = cache.Cache()
    newer = version("v1", rv="20", stage="Production")
    newer["metadata"]["uid"] = "u1"
    older = version("v1", rv="10", stage="Staging")
    older["metadata"]["uid"] = "u1"
    c.prime({cache.VERSION: [newer]})
    c.put(cache.VERSION, older)
    c.put(cache.VERSION, newer)  # the watch catches up: confirmed
    snap = c.snapshot((NS, "m"))
    assert snap is not None
    assert snap.versions[0]["status"]["stage"] == "Production"


def test_what_the_cache_keeps_is_the_object_less_managed_fields_with_its_strings_shared() -> None:
    """Issue 11, memory: each watch event is parsed on its own, so without `compact`
    every cached version held its own copy of every key and repeated value, and all
    of its managedFields (which only `tampering` reads)."""
    import json

    from modelreg import tampering

    def parsed(name: str) -> dict[str, Any]:  # as a watch event gives it: a parse of its own
        obj = version(name, stage="Staging")
        obj["metadata"]["managedFields"] = [
            {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {"f:model": {}}}},
            {"manager": "modelreg", "subresource": "status", "fieldsV1": {"f:status": {"f:stage": {}}}},
            {"manager": "kubectl-patch", "subresource": "status", "fieldsV1": {"f:status": {"f:stage": {}}}},
        ]
        obj["status"]["conditions"] = [
            {"type": "Ready", "reason": "Ready", "lastTransitionTime": "2026-12-01T00:00:00Z"}
        ]
        return dict(json.loads(json.dumps(obj)))

    c = warm()
    for name in ("v1", "v2"):
        c.put(cache.VERSION, parsed(name))
        c.put(cache.DEPLOYMENT, deployment(f"{name}-d") | {"metadata": deployment(f"{name}-d")["metadata"] | {
            "managedFields": [{"manager": "modelreg", "fieldsV1": {"f:spec": {}}}]}})  # fmt: skip
    snap = c.snapshot((NS, "m"))
    assert snap is not None
    one, two = snap.versions
    # The object as it was, but for managedFields: of those only the forged status entry's remembered field.
    expected = parsed("v1")
    expected["metadata"]["managedFields"] = [
        {"manager": "kubectl-patch", "subresource": "status", "fieldsV1": {"f:status": {"f:stage": {}}}}
    ]
    assert one == expected
    assert tampering.foreign_status_writer(one) == "kubectl-patch"
    assert all("managedFields" not in d["metadata"] for d in snap.deployments.values())
    # One string object for what both versions say, keys and values alike.
    (key_one,), (key_two,) = (list(c["conditions"][0])[2:] for c in (one["status"], two["status"]))
    assert key_one is key_two
    assert one["status"]["conditions"][0]["lastTransitionTime"] is two["status"]["conditions"][0]["lastTransitionTime"]
    assert one["spec"]["model"] is two["spec"]["model"]


def test_the_stamp_moves_with_every_change_of_the_models_objects_and_only_then() -> None:
    c = warm()
    c.put(cache.VERSION, version("v1"))
    c.put(cache.DEPLOYMENT, deployment("d1"))
    c.put(cache.VERSION, version("o1", model="other"))
    before = c.stamp((NS, "m"))
    assert c.snapshot((NS, "m")).stamp == before  # type: ignore[union-attr]
    c.put(cache.VERSION, version("v1"))  # a relist shows it again, unchanged
    c.put(cache.VERSION, version("o1", model="other", rv="2"))  # another model's change
    assert c.stamp((NS, "m")) == before
    hpa = {"metadata": {"namespace": NS, "name": "h", "resourceVersion": "1"},
           "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d1"}}}  # fmt: skip
    changes: list[Any] = [
        lambda: c.put(cache.VERSION, version("v1", rv="2")),
        lambda: c.put(cache.DEPLOYMENT, deployment("d1", rv="2")),
        lambda: c.put(cache.VERSION, version("v2")),  # a new version
        lambda: c.remove(cache.DEPLOYMENT, NS, "d1"),
        lambda: c.put(cache.HPA, hpa),  # the namespace's autoscalers
    ]
    for change in changes:
        stamp = c.stamp((NS, "m"))
        change()
        assert c.stamp((NS, "m")) != stamp


def test_a_model_deleted_and_created_again_never_gets_an_old_stamp_back() -> None:
    c = warm()
    c.put(cache.VERSION, version("v1"))
    first = c.stamp((NS, "m"))
    c.remove(cache.VERSION, NS, "v1")
    c.put(cache.VERSION, version("v1"))
    assert c.stamp((NS, "m")) not in (first, (0, 0))
