"""Leader election: which replica of the operator reconciles.

Called by `running` (`modelreg run --leader-elect`, which the manifests set) and
by `handlers`, whose workers wait for `Election.acquired` before taking a key.

Every replica runs Kopf's watches; only the leader queues what they report and
reconciles. A follower is a standby that is logged in and watching: when it takes
over, it lists the models once, queues them all, and its first reconciles begin
at once. Its queue stays empty meanwhile (so does its `workqueue_depth`).

The lock is a `coordination.k8s.io/v1` Lease, the mechanism of kube-controller-
manager and controller-runtime, held through the official client's
`kubernetes.leaderelection` on a thread of its own. Its timing is client-go's
default: a lease lasts 15 s, the leader renews it every 2 s and gives up after
failing to for 10 s; a follower polls every 2 s.

How leadership changes, and why no two replicas ever write at once:
- The leader stops on purpose (SIGTERM: `kubectl delete pod`, a rolling update,
  a node drain). Kopf stops the watches and the workers; `asyncio.run` then waits
  for the reconciles still running on their threads (a reconcile cannot be
  cancelled halfway through its writes); only then does `release` empty the
  Lease's holder. A follower takes it at its next poll, within 2 s, instead of
  waiting out the lease.
- The leader dies (a crash, an OOM kill, its node lost): nobody releases; a
  follower takes over once the lease has gone unrenewed for its duration (it
  measures that on its own clock, from when it last saw the Lease change, so
  clock skew between nodes does not matter).
- The leader cannot renew (the API server unreachable from its node): after the
  renew deadline (10 s) it exits at once, before the lease (15 s) can expire and
  a follower take over. In-flight writes die with the process; that is the point.
  The kubelet restarts the container, which then follows.
Every call on the Lease times out after one retry period (2 s), so a leader whose
last renewal landed at t gives up by t + 2 + 10 + 2 = 14 s, before any follower
can take over (t + 15 s at the earliest): a hung connection never leaves a leader
renewing in its own mind after the lease lapsed.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiClient, CoordinationV1Api
from kubernetes.client.rest import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

log = logging.getLogger(__name__)

# A Pod's own namespace, as every Pod with a ServiceAccount token sees it.
_POD_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class Settings:
    """Which Lease, who we are, and client-go's default timing."""

    namespace: str
    name: str = "modelreg-operator"
    identity: str = ""  # "" → hostname (the Pod's name) and a random suffix, as controller-runtime does
    lease_seconds: int = 15
    renew_deadline_seconds: int = 10
    retry_seconds: int = 2

    def who(self) -> str:
        return self.identity or f"{socket.gethostname()}_{uuid.uuid4()}"


