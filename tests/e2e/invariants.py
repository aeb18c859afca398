"""A background checker of the serving invariants (never two versions with
status.stage Production; while one is, the `<model>` Service selects a version
and has a ready endpoint), for one model in one namespace.

Used by e2e tests through the `invariants` fixture (tests/e2e/conftest.py) or
directly as a context manager. It watches the real API server, keeps the latest
view of the model's ModelVersions, its `<model>` Service and that Service's
EndpointSlices, and after every event evaluates:

- never two versions with `status.stage == Production` at once;
- while a version is Production, the Service exists, its selector names a
  version, and it has at least one ready endpoint. Existence and endpoints get a
  grace only until the Service first had a ready endpoint (the initial rollout);
  a Service deleted while nothing is Production (a deliberate teardown) re-arms it.
- with `require_endpoint`, additionally: once the Service had a ready endpoint,
  it never loses it, whatever the stages say (the endpoint is never dropped by
  accident, not even when a demotion arrives before the matching promotion).
  Tests that take a model offline or delete its serving version on purpose
  leave it off.

No check asks for "never zero Production": a handover writes two status
objects, so a reader sees either two or none for a moment; the rule kept here
is that it is never two.

Why events are reordered: the three kinds come on three watch connections, so
one connection may deliver a change a few milliseconds after another delivers
a later one. The checker holds each event for `settle` seconds and evaluates
them in resourceVersion order, which on one API server backed by etcd is the
order of the writes (etcd revisions). A client must not rely on that in
general; a test of our own control plane may, and it is what makes a reported
violation a state that really existed rather than an artefact of delivery.

Each watch starts from its list's resourceVersion and restarts from the last
resourceVersion it saw (events and bookmarks), so nothing is missed between
list and watch or across reconnects; a 410 Gone relists and reconciles the
view with what is there.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import kubernetes
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi, DiscoveryV1Api
from kubernetes.client.rest import ApiException

Obj = dict[str, Any]

PRODUCTION = "Production"
VERSION_LABEL = "modelreg.dev/version"
_WATCH_SECONDS = 120  # the server ends a watch after this; the stream resumes from its last resourceVersion


@dataclass
class Violation:
    at: float  # wall-clock time the event that exposed it arrived
    revision: str  # resourceVersion of that event
    what: str
    state: str
    until: float | None = None  # when the next event made the state good again (None: it never did)

    def __str__(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.at)) + f".{int(self.at * 1000) % 1000:03d}"
        lasted = "until the end" if self.until is None else f"for {(self.until - self.at) * 1000:.0f} ms"
        return f"{stamp} rv={self.revision} ({lasted}): {self.what} [{self.state}]"


@dataclass(order=True)
class _Event:
    revision: int
    seq: int
    arrived: float = field(compare=False)
    kind: str = field(compare=False)
    type: str = field(compare=False)
    obj: Obj = field(compare=False)


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): relist."""


class _Stream:
    """List, then watch, one kind of object; every change goes to `feed`."""

    def __init__(self, kind: str, request: Callable[..., Any], feed: Callable[[str, str, Obj], None]) -> None:
        self.kind = kind
        self._request = request  # a generated list_* method of the Python client
        self._feed = feed
        self._stop = threading.Event()
        self._response: Any = None
        self._revision = ""
        self._known: dict[str, Obj] = {}
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"invariants-{kind}", daemon=True)

    def start(self) -> None:
        self.relist()  # synchronously, so the caller's first write is surely after it
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()  # interrupts the blocking read of the watch
        self._thread.join(timeout=10)

    def relist(self) -> None:
        listed = _json(self._request(_preload_content=False))
        self._revision = listed["metadata"]["resourceVersion"]
        present = {item["metadata"]["name"]: item for item in listed.get("items", [])}
        for name, obj in self._known.items():
            if name not in present:  # deleted while we were not watching; the list's revision is when we know
                self._feed(self.kind, "DELETED", _at_revision(obj, self._revision))
        for item in present.values():
            self._feed(self.kind, "ADDED" if item["metadata"]["name"] not in self._known else "MODIFIED", item)
        self._known = present

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._watch()
                except _Gone:
                    self.relist()
                except ApiException as exc:
                    if exc.status != 410:  # Gone may come as the response's status too
                        raise
                    self.relist()
        except Exception as exc:
            if not self._stop.is_set():
                self.error = exc

    def _watch(self) -> None:
        self._response = self._request(
            watch=True,
            resource_version=self._revision,
            allow_watch_bookmarks=True,
            timeout_seconds=_WATCH_SECONDS,
            _preload_content=False,
        )
        try:
            if self._stop.is_set():  # stop() came while the request was on its way
                return
            for line in _lines(self._response):
                self._handle(json.loads(line))
        finally:
            self._response.release_conn()
            self._response = None

    def _handle(self, event: Obj) -> None:
        type_, obj = event["type"], event["object"]
        if type_ == "ERROR":
            if obj.get("code") == 410:
                raise _Gone
            raise RuntimeError(f"watch of {self.kind} failed: {obj.get('message', obj)}")
        self._revision = obj["metadata"]["resourceVersion"]
        if type_ == "BOOKMARK":
            return
        name = obj["metadata"]["name"]
        if type_ == "DELETED":
            self._known.pop(name, None)
        else:
            self._known[name] = obj
        self._feed(self.kind, type_, obj)


