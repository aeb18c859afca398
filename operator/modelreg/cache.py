"""The watched objects, kept in memory so a reconcile reads without API calls.

Fed by `handlers`: one LIST per kind at start-up (`prime`, before Kopf's
watchers start), then every event Kopf's `on.event` handlers receive (Kopf
lists and watches each kind; resourceVersion bookkeeping and relists on expiry
are Kopf's) `put`s or `remove`s an object. Read by `reconciling` (`snapshot`: one model's objects) and by the periodic
resync (`keys`: every model, no LIST). Owned Deployments, Services and Jobs are
watched with a server-side label selector (`handlers.configure`), so unrelated
objects of the cluster never reach this process.

Why the data is safe to decide on (the concurrency design):

* Warm before use. `ready` is set once the start-up LISTs are in. Until then
  `snapshot` returns None and the reconcile reads the API. (Not Kopf indices:
  their start-up barrier wakes every waiting object worker for every object
  listed, quadratic in the objects: a minute of CPU at 5,000 versions.)
* Primed is not confirmed. An object the start-up LIST saw but Kopf's watch has
  not yet shown may have been deleted in between, which Kopf would never report
  (its own list no longer has it). So a model with such an object is read from
  the API (`snapshot` returns None), and that read `settle`s the question: what
  the API did not return is gone. Kopf's initial listing confirms the rest.
  An event never replaces a newer version of an object with an older one.
* Never staler than our own writes. A cache lags the API server: right after
  the operator writes, the cache still holds what was there before, and a plan
  made from it would repeat the transition (a second history entry, a second
  Event) or undo the write. So every write is recorded with `expect`: (object,
  resourceVersion the API server returned, or deletion). While a model has an
  expectation the watch has not yet delivered, `snapshot` returns None and that
  model is read from the API as before the cache existed. The watch delivers an
  object's events in order, so once the cache holds the written version (or a
  later one) it holds everything the operator wrote to it.
* Others' writes. A cache entry may be a few milliseconds behind a person's
  edit or a controller's status; a direct read could be equally behind by the
  time the write lands. Where a stale read could do harm, the API server
  decides: status is applied with metadata.resourceVersion as a precondition
  (`kube.apply_status`), so a status planned from an outdated version is
  refused with 409 (`kube.Stale`), that model is `distrust`ed (its next reconcile
  reads the API) and requeued. The Service switches only to a Deployment the
  data shows Available; a Deployment's Available status comes from the
  Deployment controller, so lagging can only delay a switch, not hurry it.
* Threads. Puts and removes run on the event loop; snapshots on the workers'
  threads (`asyncio.to_thread`). One lock guards every structure. Objects are
  replaced whole, never changed in place, so a snapshot can hand out the stored
  dicts without copying; readers must not mutate them.
* Memory. Each object is `compact`ed as it comes in: managedFields, most of an
  object, are dropped (of our CRs only what `tampering` reads is kept), and its
  strings are shared with every other object's (`sys.intern`): each watch event
  is parsed on its own, so otherwise every version holds its own copy of every
  key ("lastTransitionTime" …) and of every repeated value (reasons, messages,
  timestamps). At 10,000 versions that is ~20 KiB a version down to ~4-9.
* Relists. Kopf relists after a watch expires but reports no deletions that
  happened while it was away; an object deleted then stays here until a write
  to it fails with 404 (`forget`) or the operator restarts. Its effect is a
  delay (an object believed present is not recreated), never a second
  Production: status writes still need the current resourceVersion.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from modelreg import tampering

Obj = dict[str, Any]
ModelKey = tuple[str, str]  # (namespace, model name)
# What a model's cached inputs looked like: (its change count, its namespace's
# autoscalers' change count). Equal stamps: nothing a reconcile reads from here changed.
Stamp = tuple[int, int]

MODEL = "RegisteredModel"
VERSION = "ModelVersion"
DEPLOYMENT = "Deployment"
SERVICE = "Service"
JOB = "Job"
HPA = "HorizontalPodAutoscaler"
KINDS = (MODEL, VERSION, DEPLOYMENT, SERVICE, JOB, HPA)
MODEL_LABEL = "modelreg.dev/model"

# An expectation the watch never meets (the object was written outside what is
# watched) would make its model read the API for ever; after this long it is dropped.
EXPECTATION_TTL = 300.0


@dataclass(frozen=True)
class Snapshot:
    """One model's objects as the cache holds them."""

    model: Obj | None
    versions: list[Obj]
    deployments: dict[str, Obj]
    services: dict[str, Obj]
    jobs: list[Obj]
    autoscaled: dict[str, int]  # Deployment name → the minReplicas of the HPA that scales it
    stamp: Stamp = (0, 0)  # `Cache.stamp` when this was taken


