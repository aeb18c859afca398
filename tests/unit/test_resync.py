"""The periodic resync (`handlers._resync`) and Kopf's listings skip a model whose
cached inputs did not change since its last reconcile ended settled, and queue
every other one."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes.client import ApiClient

from modelreg import cache, handlers, kube, reconciling, verifying

NS = "ns"


def version(name: str, model: str, rv: str = "1") -> dict[str, Any]:
    return {"kind": "ModelVersion", "metadata": {"namespace": NS, "name": name, "resourceVersion": rv},
            "spec": {"model": model}}  # fmt: skip


def runtime(*, wake_rechecks: bool = True) -> handlers.Runtime:
    verifier = verifying.Verifier(verifying.Settings(wake_rechecks=wake_rechecks))
    memo = handlers.Runtime(context=reconciling.Context(client=ApiClient(), verifier=verifier), namespace=NS)
    memo.context.cache.ready = True
    for model in ("a", "b", "c"):
        memo.context.cache.put(cache.VERSION, version(f"{model}-1", model))
    return memo


def settle(memo: handlers.Runtime, *models: str) -> None:
    """As `_reconcile` does after a reconcile of each that ended settled."""
    for model in models:
        memo.settled[(NS, model)] = memo.context.cache.stamp((NS, model))


def queued(memo: handlers.Runtime) -> set[tuple[str, str]]:
    memo.context.verifier.close()
    return set(memo.queue._queued)


def test_a_resync_queues_only_the_models_whose_inputs_changed_since_they_settled() -> None:
    async def scenario() -> set[tuple[str, str]]:
        memo = runtime()
        settle(memo, "a", "b")  # c's last reconcile did not end settled (or never ran)
        memo.context.cache.put(cache.VERSION, version("b-1", "b", rv="2"))  # b changed since
        await handlers._queue_all(memo, unless_settled=True)
        return queued(memo)

    assert asyncio.run(scenario()) == {(NS, "b"), (NS, "c")}


def test_a_takeover_queues_every_model_settled_or_not() -> None:
    async def scenario() -> set[tuple[str, str]]:
        memo = runtime()
        settle(memo, "a", "b", "c")
        await handlers._queue_all(memo)
        return queued(memo)

    assert asyncio.run(scenario()) == {(NS, "a"), (NS, "b"), (NS, "c")}


def test_without_timers_for_rechecks_every_resync_reconciles_every_model() -> None:
    """Re-checks then start only in reconciles: a settled model must still be re-planned."""

    async def scenario() -> set[tuple[str, str]]:
        memo = runtime(wake_rechecks=False)
        settle(memo, "a", "b", "c")
        await handlers._queue_all(memo, unless_settled=True)
        return queued(memo)

    assert asyncio.run(scenario()) == {(NS, "a"), (NS, "b"), (NS, "c")}


on_version_event: Any = handlers.on_version_event  # (as Kopf calls it: keyword arguments it picks from)


def test_a_listing_that_shows_an_object_again_unchanged_queues_nothing_a_change_does() -> None:
    async def scenario() -> set[tuple[str, str]]:
        memo = runtime()
        settle(memo, "a", "b")
        for obj in (version("a-1", "a"), version("b-1", "b", rv="2")):  # a relist after a 410
            meta = obj["metadata"]
            await on_version_event(memo=memo, type=None, body=obj, spec=obj["spec"], namespace=NS, meta=meta,
                                   status={})  # fmt: skip
        return queued(memo)

    assert asyncio.run(scenario()) == {(NS, "b")}


def test_a_reconcile_that_ends_settled_is_remembered_and_one_that_does_not_forgets(monkeypatch: Any) -> None:
    async def scenario(outcome: reconciling.Outcome) -> dict[tuple[str, str], cache.Stamp]:
        memo = runtime()
        settle(memo, "a")
        monkeypatch.setattr(reconciling, "reconcile_model", lambda ctx, *, namespace, model: outcome)
        try:
            await handlers._reconcile(memo, (NS, "a"))
        finally:
            memo.context.verifier.close()
        return memo.settled

    assert asyncio.run(scenario(reconciling.Outcome(writes=0, retry=False, settled_at=(7, 0)))) == {(NS, "a"): (7, 0)}
    assert asyncio.run(scenario(reconciling.Outcome(writes=1, retry=False))) == {}


# --- which reconciles end settled (`reconciling.Outcome.settled_at`) ----------------


class Api:
    """Stands in for the API server's writes (unit level): each status applied gets
    a new resourceVersion, and the watch event that shows it reaches the cache."""

    def __init__(self, c: cache.Cache) -> None:
        self.cache, self.rv, self.writes = c, 10, 0

    def apply_status(self, client: Any, obj: dict[str, Any], status: dict[str, Any], **_: Any) -> str:
        self.rv += 1
        self.writes += 1
        meta = obj["metadata"] | {"resourceVersion": str(self.rv)}
        self.cache.put(obj["kind"], obj | {"metadata": meta, "status": status})
        return str(self.rv)


def registry_only(c: cache.Cache) -> None:
    c.ready = True
    c.put(cache.MODEL, {"kind": "RegisteredModel", "metadata": {"namespace": NS, "name": "m", "uid": "u",
                                                                 "resourceVersion": "1", "generation": 1},
                        "spec": {}})  # fmt: skip
    c.put(cache.VERSION, {"kind": "ModelVersion", "metadata": {"namespace": NS, "name": "m-1", "uid": "u1",
                                                                "resourceVersion": "2", "generation": 1},
                          "spec": {"model": "m", "version": "1", "stage": "Staging",
                                   "artifact": {"uri": "s3://bucket/k", "sha256": "0" * 64}}})  # fmt: skip


def verified(*_: Any, **__: Any) -> Any:
    from modelreg.api.modelversion import ArtifactStatus
    from modelreg.facts import ArtifactCheck, ArtifactReason

    facts = ArtifactStatus.model_validate({"digest": "sha256:" + "0" * 64, "size": 1, "etag": "e"})
    return ArtifactCheck(ArtifactReason.VERIFIED, "ok", facts)


def test_a_reconcile_ends_settled_once_it_writes_nothing_and_only_from_the_cache(monkeypatch: Any) -> None:
    verifier = verifying.Verifier(verifying.Settings(wake_rechecks=False), verify=verified,
                                  new_client=lambda **_: object())  # fmt: skip
    ctx = reconciling.Context(client=ApiClient(), verifier=verifier)
    api = Api(ctx.cache)
    monkeypatch.setattr("modelreg.kube.apply_status", api.apply_status)
    monkeypatch.setattr("modelreg.kube.post_event", lambda *_, **__: None)
    registry_only(ctx.cache)
    try:
        outcomes = [reconciling.reconcile_model(ctx, namespace=NS, model="m") for _ in range(4)]
    finally:
        verifier.close()
    assert outcomes[0].writes > 0
    assert outcomes[0].settled_at is None  # wrote: the next one confirms
    assert outcomes[-1].writes == 0
    assert outcomes[-1].settled_at == ctx.cache.stamp((NS, "m"))  # planned from what is cached now
    # A reconcile that read the API (the cache could not be trusted for the model) never ends settled.
    assert (ctx.cache.snapshot((NS, "m")).versions[0].get("status") or {}).get("stage") == "Staging"  # type: ignore[union-attr]
    state = ctx.cache.snapshot((NS, "m"))
    assert state is not None
    ctx.cache.distrust((NS, "m"))
    monkeypatch.setattr("modelreg.kube.read_model_state", lambda *_, **__: kube.ModelState(
        model=state.model, versions=state.versions))  # fmt: skip
    monkeypatch.setattr("modelreg.kube.read_owned", lambda *_, **__: kube.OwnedObjects(
        deployments={}, services={}, autoscaled={}))  # fmt: skip
    again = reconciling.reconcile_model(ctx, namespace=NS, model="m")
    assert again.writes == 0
    assert again.settled_at is None