class Invariants:
    """Watch one model's serving state and collect every violation of the invariants."""

    def __init__(
        self,
        *,
        kubeconfig: str,
        namespace: str,
        model: str,
        require_endpoint: bool = False,
        settle: float = 0.5,
    ) -> None:
        self.namespace, self.model = namespace, model
        self.require_endpoint = require_endpoint
        self._settle = settle  # longer than any skew between two watch connections
        self._client: ApiClient = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        self._client.user_agent = "modelreg-invariants"
        self._lock = threading.Condition()
        self._pending: list[_Event] = []
        self._seq = itertools.count()
        self._last_revision = 0
        self._stopping = False
        self._processor = threading.Thread(target=self._process, name="invariants-check", daemon=True)
        # The latest view.
        self._versions: dict[str, Obj] = {}
        self._service: Obj | None = None
        self._slices: dict[str, Obj] = {}
        self._served = False  # the Service has had a ready endpoint: the grace is over
        # What the checker found.
        self.observations = 0
        self.violations: list[Violation] = []
        self.out_of_order = 0
        self.errors: list[str] = []
        custom, core, discovery = CustomObjectsApi(self._client), CoreV1Api(self._client), DiscoveryV1Api(self._client)
        ns = namespace
        self._streams = [
            _Stream("ModelVersion", _bind(custom.list_namespaced_custom_object, "modelreg.dev", "v1alpha1", ns,
                                          "modelversions"), self._feed),
            _Stream("Service", _bind(core.list_namespaced_service, ns, field_selector=f"metadata.name={model}"),
                    self._feed),
            _Stream("EndpointSlice", _bind(discovery.list_namespaced_endpoint_slice, ns,
                                           label_selector=f"kubernetes.io/service-name={model}"), self._feed),
        ]  # fmt: skip

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Invariants:
        for stream in self._streams:
            stream.start()
        self._processor.start()
        return self

    def stop(self) -> None:
        """Stop watching and evaluate everything that arrived (idempotent)."""
        if self._stopping:
            return
        for stream in self._streams:
            stream.stop()
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        self._processor.join(timeout=10)
        self.errors += [f"watch of {s.kind} failed: {s.error!r}" for s in self._streams if s.error is not None]
        self._client.close()

    def __enter__(self) -> Invariants:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        print(self.report())
        if exc_type is None:
            self.assert_held()

    # -- results -------------------------------------------------------------------

    def summary(self) -> str:
        return f"invariants: {self.observations} observations, {len(self.violations)} violations"

    def report(self, limit: int = 20) -> str:
        lines = [f"{self.summary()} ({self.namespace}/{self.model})"]
        lines += [f"  {v}" for v in self.violations[:limit]]
        if len(self.violations) > limit:
            lines.append(f"  ... and {len(self.violations) - limit} more")
        if self.out_of_order:
            lines.append(f"  {self.out_of_order} events arrived later than the settle time and were evaluated late")
        lines += [f"  error: {e}" for e in self.errors]
        return "\n".join(lines)

    def assert_held(self) -> None:
        assert not self.errors, f"the invariant checker could not watch:\n{self.report()}"
        assert self.observations > 0, f"the invariant checker saw nothing:\n{self.report()}"
        assert not self.violations, f"serving invariants broken:\n{self.report()}"

    def wait_served(self, timeout: float = 60) -> None:
        """Wait until the Service has had a ready endpoint (the grace is over)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._served:
                left = deadline - time.monotonic()
                assert left > 0, f"the Service {self.model} never had a ready endpoint:\n{self.report()}"
                self._lock.wait(left)

    # -- evaluation ----------------------------------------------------------------

    def _feed(self, kind: str, type_: str, obj: Obj) -> None:
        revision = obj["metadata"].get("resourceVersion", "")
        with self._lock:
            key = int(revision) if revision.isdigit() else self._last_revision
            heapq.heappush(self._pending, _Event(key, next(self._seq), time.time(), kind, type_, obj))
            self._lock.notify_all()

    def _process(self) -> None:
        """Evaluate held events in revision order once they have settled."""
        with self._lock:
            while True:
                if self._pending:
                    wait = self._pending[0].arrived + self._settle - time.time()
                    if wait <= 0 or self._stopping:
                        self._apply(heapq.heappop(self._pending))
                        self._lock.notify_all()
                        continue
                elif self._stopping:
                    return
                else:
                    wait = None
                self._lock.wait(wait)

    def _apply(self, event: _Event) -> None:
        if event.revision < self._last_revision:
            self.out_of_order += 1
        self._last_revision = max(self._last_revision, event.revision)
        obj, name, deleted = event.obj, event.obj["metadata"]["name"], event.type == "DELETED"
        if event.kind == "ModelVersion":
            if (obj.get("spec") or {}).get("model") != self.model or deleted:
                self._versions.pop(name, None)
            else:
                self._versions[name] = obj
        elif event.kind == "Service":
            if deleted and not self._production():
                self._served = False  # taken down on purpose: a new Service gets a new initial rollout
            self._service = None if deleted else obj
        elif deleted:
            self._slices.pop(name, None)
        else:
            self._slices[name] = obj
        self.observations += 1
        self._evaluate(event)

    def _production(self) -> list[str]:
        return sorted(
            f"{n} (version {v['spec'].get('version')})"
            for n, v in self._versions.items()
            if (v.get("status") or {}).get("stage") == PRODUCTION
        )

    def _ready_endpoints(self) -> int:
        return sum(
            1
            for s in self._slices.values()
            for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready") is True
        )

    def _evaluate(self, event: _Event) -> None:
        production, ready = self._production(), self._ready_endpoints()
        if self._service is not None and ready:
            self._served = True
        problems = []
        if len(production) > 1:
            problems.append(f"{len(production)} versions in Production")
        selected = ((self._service or {}).get("spec") or {}).get("selector") or {}
        if production:
            if self._service is None:
                if self._served:
                    problems.append(f"a version is Production but Service {self.model} does not exist")
            else:
                if not selected.get(VERSION_LABEL):
                    problems.append(f"a version is Production but Service {self.model} selects no version")
                if not ready and self._served:
                    problems.append(f"a version is Production but Service {self.model} has no ready endpoint")
        if self.require_endpoint and self._served and (self._service is None or not ready):
            problems.append(f"Service {self.model} lost its ready endpoints")
        if not problems:
            for v in reversed(self.violations):  # the broken state ended here
                if v.until is not None:
                    break
                v.until = event.arrived
            return
        if problems:
            service = "absent" if self._service is None else f"selects version {selected.get(VERSION_LABEL)!r}"
            state = f"production={production}, service {service}, {ready} ready endpoints"
            state += f"; after {event.kind} {event.type}"
            self.violations.append(Violation(event.arrived, str(event.revision), "; ".join(problems), state))


def _bind(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[..., Any]:
    return lambda **more: method(*args, **kwargs, **more)


def _json(response: Any) -> Obj:
    try:
        return dict(json.loads(response.data))
    finally:
        response.release_conn()


def _lines(response: Any) -> Iterator[bytes]:
    """The watch's newline-separated JSON events, as the chunks arrive."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from (line for line in complete if line.strip())
    if buffer.strip():
        yield buffer


def _at_revision(obj: Obj, revision: str) -> Obj:
    return obj | {"metadata": obj["metadata"] | {"resourceVersion": revision}}
