"""Artifact verification, apart from reconciles: which checks are due, which
storage a model may use, and a small pool of threads that runs the checks.

Called by `reconciling` (`Verifier.checks`, once per reconcile of a model) and
set up by `running` (its settings come from `modelreg run` flags). For each
version it answers an `ArtifactCheck`, or None: "no fresh result, keep what
status says" (the lifecycle engine then reuses the old verdict).

When a check is due. Status already holds the facts (`status.artifact`: digest,
ETag/VersionId, verifiedAt) and the `ArtifactVerified` condition, so a restarted
operator needs no memory to go on serving:
- no verdict for the version's current generation (a new version, a changed
  spec, a check cut short by a restart): check now. The reconcile waits a moment
  (`wait_seconds`), enough for a HEAD; a longer check is reported as
  `Verifying` (with the MiB read so far), so nothing is promoted on an older
  verdict meanwhile;
- a verified artifact is re-checked about every `recheck_seconds` while the
  version is deployed (Staging or Production: its Pods fetch the artifact when
  they start), and about every `recheck_undeployed_seconds` (an hour) otherwise.
  Such a re-check only brings status up to date: a promotion changes the spec,
  so the new generation is verified before anything is decided on it, and a
  registry of 10,000 Development versions would otherwise spend a HEAD every
  30 ms on them. Each period is drawn with jitter so versions verified together
  drift apart. After a restart
  the first re-check of each comes at a random moment within one period (or a
  period after its verifiedAt, when that is sooner), never all at once. A
  re-check that finds the same ETag/VersionId gets the same facts back,
  verifiedAt included, so it writes nothing;
- a failed check is retried with backoff, 1 s doubling up to
  `failure_backoff_max`.
A first check starts when a reconcile of its model asks (`checks`). So that a
re-check runs when it comes due, not at the next resync (which queues every
model at once, and would gather a minute's worth of re-checks into one burst),
a thread of this module (`wake_rechecks`) keeps the due times in a heap. When a
record comes due it starts the re-check itself, with the version and the S3
client of the check before it, without a reconcile: a re-check that finds what
status says (the usual case) then costs one HEAD and nothing else. It queues the
model (`notify`) instead when the record has no client to reuse: the first
re-check after a restart, the retry of a failed check, a model whose storage
settings changed since, and every re-check of a model that reads its
credentials from a Secret (the reconcile reads the Secret again, so a rotated
key or a withdrawn opt-in label takes effect within a period).

Concurrency. Reconciles run on the worker threads of `handlers`; checks run on
this module's own pool of `workers` threads, so hashing a large artifact never
holds a reconcile worker. The per-version records are keyed by (version uid,
generation); a record has at most one check running, and one lock guards them
all, held for dictionary work only, never across I/O. When a check ends, its
record takes the result and `notify(model key)` adds the model to the work queue
(`WorkQueue.add` is safe from any thread), so a reconcile picks the result up;
unless the result is what status already says (`_confirms`: a re-check of an
unchanged artifact), which a reconcile would only re-plan to write nothing.
Records of versions gone, or of a model not reconciled for a long while (a
deleted one), are dropped, so memory follows what exists.
boto3 clients are thread-safe: one per (endpoint, region, credentials) is built
once, under its own lock, and shared by all threads; at most `max_clients` are
kept, least recently used dropped first. They are all built from one boto3
Session (not thread-safe, so used under that same lock only): a client of its
own Session costs ~15 MiB, one more from a shared Session ~0.3 MiB.

Confused deputy. A RegisteredModel's author chooses the endpoint and names a
Secret, and the operator reads with its own rights; so they must not reach
further than the author could: the endpoint must be https (unless the operator
runs with `allow_insecure`) and on the operator's list when it has one, and a
Secret is used only when it opts in with the label
`modelreg.dev/storage-credentials: "true"`. A refusal is a `StorageMisconfigured`
verdict that says what to do, never a crash.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import heapq
import logging
import math
import random
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from kubernetes.client import ApiClient

from modelreg import artifacts, kube, lifecycle, logs
from modelreg.api.common import Condition, Stage
from modelreg.api.modelversion import ArtifactStatus
from modelreg.facts import ArtifactCheck, ArtifactReason
from modelreg.metrics import Metrics

log = logging.getLogger(__name__)

STORAGE_CREDENTIALS_LABEL = "modelreg.dev/storage-credentials"
ModelKey = tuple[str, str]  # (namespace, model name)
_MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """How the operator verifies; set by `modelreg run` flags."""

    recheck_seconds: float = 300.0  # a deployed version's artifact is re-checked (one HEAD) about this often
    # … and that of a version not deployed (Development); never more often than the above
    recheck_undeployed_seconds: float = 3600.0
    jitter: float = 0.2  # each period is drawn from recheck_seconds * (1 ± jitter)
    workers: int = 2  # checks running at once
    wait_seconds: float = 2.0  # how long a reconcile waits for a check it needs before saying Verifying
    max_bytes: int | None = 64 * 1024**3  # at most this much streamed to hash one artifact
    max_seconds: float | None = 1800.0  # … and for at most this long
    progress_seconds: float = 10.0  # a long first check shows its progress in status this often
    failure_backoff_max: float = 60.0
    max_clients: int = 32
    allow_insecure: bool = False  # plain http endpoints (a loopback test store, a trusted network)
    endpoints: tuple[str, ...] = ()  # the spec.storage.endpoint values allowed; empty: any https endpoint
    wake_rechecks: bool = True  # queue a model when a check of it comes due (off: only reconciles start checks)


@dataclass(frozen=True)
class Target:
    """Where, and as whom, a model's artifacts are read."""

    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)

    def client_key(self) -> tuple[str | None, ...]:
        # A hash of the secret: a rotated Secret gets a fresh client, and no key sits in a dict key.
        fingerprint = hashlib.sha256(self.secret_key.encode()).hexdigest() if self.secret_key else None
        return (self.endpoint, self.region, self.access_key, fingerprint)