def model_of(kind: str, obj: Obj) -> str | None:
    """The model an object belongs to (None: not one of a model's objects)."""
    if kind == MODEL:
        return str(obj["metadata"]["name"])
    if kind == VERSION:
        model = (obj.get("spec") or {}).get("model")
        return str(model) if model else None
    if kind == HPA:
        return None
    model = ((obj.get("metadata") or {}).get("labels") or {}).get(MODEL_LABEL)
    return str(model) if model else None


def _newer_or_same(seen: str, written: str) -> bool:
    """Whether resourceVersion `seen` is the `written` one or later. Opaque strings
    by contract; the API server's are etcd revisions, compared as numbers."""
    if seen == written:
        return True
    try:
        return int(seen) >= int(written)
    except ValueError:
        return False


class Cache:
    def __init__(self, *, clock: Any = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.ready = False
        # kind → (namespace, name) → object
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {kind: {} for kind in KINDS}
        # kind → (namespace, model) → names of that model's objects of that kind
        self._by_model: dict[str, dict[ModelKey, set[str]]] = {kind: {} for kind in KINDS}
        # (namespace, model) → (kind, name) → (resourceVersion written or None for deleted, deadline)
        self._expected: dict[ModelKey, dict[tuple[str, str], tuple[str | None, float]]] = {}
        self._distrusted: set[ModelKey] = set()
        # (namespace, model) → (kind, name) of primed objects no watch event has shown yet
        self._unconfirmed: dict[ModelKey, set[tuple[str, str]]] = {}
        # Change counts (`stamp`): a model's, or a namespace's autoscalers', last
        # change numbered from one counter, so a model deleted and re-created never
        # gets back a number it had. Entries stay (an int per model ever seen).
        self._changes = 0
        self._model_changes: dict[ModelKey, int] = {}
        self._hpa_changes: dict[str, int] = {}

    # Fed from the watches (the event loop).

    def prime(self, listed: dict[str, list[Obj]]) -> None:
        """The start-up LISTs, kind → objects; the cache is ready after this."""
        listed = {kind: [compact(kind, obj) for obj in objects] for kind, objects in listed.items()}
        with self._lock:
            for kind, objects in listed.items():
                for obj in objects:
                    if self._store(kind, obj) and (model := model_of(kind, obj)) is not None:
                        self._unconfirmed.setdefault((obj["metadata"]["namespace"], model), set()).add(
                            (kind, obj["metadata"]["name"])
                        )
            self.ready = True

    def put(self, kind: str, obj: Obj) -> None:
        """An object as a watch event shows it."""
        obj = compact(kind, obj)
        with self._lock:
            if self._store(kind, obj):
                self._confirm(kind, obj)

    def _store(self, kind: str, obj: Obj) -> bool:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        old = self._objects[kind].get(key)
        same = False
        if old is not None and old["metadata"].get("uid") == meta.get("uid"):
            seen = old["metadata"].get("resourceVersion")
            if seen and meta.get("resourceVersion") and not _newer_or_same(meta["resourceVersion"], seen):
                return False  # older than what is held (primed from a later LIST)
            same = seen is not None and seen == meta.get("resourceVersion")  # a relist shows it again
        if not same:
            self._changed(kind, key[0], old)
            self._changed(kind, key[0], obj)
        self._unindex(kind, key)
        self._objects[kind][key] = obj
        if (model := model_of(kind, obj)) is not None:
            self._by_model[kind].setdefault((key[0], model), set()).add(key[1])
            self._meet(kind, (key[0], model), key[1], meta.get("resourceVersion"))
        return True

    def _confirm(self, kind: str, obj: Obj) -> None:
        if not self._unconfirmed or (model := model_of(kind, obj)) is None:
            return
        key = (obj["metadata"]["namespace"], model)
        if (pending := self._unconfirmed.get(key)) is not None:
            pending.discard((kind, obj["metadata"]["name"]))
            if not pending:
                del self._unconfirmed[key]

    def remove(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._remove(kind, namespace, name)

    def _remove(self, kind: str, namespace: str, name: str) -> None:
        old = self._objects[kind].get((namespace, name))
        if old is not None:
            self._changed(kind, namespace, old)
        self._unindex(kind, (namespace, name))
        self._objects[kind].pop((namespace, name), None)
        if old is not None and (model := model_of(kind, old)) is not None:
            self._meet(kind, (namespace, model), name, None)
            self._confirm(kind, old)

    def settle(self, model: ModelKey, read: dict[str, set[str]]) -> None:
        """A read of the model from the API returned these names per kind: primed
        objects of those kinds it did not return were deleted before Kopf's watch began."""
        with self._lock:
            pending = self._unconfirmed.get(model)
            if not pending:
                return
            for kind, name in sorted(pending):
                if kind in read and name not in read[kind]:
                    self._remove(kind, model[0], name)
                    pending.discard((kind, name))
            if not pending:
                self._unconfirmed.pop(model, None)

    def _changed(self, kind: str, namespace: str, obj: Obj | None) -> None:
        """Count a change of `obj` (as it was, or as it is now: a version moved to
        another model changes both) for the stamp of the model it belongs to."""
        if obj is None:
            return
        self._changes += 1
        if kind == HPA:
            self._hpa_changes[namespace] = self._changes
        elif (model := model_of(kind, obj)) is not None:
            self._model_changes[(namespace, model)] = self._changes

    def _unindex(self, kind: str, key: tuple[str, str]) -> None:
        old = self._objects[kind].get(key)
        if old is None or (model := model_of(kind, old)) is None:
            return
        names = self._by_model[kind].get((key[0], model))
        if names is not None:
            names.discard(key[1])
            if not names:
                del self._by_model[kind][(key[0], model)]

    def _meet(self, kind: str, model: ModelKey, name: str, seen: str | None) -> None:
        expected = self._expected.get(model)
        if not expected or (kind, name) not in expected:
            return
        written, _ = expected[(kind, name)]
        if seen is None or (written is not None and _newer_or_same(seen, written)):
            del expected[(kind, name)]  # (a deletion seen also ends an expectation of a version)
            if not expected:
                del self._expected[model]

    # Recorded by the reconciles (worker threads).

    def expect(self, model: ModelKey, kind: str, name: str, resource_version: str | None) -> None:
        """The operator wrote object `name` of `model`: resourceVersion the API server
        returned, None when it deleted it. Until the watch delivers that, the model
        is read from the API."""
        with self._lock:
            if resource_version is None and (model[0], name) not in self._objects[kind]:
                return  # deleted and already gone from here
            current = self._objects[kind].get((model[0], name))
            if resource_version is not None and current is not None:
                seen = current["metadata"].get("resourceVersion")
                if seen and _newer_or_same(seen, resource_version):
                    return  # the watch was faster than the write's response
            self._expected.setdefault(model, {})[(kind, name)] = (resource_version, self._clock() + EXPECTATION_TTL)

    def distrust(self, model: ModelKey) -> None:
        """The API server refused a write planned from this model's cached objects:
        read them from the API once."""
        with self._lock:
            self._distrusted.add(model)

    def unconfirmed_kinds(self, model: ModelKey) -> set[str]:
        """The kinds of the model's primed objects no watch event has shown yet."""
        with self._lock:
            return {kind for kind, _ in self._unconfirmed.get(model, ())}

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """A write found the object gone (404): it was deleted while the watch was away."""
        self.remove(kind, namespace, name)

    # Reads.

    def snapshot(self, model: ModelKey) -> Snapshot | None:
        """The model's objects, or None when the API must be read instead: the
        cache is not warm yet, or a write of ours is not in it yet."""
        namespace = model[0]
        with self._lock:
            if not self.ready:
                return None
            if model in self._distrusted:
                self._distrusted.discard(model)
                return None
            if model in self._unconfirmed:
                return None
            if expected := self._expected.get(model):
                now = self._clock()
                for key in [k for k, (_, deadline) in expected.items() if deadline < now]:
                    del expected[key]
                if expected:
                    return None
                del self._expected[model]
            return Snapshot(
                model=self._objects[MODEL].get(model),
                versions=self._of(VERSION, model),
                deployments={d["metadata"]["name"]: d for d in self._of(DEPLOYMENT, model)},
                services={s["metadata"]["name"]: s for s in self._of(SERVICE, model)},
                jobs=self._of(JOB, model),
                autoscaled=self._autoscaled(namespace),
                stamp=self._stamp(model),
            )

    def stamp(self, model: ModelKey) -> Stamp:
        """Where the model's cached inputs stand: a reconcile that planned from a
        snapshot with this stamp saw everything of the cache that is there now."""
        with self._lock:
            return self._stamp(model)

    def _stamp(self, model: ModelKey) -> Stamp:
        return (self._model_changes.get(model, 0), self._hpa_changes.get(model[0], 0))

    def _of(self, kind: str, model: ModelKey) -> list[Obj]:
        objects = self._objects[kind]
        return [objects[(model[0], n)] for n in sorted(self._by_model[kind].get(model, ()))]

    def _autoscaled(self, namespace: str) -> dict[str, int]:
        return autoscaled(obj for (ns, _), obj in self._objects[HPA].items() if ns == namespace)

    def autoscaled_in(self, namespace: str) -> dict[str, int] | None:
        """The namespace's autoscaled Deployments, None until the cache is warm."""
        with self._lock:
            return self._autoscaled(namespace) if self.ready else None

    def keys(self) -> list[ModelKey]:
        """Every model the cache knows of: RegisteredModels and models versions name."""
        with self._lock:
            found = set(self._objects[MODEL]) | set(self._by_model[VERSION])
        return sorted(found)

    def model_of_deployment(self, namespace: str, name: str) -> str | None:
        with self._lock:
            live = self._objects[DEPLOYMENT].get((namespace, name))
        return model_of(DEPLOYMENT, live) if live is not None else None

    def __len__(self) -> int:
        with self._lock:
            return sum(len(objects) for objects in self._objects.values())


def autoscaled(hpas: Iterable[Obj]) -> dict[str, int]:
    """Deployments an autoscaler scales → its minReplicas (what a switch waits for)."""
    out = {}
    for hpa in hpas:
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        if ref.get("kind") == "Deployment" and ref.get("apiVersion") in ("apps/v1", None) and ref.get("name"):
            out[ref["name"]] = int(spec.get("minReplicas") or 1)
    return out


def compact(kind: str, obj: Obj) -> Obj:
    """What the cache keeps of an object (a new dict; `obj` is left as it is): no
    managedFields, except, for our CRs, the part `tampering` reads; and every
    string shared with the other objects' (see "Memory" above)."""
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "managedFields"}
    if kind in (MODEL, VERSION) and (kept := tampering.evidence(obj.get("metadata", {}))):
        meta["managedFields"] = kept
    return {sys.intern(k): _shared(meta if k == "metadata" else v) for k, v in obj.items()}


def _shared(value: Any) -> Any:
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        return {sys.intern(k): _shared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shared(v) for v in value]
    return value
