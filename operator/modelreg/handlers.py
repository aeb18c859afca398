"""Kopf glue: watch events become model keys on a work queue; workers reconcile.

Called by Kopf (registered through `running.run_operator`). Handlers stay
thin: they name which model an event concerns and return. Every decision is
made in `reconciling`, from the current state of the world, so a missed or
repeated event changes nothing (level-triggered).

Only `on.event` handlers and a startup task are used, never Kopf's
create/update/delete handlers. Those need Kopf's progress and diff-base
storage, which by default writes annotations (and with them, finalizers) onto
the user's objects: Argo CD and Flux would see metadata they did not apply,
and the operator would be writing to objects it does not own. Event handlers
keep no state, so nothing of Kopf's ever lands on a user's object.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import kopf

from modelreg import cache, kube, leading, logs, reconciling, tampering
from modelreg.api import GROUP, VERSION
from modelreg.api import modelversion as mv
from modelreg.api import registeredmodel as rm
from modelreg.metrics import Metrics
from modelreg.workqueue import WorkQueue

log = logging.getLogger(__name__)

ModelKey = tuple[str, str]  # (namespace, model name)


@dataclass
class Runtime:
    """What the handlers share, handed to Kopf as its `memo`."""

    context: reconciling.Context
    namespace: str | None
    workers: int = 4
    resync_seconds: float = 60.0
    queue: WorkQueue[ModelKey] = field(default_factory=WorkQueue)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    failures: dict[ModelKey, int] = field(default_factory=dict)
    metrics: Metrics | None = None
    # With more than one replica: workers start only once this replica leads (leading.py).
    election: leading.Election | None = None
    # Model → the cache's stamp its last reconcile planned from, when that one ended
    # settled (`reconciling.Outcome.settled_at`); see `_resync`.
    settled: dict[ModelKey, cache.Stamp] = field(default_factory=dict)

    def enqueue(self, key: ModelKey, *, unless_settled: bool = False) -> None:
        """Queue a model for a reconcile, on the leader only: a standby's queue stays
        empty (its `workqueue_depth` 0, not every model forever); it lists every
        model once when it takes over (`_lead`). `unless_settled`: not if nothing
        it reads changed since its last reconcile ended settled (see `_resync`)."""
        if unless_settled and self.is_settled(key):
            return
        if self.election is None or self.election.leading.is_set():
            self.queue.add(key)

    def is_settled(self, key: ModelKey) -> bool:
        """Whether a re-plan of the model from the cache would change nothing (see `_resync`)."""
        if not self.context.verifier.settings.wake_rechecks:
            return False  # re-checks start only in reconciles: every resync must run
        settled = self.settled.get(key)
        return settled is not None and settled == self.context.cache.stamp(key)

    def retry_later(self, key: ModelKey) -> float:
        """Exponential backoff per model: 1s, 2s, 4s … capped at a minute."""
        count = self.failures.get(key, 0)
        self.failures[key] = count + 1
        delay = float(min(60, 2**count))
        self.queue.retried()
        asyncio.get_running_loop().call_later(delay, self.queue.add, key)
        return delay


@kopf.on.startup()
async def start_workers(memo: Runtime, settings: kopf.OperatorSettings, **_: Any) -> None:
    configure(settings)
    # Startup activities finish before Kopf's watchers start: the LISTs here come
    # before Kopf's own, which `cache` relies on. Without them the cache stays
    # unused and every reconcile reads the API, as it did before the cache. A
    # standby primes and feeds its cache too, so it takes over warm.
    try:
        listed = await asyncio.to_thread(kube.list_for_cache, memo.context.client, namespace=memo.namespace)
        memo.context.cache.prime(listed)
        log.info("cache primed with %d objects", len(memo.context.cache))
    except Exception:
        log.exception("could not list the objects to cache; reading the API on every reconcile")
    memo.tasks = [asyncio.create_task(_lead(memo))]


async def _lead(memo: Runtime) -> None:
    """Reconcile once this replica leads (at once without an election, when Kopf's
    first listing queues every model). A new leader queued nothing while it stood
    by: it queues every model once; events arriving meanwhile are queued already."""
    if memo.election is not None:
        memo.election.start()
        await memo.election.acquired()
        for delay in itertools.count(1):  # until the models are known
            if await _queue_all(memo):
                break
            await asyncio.sleep(min(delay, 10))
    if memo.metrics is not None:
        memo.metrics.leading(True, *([memo.election.settings.name] if memo.election else []))
    memo.tasks += [asyncio.create_task(_worker(memo, i)) for i in range(memo.workers)]
    memo.tasks.append(asyncio.create_task(_resync(memo)))


@kopf.on.cleanup()
async def stop_workers(memo: Runtime, **_: Any) -> None:
    """No new reconcile starts. One still running on its thread finishes: `asyncio.run`
    waits for the threads before `running` releases the lease."""
    memo.context.verifier.close()
    for task in list(memo.tasks):
        task.cancel()
    await asyncio.gather(*memo.tasks, return_exceptions=True)


def configure(settings: kopf.OperatorSettings) -> None:
    # Our own Events say what happened; Kopf's per-log-line Events would be noise.
    settings.posting.enabled = False
    # Long watches, but never silent forever: reconnect well before proxies cut them.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    # Never a finalizer or an annotation on a user's object (see module docstring).
    # Should a change handler ever be added, its state goes to status (never
    # compared by GitOps tools), not to annotations.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf")
    settings.persistence.diffbase_storage = NoDiffBase()
    # Only our own Deployments, Services and Jobs are sent by the API server: a cluster
    # with many unrelated ones costs neither memory nor CPU here.
    for group, plural in (("apps", "deployments"), ("", "services"), ("batch", "jobs")):
        settings.watching.label_selectors[group, plural] = OWNED_SELECTOR


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: Kopf builds one for every watch event (a deep copy of the object
    without its status) for change handlers to diff against, and this operator has
    none (module docstring; a unit test keeps it so). The copy was pure cost: about
    a fifth of Kopf's CPU per event, 8% of the operator's while 10,000 versions
    converge (each status write comes back as an event). Should a change handler
    be added, it needs `kopf.StatusDiffBaseStorage(field="status.kopf.diffbase")`
    again, never an annotation (module docstring)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def _seen(memo: Runtime, kind: str, event_type: str | None, body: kopf.Body) -> None:
    """Every watch event updates the cache before its model is queued (see `cache`)."""
    meta = body.get("metadata") or {}
    if not meta.get("namespace"):
        return
    if event_type == "DELETED":
        memo.context.cache.remove(kind, meta["namespace"], meta["name"])
        return
    # Kopf's view over the event's own dict: the values are plain (`put` keeps a compact copy).
    memo.context.cache.put(kind, dict(body))


# The event handlers are coroutines although they only add a key: Kopf runs a
# plain `def` handler in an executor thread, and the queue belongs to the loop.
@kopf.on.event(GROUP, VERSION, rm.PLURAL)
async def on_model_event(
    memo: Runtime,
    type: str,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    meta: kopf.Meta,
    status: kopf.Status,
    **_: Any,
) -> None:
    _seen(memo, cache.MODEL, type, body)
    if namespace and not _echo_of_our_status_write(type, meta, status):
        memo.enqueue((namespace, name), unless_settled=_listed(type))


@kopf.on.event(GROUP, VERSION, mv.PLURAL)
async def on_version_event(
    memo: Runtime,
    type: str,
    body: kopf.Body,
    spec: kopf.Spec,
    namespace: str | None,
    meta: kopf.Meta,
    status: kopf.Status,
    **_: Any,
) -> None:
    _seen(memo, cache.VERSION, type, body)
    if namespace and (model := spec.get("model")) and not _echo_of_our_status_write(type, meta, status):
        log.debug("event %s modelversion %s/%s generation %s", type, namespace, meta.get("name"),
                  meta.get("generation"))  # fmt: skip
        memo.enqueue((namespace, model), unless_settled=_listed(type))


def _listed(event_type: str | None) -> bool:
    """An object shown by a listing, not a change: Kopf lists each kind at start and
    again when a watch expires (410 Gone), and shows every object as an event of type
    None. An object unchanged since the last reconcile of its model (same
    resourceVersion: the cache's stamp did not move) needs no reconcile."""
    return event_type is None


def _echo_of_our_status_write(event_type: str, meta: kopf.Meta, status: kopf.Status) -> bool:
    """An update whose status already describes its generation is the echo of the
    operator's own status write (or a metadata-only edit): nothing to reconcile.
    Skipping it halves the reads per change; the periodic resync still re-checks."""
    if tampering.foreign_status_writer({"metadata": dict(meta)}) is not None:
        return False  # somebody else wrote the status: look now, not at the next resync
    return event_type == "MODIFIED" and meta.get("generation") == status.get("observedGeneration")


OWNED_SELECTOR = kube.OWNED_SELECTOR
_OWNED: dict[str, Any] = {"app.kubernetes.io/managed-by": "modelreg", "modelreg.dev/model": kopf.PRESENT}


@kopf.on.event("apps", "v1", "deployments", labels=_OWNED)
@kopf.on.event("", "v1", "services", labels=_OWNED)
@kopf.on.event("batch", "v1", "jobs", labels=_OWNED)
async def on_owned_event(
    memo: Runtime, type: str, body: kopf.Body, labels: kopf.Labels, namespace: str | None, **_: Any
) -> None:
    """A change to a Deployment, Service or validation Job we own: its rollout moved, a
    Job finished, or someone edited it."""
    _seen(memo, str(body.get("kind")), type, body)
    if namespace:
        memo.enqueue((namespace, labels["modelreg.dev/model"]), unless_settled=_listed(type))


@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers")
async def on_autoscaler_event(memo: Runtime, type: str, body: kopf.Body, spec: kopf.Spec, namespace: str | None,
                              **_: Any) -> None:  # fmt: skip
    """An autoscaler's minimum is the capacity a switch waits for: the model whose
    Deployment it scales plans again."""
    _seen(memo, cache.HPA, type, body)
    target = (spec.get("scaleTargetRef") or {}).get("name")
    if namespace and target and (model := memo.context.cache.model_of_deployment(namespace, target)):
        memo.enqueue((namespace, model))


async def _worker(memo: Runtime, index: int) -> None:
    while True:
        key = await memo.queue.get()
        with logs.context(namespace=key[0], model=key[1], reconcile_id=logs.new_reconcile_id()):
            await _reconcile(memo, key)


async def _reconcile(memo: Runtime, key: ModelKey) -> None:
    """One reconcile of one key, its log lines and its metrics (results named as controller-runtime's)."""
    started = time.monotonic()
    result = "error"
    try:
        outcome = await asyncio.to_thread(reconciling.reconcile_model, memo.context, namespace=key[0], model=key[1])
        result = "requeue" if outcome.retry else "success"
        if memo.metrics is not None and outcome.after is not None:
            memo.metrics.observe_plan(namespace=key[0], model=key[1], before=outcome.before, after=outcome.after,
                                      now=outcome.now or reconciling.utcnow())  # fmt: skip
        if outcome.writes:
            log.info("reconciled %s/%s with %d writes", *key, outcome.writes)
        if log.isEnabledFor(logging.DEBUG):
            steps = ", ".join(f"{name} {seconds * 1000:.1f}" for name, seconds in outcome.laps.items())
            log.debug("timings (ms): queued %.1f, %s; %d writes", memo.queue.waited(key) * 1000, steps,
                      outcome.writes)  # fmt: skip
        if outcome.settled_at is not None:
            memo.settled[key] = outcome.settled_at
        else:
            memo.settled.pop(key, None)
        if outcome.retry:
            log.info("%s/%s waits on storage or a rollout; checking again in %.0fs", *key, memo.retry_later(key))
        else:
            memo.failures.pop(key, None)
    except kube.Stale as exc:
        # Planned from an outdated read (another writer was faster than the watch):
        # plan again at once (the key runs again after `done`), from the API. Not a
        # failure: no backoff.
        log.info("%s/%s changed while it was reconciled (%s); again from fresh reads", *key, exc)
        memo.context.cache.distrust(key)
        memo.settled.pop(key, None)
        memo.queue.add(key)
        result = "requeue"
    except Exception:
        memo.settled.pop(key, None)
        log.exception("reconcile of %s/%s failed; retrying in %.0fs", *key, memo.retry_later(key))
    finally:
        memo.queue.done(key)
        if memo.metrics is not None:
            memo.metrics.observe_reconcile(result=result, seconds=time.monotonic() - started)


async def _resync(memo: Runtime) -> None:
    """Re-check every model periodically: the safety net of a level-triggered
    operator, for what no event reports. The models are the cache's (kept by the
    watches): a resync costs no API call.

    A model is skipped when nothing it reads changed since its last reconcile
    ended settled (`reconciling.Outcome.settled_at`): the cache's stamp for it
    (`cache.Cache.stamp`, a change count of its objects and of its namespace's
    autoscalers) is the one that reconcile planned from. Re-planning it would
    give the same answer from the same inputs; at 10,000 versions that was
    1,000 re-plans (~3.4 ms each) a minute for nothing.

    Why nothing is lost. A plan depends on (a) the cached objects, covered by the
    stamp: every watch event that changes an object moves it (a listing that shows
    an object again unchanged does not), and an event queues its model anyway;
    (b) what the cache does not hold, and (c) time. A reconcile that depended on
    (b) or (c) does not end settled, so the resync keeps re-checking its model:
    one that read Pods (a Deployment not fully available: Pods crash-looping move
    no watched object), one with a refusal on record (a name held by an object not
    watched), a validation Job under way (its Pods are read), a retry (a gate not
    known yet, a transient failure; it also has its backoff timer), a rollout under
    way (the progress deadline of a scale-up is timed from the request: `retry`),
    any write or Event (the next reconcile confirms it was the last), and a
    reconcile that read the API instead of the cache. What time alone changes for
    a settled model has a trigger of its own: the verifier's `verify-due` thread
    runs each artifact re-check when it comes due and queues the model when the
    result changes what status says, or queues it at once when only a reconcile
    can start the check (a retry, a Secret to read again); so when `wake_rechecks`
    is off, nothing is skipped. Kubernetes itself times rollouts
    (`ProgressDeadlineExceeded` arrives as a Deployment event) and validation Jobs
    (`activeDeadlineSeconds`, a Job event). Secrets are read as storage
    credentials, not watched: a change reaches a settled model at its next
    artifact re-check, which is started by a reconcile that reads the Secret
    again (`verifying`: only re-checks without a Secret skip the reconcile).

    Concurrency: `settled` is only touched on the event loop (set by `_reconcile`
    when a worker's reconcile returns, read here and by the event handlers); the
    stamp is read under the cache's lock. A stamp is taken with the snapshot a
    reconcile plans from, so an event arriving during that reconcile moves the
    stamp past it (and queues the model anyway): the skip can only ever compare
    against a plan that saw everything cached now."""
    while True:
        await asyncio.sleep(memo.resync_seconds)
        await _queue_all(memo, unless_settled=True)


async def _queue_all(memo: Runtime, *, unless_settled: bool = False) -> bool:
    """Queue every model: the cache's (kept by the watches, no API call), or one LIST
    while the cache is not ready. False if that list failed. `unless_settled`: not
    the models a reconcile would change nothing for (`_resync`)."""
    if memo.context.cache.ready:
        keys = memo.context.cache.keys()
    else:
        try:
            keys = await asyncio.to_thread(kube.list_model_names, memo.context.client, namespace=memo.namespace)
        except Exception:
            log.exception("could not list the models to re-check them")
            return False
    for gone in set(memo.settled) - set(keys):  # models deleted since
        del memo.settled[gone]
    for key in keys:
        if (memo.namespace is None or key[0] == memo.namespace) and not (unless_settled and memo.is_settled(key)):
            memo.queue.add(key)
    return True