def pod_namespace() -> str | None:
    """The namespace of the Pod this process runs in; None outside a Pod."""
    try:
        with open(_POD_NAMESPACE_FILE, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


class Election:
    """One replica's part in the election. `start` it on the event loop, `await
    acquired()` before reconciling, `release()` once nothing runs any more."""

    def __init__(self, settings: Settings, client: ApiClient, *, on_lost: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.identity = settings.who()
        self.leading = threading.Event()
        self._released = threading.Event()
        self._lost = threading.Event()
        self._acquired: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_lost = on_lost or _exit_now
        timeout = settings.retry_seconds  # < renew deadline: one hung call never outlasts it
        self._leases = _TimedLeases(CoordinationV1Api(client), timeout=timeout)
        self._lock = _Lock(settings.name, settings.namespace, self.identity, self._leases, self._released)
        config = electionconfig.Config(
            self._lock,
            lease_duration=settings.lease_seconds,
            renew_deadline=settings.renew_deadline_seconds,
            retry_period=settings.retry_seconds,
            onstarted_leading=self._started,
            onstopped_leading=self._stopped,
        )
        self._election = leaderelection.LeaderElection(config)
        # The library logs every poll and every renewal at INFO; we log the changes.
        logging.getLogger("leaderelection").setLevel(logging.WARNING)

    def start(self) -> None:
        """Begin campaigning, on a daemon thread (the library blocks while it polls)."""
        self._loop = asyncio.get_running_loop()
        self._acquired = asyncio.Event()
        where = f"{self.settings.namespace}/{self.settings.name}"
        log.info("waiting to lead: Lease %s, identity %s", where, self.identity)
        threading.Thread(target=self._campaign, name="leader-election", daemon=True).start()

    async def acquired(self) -> None:
        assert self._acquired is not None, "start() first"
        await self._acquired.wait()

    def release(self) -> None:
        """Give the lease up at once, so a follower need not wait for it to expire.
        Call only once no reconcile runs any more. Client-go releases the same way:
        no holder, a one-second duration."""
        if not self.leading.is_set() or self._released.is_set():
            return
        self._released.set()  # the renewing thread writes no more (see _Lock)
        try:
            lease = self._leases.read(self.settings.name, self.settings.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return  # no longer ours: nothing to give up
            now = datetime.datetime.now(datetime.UTC)
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.acquire_time = lease.spec.renew_time = now
            # The Lease as read, resourceVersion included: a renewal racing this one fails.
            self._leases.replace(self.settings.name, self.settings.namespace, lease)
            log.info("released the lease")
        except ApiException as exc:
            log.warning("could not release the lease (%s); a follower takes over when it expires", exc.reason)

    def _campaign(self) -> None:
        try:
            self._election.run()
        except Exception:
            log.exception("leader election failed")
        # However the library's loop ended (an error it did not expect included), a
        # replica that no longer campaigns must not go on: a leader would reconcile
        # without renewing, a follower would never take over.
        if not self._released.is_set():
            self._stopped()

    def _started(self) -> None:
        log.info("leading: this replica reconciles now")
        self.leading.set()
        if self._loop is not None and self._acquired is not None:
            self._loop.call_soon_threadsafe(self._acquired.set)

    def _stopped(self) -> None:
        if self._released.is_set() or self._lost.is_set():
            return  # we gave it up ourselves, or said so already
        self._lost.set()
        if self.leading.is_set():
            log.critical("lost the lease (not renewed within %ds): exiting so that only one replica writes",
                         self.settings.renew_deadline_seconds)  # fmt: skip
        else:
            log.critical("leader election stopped: exiting, to campaign again after a restart")
        self._on_lost()


def _exit_now() -> None:
    # Not sys.exit: that only ends this thread, and reconciles would go on writing.
    logging.shutdown()
    os._exit(1)


class _TimedLeases:
    """The three Lease calls the election makes, each with a timeout. The library
    logs its failures at INFO only; a follower that may not read the Lease (RBAC)
    would wait forever in silence, so a failure is logged here, once per cause."""

    def __init__(self, api: CoordinationV1Api, *, timeout: float) -> None:
        self._api = api
        self._timeout = timeout
        self._last_error = ""

    def read(self, name: str, namespace: str) -> Any:
        return self._call(self._api.read_namespaced_lease, name, namespace)

    def replace(self, name: str, namespace: str, body: Any) -> Any:
        return self._call(self._api.replace_namespaced_lease, name, namespace, body)

    # The names the library calls.
    read_namespaced_lease = read
    replace_namespaced_lease = replace

    def create_namespaced_lease(self, namespace: str, body: Any) -> Any:
        return self._call(self._api.create_namespaced_lease, namespace, body)

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        try:
            result = method(*args, _request_timeout=self._timeout)
        except ApiException as exc:
            # Not found: the first replica creates it; conflict: another replica wrote first.
            if exc.status not in (404, 409) and (error := f"{exc.status} {exc.reason}") != self._last_error:
                log.warning("Lease call failed: %s", error)
                self._last_error = error
            raise
        except Exception as exc:  # a timeout, a refused connection
            if (error := type(exc).__name__) != self._last_error:
                log.warning("Lease call failed: %s", exc)
                self._last_error = error
            # The library catches ApiException alone (and retries); anything else would end its thread.
            raise ApiException(status=0, reason=f"{type(exc).__name__}: {exc}") from exc
        self._last_error = ""
        return result


class _Lock(LeaseLock):  # type: ignore[misc]  # the library has no type hints
    """The library's Lease lock, on our client (with timeouts), writing nothing once released."""

    def __init__(
        self, name: str, namespace: str, identity: str, leases: _TimedLeases, released: threading.Event
    ) -> None:
        super().__init__(name, namespace, identity)
        self.api_instance = leases
        self._released = released

    def create(self, name: str, namespace: str, election_record: Any) -> bool:
        return False if self._released.is_set() else bool(super().create(name, namespace, election_record))

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        return False if self._released.is_set() else bool(super().update(name, namespace, updated_record))
