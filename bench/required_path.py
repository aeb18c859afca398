"""The required path: a minimal controller making only the round trips a change
needs, measured next to the operator in the same run of the latency benchmarks
(`stage_change_latency`, `switch_latency`).

It runs in the bench process on a thread of its own and uses the libraries the
operator uses, with no framework and no queue: the official client's watch of
ModelVersions of a copy of the CRD under another group (same schema, so the API
server does the same work per write; the operator does not watch that group),
and for each new generation one HEAD of the artifact with boto3 (the operator
verifies every new generation again before a promotion decides) and one plain
JSON merge patch: the status (a copy of the operator's own, same size and
shape) or the replicas of a Deployment made for it. What is left between this
and the floor (a write → its watch event) is required work here; what the
operator takes beyond it is its own.
"""

from __future__ import annotations

import base64
import copy
import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlparse

from kubernetes import watch
from kubernetes.client import ApiClient, CustomObjectsApi
from urllib3.exceptions import MaxRetryError

from bench.environment import Environment
from bench.observing import Obj
from modelreg.api import GROUP as OPERATOR_GROUP
from modelreg.api import VERSION as VERSION  # the bench group's version too
from modelreg.api import modelversion as mv
from modelreg.api.crds import custom_resource_definitions

GROUP = "bench.modelreg.dev"


def crd() -> Obj:
    """The ModelVersion CRD with only its group (and so its name) changed."""
    copied = copy.deepcopy(custom_resource_definitions()[f"{OPERATOR_GROUP}_{mv.PLURAL}.yaml"])
    copied["metadata"]["name"] = f"{mv.PLURAL}.{GROUP}"
    copied["spec"]["group"] = GROUP
    return copied


def install_crd(env: Environment) -> None:
    env.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(crd()))
    env.kubectl("wait", "--for=condition=Established", f"crd/{mv.PLURAL}.{GROUP}")


def version_copy(real: Obj) -> Obj:
    """A new object of the bench group with the spec of a real ModelVersion."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": mv.KIND, "spec": copy.deepcopy(real["spec"]),
            "metadata": {"name": real["metadata"]["name"], "namespace": real["metadata"]["namespace"]}}  # fmt: skip


def deployment_copy(real: Obj, name: str) -> Obj:
    """A Deployment with the Pod template and placement of a real serving Deployment,
    under labels neither the operator's watches nor its Services select."""
    labels = {"app": name}
    spec = copy.deepcopy(real["spec"])
    spec["selector"] = {"matchLabels": labels}
    spec["template"]["metadata"]["labels"] = labels
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": spec}  # fmt: skip


@dataclass(frozen=True)
class Handled:
    """One new generation, on the perf_counter clock."""

    delivered: float  # its watch event arrived
    checked: float  # the HEAD returned
    written: float  # the write returned


@dataclass(frozen=True)
class Sample:
    """One measured change: sent, handled, its effect's watch event arrived (perf_counter)."""

    sent: float
    handled: Handled
    seen: float

    @property
    def latency(self) -> float:
        return self.seen - self.sent


Write = Callable[[ApiClient, Obj], None]


def writes_status(status: Obj) -> Write:
    """The stage change's write: `status` (copied from the operator's) with this
    generation and its stage, on the status subresource."""

    def write(client: ApiClient, obj: Obj) -> None:
        meta = obj["metadata"]
        body = {"status": status | {"stage": obj["spec"]["stage"], "observedGeneration": meta["generation"]}}
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{meta['namespace']}/{mv.PLURAL}/{quote(meta['name'])}/status"
        merge_patch(client, path, body)

    return write


def scales(deployment: str, *, up: int, down: int) -> Write:
    """The promotion's first write: `deployment` scaled to `up` for Production, else `down`."""

    def write(client: ApiClient, obj: Obj) -> None:
        replicas = up if obj["spec"]["stage"] == "Production" else down
        path = f"/apis/apps/v1/namespaces/{obj['metadata']['namespace']}/deployments/{quote(deployment)}"
        merge_patch(client, path, {"spec": {"replicas": replicas}})

    return write


def merge_patch(client: ApiClient, path: str, body: Obj) -> None:
    """One PATCH as plain JSON, as the operator's `kube._call` sends it (no typed model classes)."""
    request = client.param_serialize(method="PATCH", resource_path=path, body=body, auth_settings=["BearerToken"],
                                     header_params={"Accept": "application/json",
                                                    "Content-Type": "application/merge-patch+json"})  # fmt: skip
    response = client.call_api(*request, _request_timeout=(5, 30))
    data = response.read()
    if not 200 <= response.status <= 299:
        raise RuntimeError(f"PATCH {path}: {response.status} {data[:300]!r}")