def endpoint_refusal(endpoint: str | None, settings: Settings) -> str | None:
    """Why the operator may not send requests (and credentials) to `endpoint`, or None.
    No endpoint means the operator's own configuration (ambient chain), always allowed."""
    if endpoint is None:
        return None
    scheme = urlsplit(endpoint).scheme.lower()
    if scheme not in ("http", "https") or not urlsplit(endpoint).hostname:
        return f"spec.storage.endpoint {endpoint!r} is not an http(s) URL"
    if scheme == "http" and not settings.allow_insecure:
        return (
            f"spec.storage.endpoint {endpoint} is plain http, and the operator sends storage credentials only over "
            "https: use an https endpoint, or run the operator with --allow-insecure-storage (trusted networks only)"
        )
    if settings.endpoints and _normal(endpoint) not in {_normal(e) for e in settings.endpoints}:
        return (
            f"spec.storage.endpoint {endpoint} is not one this operator may use (allowed: "
            f"{', '.join(settings.endpoints)}): ask its administrators to add it (--storage-endpoint or "
            "MODELREG_STORAGE_ENDPOINTS), or use an allowed endpoint"
        )
    return None


def _normal(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    scheme = parts.scheme.lower()
    port = port or {"https": 443, "http": 80}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def credentials(
    secret: kube.SecretData | None, *, name: str, namespace: str, access_key_key: str, secret_key_key: str
) -> tuple[str, str]:
    """The access key and secret key from a Secret that opted in; `ArtifactError` otherwise."""
    misconfigured = ArtifactReason.STORAGE_MISCONFIGURED
    if secret is None:
        raise artifacts.ArtifactError(misconfigured, f"Secret {name!r} (spec.storage.credentialsSecret) is missing")
    if secret.labels.get(STORAGE_CREDENTIALS_LABEL) != "true":
        raise artifacts.ArtifactError(
            misconfigured,
            f"Secret {name!r} (spec.storage.credentialsSecret) has not opted in: the operator reads only Secrets "
            f'labelled {STORAGE_CREDENTIALS_LABEL}: "true" '
            f"(kubectl label secret {name} -n {namespace} {STORAGE_CREDENTIALS_LABEL}=true)",
        )
    values = []
    for key in (access_key_key, secret_key_key):
        value = secret.data.get(key)
        if not value:
            raise artifacts.ArtifactError(
                misconfigured, f"Secret {name!r} lacks {access_key_key!r} or {secret_key_key!r}"
            )
        try:
            values.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            raise artifacts.ArtifactError(
                misconfigured, f"the value of {key!r} in Secret {name!r} is not UTF-8 text, as S3 credentials are"
            ) from None
    return values[0], values[1]


_ARTIFACT_FIELDS = tuple(ArtifactStatus.model_fields)


@dataclass(frozen=True, slots=True)
class _Subject:
    """What a check needs of its version, as the last reconcile saw it. Its record
    keeps this so that the due thread can start a re-check on its own: a few slots,
    not the parsed version (10,000 of those would cost tens of MiB), its strings
    interned so they are the cache's own copies (`cache.compact`), and
    status.artifact as plain values (a model of it costs 1.1 KB)."""

    ident: tuple[str, int]  # (uid, generation)
    name: str
    uri: str
    sha256: str | None
    previous: tuple[Any, ...] | None  # status.artifact: its fields' values, in `_ARTIFACT_FIELDS` order
    deployed: bool  # Staging or Production, asked or effective
    fresh_needed: bool  # `_awaits_fresh`
    confirmed: str | None  # the message of ArtifactVerified=True for this generation, if so

    @classmethod
    def of(cls, v: lifecycle.VersionInput) -> _Subject:
        cond = _condition(v)
        fresh = _awaits_fresh(v)
        art = v.status.artifact
        return cls(
            ident=(_shared(_ident(v)[0]), v.generation),
            name=_shared(v.name),
            uri=_shared(v.spec.artifact.uri),
            sha256=_shared(v.spec.artifact.sha256),
            previous=None if art is None else tuple(_shared(getattr(art, f)) for f in _ARTIFACT_FIELDS),
            deployed=bool({v.spec.stage, v.status.stage} & {Stage.STAGING, Stage.PRODUCTION}),
            fresh_needed=fresh,
            confirmed=_shared(cond.message) if cond is not None and cond.status == "True" and not fresh else None,
        )

    def artifact(self) -> ArtifactStatus | None:
        """status.artifact as the reconcile read it (a new model each call)."""
        if self.previous is None:
            return None
        return ArtifactStatus.model_construct(**dict(zip(_ARTIFACT_FIELDS, self.previous, strict=True)))


@dataclass
class _Record:
    """What is known about one (version uid, generation) in this process."""

    model: ModelKey
    next_due: float  # time.monotonic() value
    result: ArtifactCheck | None = None
    running: bool = False
    future: Future[None] | None = None
    budget: artifacts.Budget | None = None
    failures: int = 0
    # What the due thread needs to start a re-check itself: the version as its last
    # reconcile saw it, and the client (with the storage settings it was built for)
    # of the check before. No client: the re-check goes through a reconcile.
    subject: _Subject | None = None
    s3: Any = None
    storage: object = None


VerifyFn = Callable[..., ArtifactCheck]
ClientFn = Callable[..., Any]


class Verifier:
    """Runs artifact checks on a small pool of threads; see the module docstring."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        notify: Callable[[ModelKey], None] | None = None,
        verify: VerifyFn = artifacts.verify,
        new_client: ClientFn | None = None,  # default: from this Verifier's one boto3 Session
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.metrics = metrics
        self.notify: Callable[[ModelKey], None] = notify or (lambda key: None)
        self._verify = verify
        self._new_client = new_client or self._new_s3_client
        self._session: Any = None  # built with the first client, under _clients_lock
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._records: dict[ModelKey, dict[tuple[str, int], _Record]] = {}
        self._seen: dict[ModelKey, float] = {}  # when each model was last asked about
        self._clients_lock = threading.Lock()
        self._clients: OrderedDict[tuple[str | None, ...], Any] = OrderedDict()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=self.settings.workers, thread_name_prefix="verify")
        # (due time, model, record ident) of every record with a check to come; entries go
        # stale when a record is dropped or rescheduled, and are checked against it when popped.
        self._due: list[tuple[float, ModelKey, tuple[str, int]]] = []
        self._wakeup = threading.Condition(self._lock)
        if self.settings.wake_rechecks:
            threading.Thread(target=self._wake_due, name="verify-due", daemon=True).start()

    def close(self) -> None:
        """Stop: running checks give up at their next chunk; queued ones never start."""
        self._stop.set()
        with self._lock:
            self._wakeup.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def storage_refusal(self, client: ApiClient, *, namespace: str, model: lifecycle.ModelInput) -> str | None:
        """Why the model's storage settings may not be used, or None. Serving Pods get
        the same endpoint and Secret (their init container fetches the artifact), so
        a Deployment is rendered with them only when the operator itself may use them."""
        try:
            self._target(client, namespace, model)
        except artifacts.ArtifactError as exc:
            return str(exc)
        return None

    def checks(
        self,
        client: ApiClient,
        *,
        namespace: str,
        model: lifecycle.ModelInput,
        versions: Sequence[lifecycle.VersionInput],
        now: datetime.datetime,
    ) -> dict[str, ArtifactCheck | None]:
        """Start the checks that are due; answer, per version name, the latest result or None."""
        key = (namespace, model.name)
        mono = self._clock()
        wanted = [v for v in versions if _worth_checking(v)]
        due: list[tuple[_Subject, _Record]] = []
        with self._lock:
            self._forget_unseen(mono)
            self._seen[key] = mono
            records = self._records.setdefault(key, {})
            current = {_ident(v) for v in wanted}
            for gone in [i for i, r in records.items() if i not in current and not r.running]:
                del records[gone]  # a deleted version, or an older generation
            for v in wanted:
                subject = _Subject.of(v)
                rec = records.get(subject.ident)
                if rec is None:
                    rec = records[subject.ident] = _Record(model=key, next_due=self._first_due(subject, now, mono))
                    self._schedule(rec, subject.ident)
                rec.subject = subject
                if rec.storage != model.spec.storage:
                    rec.s3 = None  # built for other storage settings: the next check reads them again
                if not rec.running and mono >= rec.next_due:
                    rec.running = True  # claimed here, under the lock: one check per record
                    due.append((subject, rec))
        if due:
            self._start(client, namespace, model, due, now)
        with self._lock:  # wait for the checks just started (a HEAD is quick), never again for a long one
            needed = [f for subject, rec in due if subject.fresh_needed and (f := rec.future) is not None]
        if needed:
            concurrent.futures.wait(needed, timeout=self.settings.wait_seconds)
        with self._lock:
            return {v.name: _answer(v, records.get(_ident(v))) if _worth_checking(v) else None for v in versions}

    def _forget_unseen(self, mono: float) -> None:
        """Drop the records of models not reconciled for a long while (deleted ones), under the lock."""
        horizon = mono - 3 * max(self.settings.recheck_seconds, 600.0)
        for key in [k for k, seen in self._seen.items() if seen < horizon]:
            if not any(r.running for r in self._records.get(key, {}).values()):
                self._records.pop(key, None)
                del self._seen[key]

    def _start(
        self,
        client: ApiClient,
        namespace: str,
        model: lifecycle.ModelInput,
        due: list[tuple[_Subject, _Record]],
        now: datetime.datetime,
    ) -> None:
        try:
            s3 = self._client(self._target(client, namespace, model))
        except artifacts.ArtifactError as exc:
            failed = ArtifactCheck(exc.reason, str(exc))
            with self._lock:
                for v, rec in due:
                    self._finish(rec, failed, v)
            return
        except BaseException:  # the API server failed us: nothing runs, the reconcile retries
            with self._lock:
                for _, rec in due:
                    rec.running = False
            raise
        with self._lock:
            for v, rec in due:
                # A client built from a Secret is not reused by the due thread: each re-check's
                # reconcile reads the Secret again, so a rotated key or a withdrawn opt-in label
                # takes effect within a period.
                secret = model.spec.storage is not None and model.spec.storage.credentials_secret is not None
                rec.s3, rec.storage = (None if secret else s3), model.spec.storage
                self._submit(s3, v, rec, now)

    def _submit(self, s3: Any, v: _Subject, rec: _Record, now: datetime.datetime) -> None:
        """Run a claimed record's check on the pool (under the lock)."""
        s = self.settings
        notify = (lambda k=rec.model: self.notify(k)) if v.fresh_needed else None
        rec.budget = artifacts.Budget(max_bytes=s.max_bytes, max_seconds=s.max_seconds, stop=self._stop,
                                      on_progress=notify, progress_seconds=s.progress_seconds)  # fmt: skip
        try:
            rec.future = self._pool.submit(self._run, s3, v, rec, rec.budget, now)
        except RuntimeError:  # the pool is shut down: the operator stops
            rec.running = False

    def _run(self, s3: Any, v: _Subject, rec: _Record, budget: artifacts.Budget, now: datetime.datetime) -> None:
        uri, previous = v.uri, v.artifact()
        started = time.monotonic()
        # This pool's threads do not inherit a reconcile's log context: say whose check it is.
        with logs.context(namespace=rec.model[0], model=rec.model[1], version=v.name):
            try:
                check = self._verify(s3, uri, expected_sha256=v.sha256, previous=previous, now=now, budget=budget)
            except Exception as exc:  # a bug must not leave a version "verifying" for ever
                log.exception("verifying %s failed unexpectedly", uri)
                check = ArtifactCheck(ArtifactReason.STORAGE_UNAVAILABLE, f"verifying {uri} failed unexpectedly: {exc}")
        if self.metrics is not None:
            size = check.facts.size if check.ok and check.facts is not None else None
            self.metrics.observe_verification(result=check.reason.value, seconds=time.monotonic() - started,
                                              downloaded=budget.read, size=size)  # fmt: skip
        with self._lock:
            self._finish(rec, check, v)
        if not _confirms(v, check, previous):
            self.notify(rec.model)

    def _finish(self, rec: _Record, check: ArtifactCheck, v: _Subject) -> None:
        """Record a result and when to check again (under the lock)."""
        rec.running, rec.future, rec.result, rec.budget = False, None, check, None
        if check.ok:
            rec.failures = 0
            rec.next_due = self._clock() + self._period(v)
        else:
            rec.failures += 1
            rec.next_due = self._clock() + min(self.settings.failure_backoff_max, 2.0 ** (rec.failures - 1))
            rec.s3 = None  # the retry goes through a reconcile, which reads the storage settings again
        self._schedule(rec, v.ident)

    def _schedule(self, rec: _Record, ident: tuple[str, int]) -> None:
        """Remember when `rec` comes due (under the lock). The due thread sleeps until
        the earliest due time: it is woken only when this one comes before that."""
        heapq.heappush(self._due, (rec.next_due, rec.model, ident))
        if self._due[0][2] == ident and self._due[0][0] == rec.next_due:
            self._wakeup.notify()

    def _pop_due(self, mono: float) -> list[_Record]:
        """The records due by `mono` and not running, each once (under the lock)."""
        found: dict[int, _Record] = {}  # ordered, and each once
        while self._due and self._due[0][0] <= mono:
            _, key, ident = heapq.heappop(self._due)
            rec = self._records.get(key, {}).get(ident)
            if rec is not None and not rec.running and rec.next_due <= mono:
                found[id(rec)] = rec
        return list(found.values())

    def _wake_due(self) -> None:
        """The `verify-due` thread: start each re-check when it comes due, or queue its
        model when only a reconcile can start it (module docstring)."""
        while not self._stop.is_set():
            queue: dict[ModelKey, None] = {}
            with self._lock:
                due = self._pop_due(self._clock())
                if not due:
                    self._wakeup.wait(self._due[0][0] - self._clock() if self._due else None)
                    continue
                now = datetime.datetime.now(datetime.UTC)
                for rec in due:
                    if rec.s3 is not None and rec.subject is not None and not rec.subject.fresh_needed:
                        rec.running = True  # claimed under the lock, as in `checks`
                        self._submit(rec.s3, rec.subject, rec, now)
                    else:
                        queue[rec.model] = None
            for key in queue:  # outside the lock: notify takes the work queue's own
                self.notify(key)

    def _base_period(self, v: _Subject) -> float:
        """How often a verified artifact is re-checked (module docstring), before jitter."""
        s = self.settings
        return s.recheck_seconds if v.deployed else max(s.recheck_seconds, s.recheck_undeployed_seconds)

    def _period(self, v: _Subject) -> float:
        return self._base_period(v) * (1 + self.settings.jitter * (2 * self._rng.random() - 1))

    def _first_due(self, v: _Subject, now: datetime.datetime, mono: float) -> float:
        """When to check a version this process has no record of, from its status alone."""
        artifact = v.artifact()
        if artifact is None or v.confirmed is None:
            return mono
        verified_at = artifact.verified_at
        age = (now - verified_at).total_seconds() if verified_at else math.inf
        period = self._base_period(v)
        if age < period:  # checked less than a period ago: due a period after that, plus jitter
            return mono + (period - age) + period * self.settings.jitter * self._rng.random()
        # verifiedAt stays put while re-checks find the same ETag, so it does not tell
        # when the last re-check ran: spread these over the next period.
        return mono + period * self._rng.random()

    def _target(self, client: ApiClient, namespace: str, model: lifecycle.ModelInput) -> Target:
        storage = model.spec.storage
        if storage is None:
            return Target()
        refusal = endpoint_refusal(storage.endpoint, self.settings)
        if refusal:
            raise artifacts.ArtifactError(ArtifactReason.STORAGE_MISCONFIGURED, refusal)
        ref = storage.credentials_secret
        if ref is None:
            return Target(endpoint=storage.endpoint, region=storage.region)
        secret = kube.read_secret(client, namespace=namespace, name=ref.name)
        access, key = credentials(
            secret,
            name=ref.name,
            namespace=namespace,
            access_key_key=ref.access_key_id_key,
            secret_key_key=ref.secret_access_key_key,
        )
        return Target(endpoint=storage.endpoint, region=storage.region, access_key=access, secret_key=key)

    def _client(self, target: Target) -> Any:
        key = target.client_key()
        with self._clients_lock:  # built once per key, even when several reconciles ask at once
            client = self._clients.get(key)
            if client is None:
                client = self._new_client(endpoint=target.endpoint, region=target.region,
                                          access_key=target.access_key, secret_key=target.secret_key)  # fmt: skip
                self._clients[key] = client
                while len(self._clients) > self.settings.max_clients:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(key)
            return client

    def _new_s3_client(self, **target: Any) -> Any:
        """Under _clients_lock only (the Session is not thread-safe)."""
        if self._session is None:
            self._session = artifacts.new_session()
        return artifacts.new_s3_client(session=self._session, **target)


def _ident(v: lifecycle.VersionInput) -> tuple[str, int]:
    return (v.uid or v.name, v.generation)


def _worth_checking(v: lifecycle.VersionInput) -> bool:
    return not (v.spec.stage is Stage.ARCHIVED and v.status.stage is Stage.ARCHIVED)  # nothing will deploy it


def _condition(v: lifecycle.VersionInput) -> Condition | None:
    return next((c for c in v.status.conditions if c.type == lifecycle.ARTIFACT_VERIFIED), None)


def _awaits_fresh(v: lifecycle.VersionInput) -> bool:
    """Status holds no verdict for this generation: nothing may be decided on an older one."""
    cond = _condition(v)
    return (
        cond is None
        or cond.observed_generation != v.generation
        or cond.reason in (ArtifactReason.VERIFYING.value, "Pending")
    )


def _confirms(v: _Subject, check: ArtifactCheck, previous: ArtifactStatus | None) -> bool:
    """A re-check found what the version's status already says (same facts, verifiedAt
    included, same verdict and message): a reconcile would write nothing, so the model
    is not queued. A reconcile for any other reason still takes this result."""
    return check.ok and v.confirmed is not None and v.confirmed == check.message and check.facts == previous


_T = TypeVar("_T")


def _shared(value: _T) -> _T:
    """A string as the interned copy the cache holds (`cache.compact`); other values as they are."""
    return sys.intern(value) if isinstance(value, str) else value  # type: ignore[return-value]


def _answer(v: lifecycle.VersionInput, rec: _Record | None) -> ArtifactCheck | None:
    if rec is None:
        return None
    if rec.result is not None:
        return rec.result
    if rec.running and _awaits_fresh(v):
        read = rec.budget.read if rec.budget else 0
        progress = f": {read // _MIB} MiB read" if read >= _MIB else ""
        return ArtifactCheck(ArtifactReason.VERIFYING, f"verifying {v.spec.artifact.uri}{progress}")
    return None