class RequiredPath:
    """Watch → (new generation) HEAD → one write, for every object of the bench group
    in `namespace`. Events of one object are handled in order on the watch's thread:
    the benchmarks make one change at a time."""

    def __init__(self, client: ApiClient, s3: Any, *, namespace: str, write: Write) -> None:
        self.client, self.s3, self.namespace, self.write = client, s3, namespace, write
        self.custom = CustomObjectsApi(client)
        self.handled: list[Handled] = []
        self.samples: list[Sample] = []
        self.error: Exception | None = None
        self._done: dict[str, int] = {}  # name → the newest generation acted on
        threading.Thread(target=self._run, daemon=True).start()

    def sample(self, name: str, stage: str, seen: Callable[[float], float], *, record: bool = True) -> float:
        """Patch spec.stage of `name` as the benchmarks' real requests do, and wait
        until `seen(sent)` (when the effect's watch event arrived) and our handling
        of it have both come; the time from the request to the effect."""
        count = len(self.handled)
        started = time.perf_counter()
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, mv.PLURAL, name,
                                                   {"spec": {"stage": stage}})  # fmt: skip
        at = seen(started)
        deadline = time.perf_counter() + 10
        while len(self.handled) <= count:  # its write's response may come after the watch event
            if time.perf_counter() > deadline:
                raise TimeoutError(f"the required path did not handle {name}: {self.error!r}")
            time.sleep(0.001)
        if record:
            self.samples.append(Sample(started, self.handled[count], at))
        return at - started

    def _run(self) -> None:
        while True:
            try:
                for event in watch.Watch().stream(self.custom.list_namespaced_custom_object, GROUP, VERSION,
                                                  self.namespace, mv.PLURAL):  # fmt: skip
                    self._handle(event["object"], time.perf_counter())
            except MaxRetryError:  # the API server is gone: its environment ended (as `Observer`)
                return
            except Exception as exc:  # an expired watch, or a failed step: the benchmark's wait reports it
                self.error = exc
                time.sleep(0.05)

    def _handle(self, obj: Obj, delivered: float) -> None:
        meta = obj["metadata"]
        generation = int(meta.get("generation", 0))
        observed = int((obj.get("status") or {}).get("observedGeneration") or 0)
        if generation <= max(observed, self._done.get(meta["name"], 0)):
            return  # an echo of our own write, or nothing new
        self._done[meta["name"]] = generation
        artifact = obj["spec"]["artifact"]
        where = urlparse(artifact["uri"])
        head = self.s3.head_object(Bucket=where.netloc, Key=where.path.lstrip("/"), ChecksumMode="ENABLED")
        digest = base64.b64decode(head.get("ChecksumSHA256", "")).hex()
        if digest != artifact["sha256"]:  # what the verification decides on
            raise RuntimeError(f"{artifact['uri']}: sha256 {digest}, expected {artifact['sha256']}")
        checked = time.perf_counter()
        self.write(self.client, obj)
        self.handled.append(Handled(delivered, checked, time.perf_counter()))


def report(samples: list[Sample], floor: list[float], operator: list[float], *, write: str) -> None:
    """The required path's lines under a figure: against the floor, the operator
    against it, and its steps (medians, named as the operator's are)."""
    ms = sorted(s.latency * 1000 for s in samples)
    req, flo, op = statistics.median(ms), statistics.median(floor) * 1000, statistics.median(operator) * 1000
    print(f"  required path (a minimal controller here: watch → HEAD → {write} → watch): median {req:.1f} ms "
          f"(min {ms[0]:.1f}, max {ms[-1]:.1f}, n={len(ms)}) = {req / flo:.1f}x the floor; "
          f"the operator is {op / req:.1f}x the required path ({op - req:.1f} ms over it)")  # fmt: skip
    steps = {  # the first three add up to the figure; the write's response may come after its watch event
        "watch delivers the patch": [s.handled.delivered - s.sent for s in samples],
        "HEAD": [s.handled.checked - s.handled.delivered for s in samples],
        "write sent → its watch event": [s.seen - s.handled.checked for s in samples],
        "(the write's round trip": [s.handled.written - s.handled.checked for s in samples],
    }
    print("    its steps (medians, ms): " + ", ".join(f"{k} {statistics.median(v) * 1000:.1f}"
                                                      for k, v in steps.items()) + ")")  # fmt: skip
