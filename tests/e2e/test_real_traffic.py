"""Real traffic through a model's Service while its versions change (issue #8, item 6).

One dev cluster with a real node for the module (a host holds one real node at a
time); the operator installed as users install it, two replicas on the real node
and one leading, its image (from the loopback registry) also the serving Pods' init
container; the example model server built on the local Debian base; and an S3
server the Pods can reach: on the node's address, because a Pod's network
namespace cannot reach the host's loopback.

The tests run in order on one model: v1 serves and answers through the `iris`
Service's ClusterIP from the host; v2 is promoted while a client sends a steady
stream of predictions, and then v1 rolled back to: not one request fails, and
the answers switch version once and never go back. The figures (requests, failures,
when the new version first answered) are printed (`-s` shows them).

Needs root on a Debian host with buildah, podman, skopeo, debootstrap and
docker-registry; with CI=true a missing one fails, it never skips.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelreg import fetching
from modelreg.devcluster import building, cluster, images, node, registry, s3server
from modelreg.devcluster.demo import EXAMPLE_BUCKET, seed_examples
from tests.conftest import unavailable, wait_for
from tests.e2e.conftest import REPO, S3, Cluster
from tests.e2e.invariants import Invariants
from tests.e2e.registry import (
    apply,
    deployment,
    events,
    model_manifest,
    operator_writes,
    secret_manifest,
    serving_version,
    set_stage,
    status,
    version_manifest,
    wait_condition,
    wait_replicas,
    wait_serving,
    wait_stage,
)

NAMESPACE = "traffic"
MODEL = "iris"
# A versicolor that version 1 takes for a virginica (examples/model-server/README.md).
BORDERLINE = [6.7, 3.0, 5.0, 1.7]
LABELS = {"1": "virginica", "2": "versicolor", "3": "versicolor"}
# Straight to the ClusterIP: a proxy from the environment would answer for an address that does not route.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
REPLICAS = 2


@dataclass(frozen=True)
class Version:
    name: str  # the ModelVersion object
    number: str
    uri: str
    sha256: str


def _example(number: str) -> Version:
    spec = yaml.safe_load((REPO / "examples" / f"modelversion-iris-{number}.yaml").read_text())["spec"]
    uri = spec["artifact"]["uri"]
    assert uri.startswith(f"s3://{EXAMPLE_BUCKET}/")
    return Version(name=f"{MODEL}-{number}", number=number, uri=uri, sha256=spec["artifact"]["sha256"])


V1, V2 = _example("1"), _example("2")
# Version 3: version 2's model written out again, so it answers like version 2 from
# other bytes (another digest); uploaded by the test that registers it.
V3_BYTES = json.dumps(json.loads((REPO / "examples" / "artifacts" / "iris" / "2" / "model.json").read_bytes())).encode()
V3 = Version(name=f"{MODEL}-3", number="3", uri=f"s3://{EXAMPLE_BUCKET}/iris/3/model.json",
             sha256=hashlib.sha256(V3_BYTES).hexdigest())  # fmt: skip
BY_SHA = {V1.sha256: V1, V2.sha256: V2, V3.sha256: V3}


OVERLAY = REPO / "tests" / "e2e" / "overlays" / "real-node"
OPERATOR_NAMESPACE = "modelreg-system"
OPERATOR_SELECTOR = "app.kubernetes.io/name=modelreg-operator"
OPERATOR_REPLICAS = 2  # manifests/base/operator.yaml
LEASE = "modelreg-operator"


@dataclass
class InClusterOperator:
    """The operator as users run it: the Deployment from `kubectl apply -k`, two
    replicas on the real node, one of them leading (the Lease names it)."""

    kube: Cluster

    def pods(self) -> list[dict[str, Any]]:
        return list(self.kube.get_json("pods", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR)["items"])

    def lease(self) -> dict[str, Any]:
        return dict(self.kube.get_json("lease", LEASE, "-n", OPERATOR_NAMESPACE)["spec"])

    def leader(self) -> dict[str, Any] | None:
        """The Pod that holds the Lease, once all replicas are Ready and none is on its
        way out; None otherwise. A holder's identity is its Pod's name, `_`, a UUID."""
        live = [p for p in self.pods() if not p["metadata"].get("deletionTimestamp")]
        ready = [p for p in live if _ready(p)]
        if len(live) != OPERATOR_REPLICAS or len(ready) != OPERATOR_REPLICAS:
            return None
        out = self.kube.run("get", "lease", LEASE, "-n", OPERATOR_NAMESPACE, "-o", "jsonpath={.spec.holderIdentity}")
        holder = out.stdout.strip() if out.returncode == 0 else ""  # no Lease yet: nobody leads
        return next((p for p in ready if holder.startswith(p["metadata"]["name"] + "_")), None)

    def wait_ready(self, timeout: float = 120) -> dict[str, Any]:
        """Both replicas Ready, one leading: returns the leader's Pod."""
        return wait_for(self.leader, timeout=timeout, what="the operator's replicas to be Ready, one leading")

    def delete_leader(self) -> str:
        """Delete the leading Pod as `kubectl delete pod` does (graceful: SIGTERM); its
        ReplicaSet starts another at once. Returns the deleted Pod's name."""
        pod = self.leader()
        assert pod is not None, "no leading operator Pod to delete"
        name = str(pod["metadata"]["name"])
        self.kube.kubectl("delete", "pod", name, "-n", OPERATOR_NAMESPACE, "--wait=false")
        return name

    def log(self) -> str:
        out = self.kube.run("logs", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR, "--tail=80", "--prefix")
        return out.stdout + out.stderr


def _ready(pod: dict[str, Any]) -> bool:
    return {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}.get("Ready") == "True"


def install_operator(kube: Cluster, directory: Path, *, image: str, storage_endpoint: str) -> InClusterOperator:
    """`kubectl apply -k` of the test overlay, under a kustomization naming what only
    this run knows: the image in the loopback registry and the S3 endpoint."""
    directory.mkdir(parents=True, exist_ok=True)
    name, tag = image.rsplit(":", 1)
    env = [{"name": "MODELREG_OPERATOR_IMAGE", "value": image},
           {"name": "MODELREG_STORAGE_ENDPOINTS", "value": storage_endpoint}]  # fmt: skip
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "modelreg-operator", "namespace": OPERATOR_NAMESPACE},
        "spec": {"template": {"spec": {"containers": [{"name": "operator", "env": env}]}}},
    }
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(OVERLAY, directory)],
        "images": [{"name": "ghcr.io/modelreg/modelreg", "newName": name, "newTag": tag}],
        "patches": [{"patch": yaml.safe_dump(patch)}],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    kube.kubectl("apply", "--server-side", "-k", str(directory))
    operator = InClusterOperator(kube)
    operator.wait_ready()
    return operator


@dataclass
class Traffic:
    kube: Cluster
    s3: S3
    operator: InClusterOperator
    server_image: str
    operator_image: str


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Traffic]:
    if os.geteuid() != 0:
        unavailable("the real node needs root (mounts, cgroups, a network bridge)")
    if gone := images.missing_tools():
        unavailable(f"building the images needs {', '.join(gone)}")
    if registry.find_binary() is None:
        unavailable("the real node pulls its images from Debian's docker-registry, which is not installed")
    directory = tmp_path_factory.mktemp("traffic")
    try:
        bins = building.ensure_binaries()
        state = cluster.up(directory / "cluster", bins=bins, with_s3=False, real_node=True, tie_to_parent=True)
    except Exception as exc:
        unavailable(f"the dev cluster with a real node could not start: {exc}")
    kube = Cluster(kubeconfig=state.kubeconfig, kubectl_path=str(bins.kubectl), audit_log=state.audit_log, state=state)
    s3: S3 | None = None
    operator: InClusterOperator | None = None
    failed_before = request.session.testsfailed
    try:
        assert state.registry is not None, "the dev cluster started without its registry"
        try:
            operator_image = images.ensure_operator_image(registry=state.registry.address)
            server_image = images.ensure_model_server_image(registry=state.registry.address)
        except images.ImageError as exc:
            unavailable(f"the images could not be built: {exc}")
        # On the node's address: the operator and the serving Pods' init container fetch from it.
        s3 = S3(config=s3server.new_config(directory / "s3", host=node.node_ip()), binary=bins.s3_server)
        s3.start()
        seed_examples(s3.client(), REPO / "examples" / "artifacts")
        operator = install_operator(kube, directory / "install", image=operator_image,
                                    storage_endpoint=s3.config.endpoint)  # fmt: skip
        kube.kubectl("create", "namespace", NAMESPACE)
        yield Traffic(kube=kube, s3=s3, operator=operator, server_image=server_image, operator_image=operator_image)
    finally:
        if request.session.testsfailed > failed_before:
            _diagnose(kube, operator)
        # Deployments would recreate the Pods that `down` drains; the operator's first.
        kube.run("delete", "deployments", "--all", "-n", OPERATOR_NAMESPACE, "--wait=false")
        kube.run("delete", "deployments", "--all", "-n", NAMESPACE, "--wait=false")
        if s3 is not None:
            s3.stop()
        cluster.down(directory / "cluster")


def _diagnose(kube: Cluster, operator: InClusterOperator | None) -> None:
    print(f"\n--- pods ---\n{kube.run('get', 'pods', '-A', '-o', 'wide').stdout}")
    print(kube.run("get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp").stdout[-6000:])
    print(kube.run("get", "events", "-n", OPERATOR_NAMESPACE, "--sort-by=.lastTimestamp").stdout[-3000:])
    if operator is not None:
        print(f"--- operator log ---\n{operator.log()}")


# --- the client ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    sent: float  # time.monotonic() when the request was sent
    version: str | None  # the version whose artifact answered, by its SHA-256
    error: str | None = None


def predict(url: str, timeout: float = 5) -> Answer:
    """One prediction for BORDERLINE; anything but a 200 with a known artifact and its label is an error."""
    sent = time.monotonic()
    body = json.dumps({"instances": [BORDERLINE]}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with NO_PROXY.open(req, timeout=timeout) as resp:
            answer = json.loads(resp.read())
        version = BY_SHA[answer["model"]["sha256"]]
        label = answer["predictions"][0]["label"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        return Answer(sent=sent, version=None, error=f"{type(exc).__name__}: {exc}")
    if label != LABELS[version.number]:
        return Answer(sent=sent, version=None, error=f"version {version.number} answered {label!r}")
    return Answer(sent=sent, version=version.number)


@dataclass
class Client:
    """One client sending predictions back to back, a short pause between them,
    each on a new connection (so each is routed afresh); bounded in count and time."""

    url: str
    interval: float = 0.02
    max_requests: int = 10_000
    max_seconds: float = 180
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Client:
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=10)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and len(self.answers) < self.max_requests and time.monotonic() < deadline:
            self.answers.append(predict(self.url))
            self._stop.wait(self.interval)

    def count(self, version: str) -> int:
        return sum(1 for a in list(self.answers) if a.version == version)


@dataclass(frozen=True)
class Figures:
    requests: int
    failed: int
    errors: list[str]
    sequence: list[str]  # versions that answered, consecutive repeats folded
    first_new: float | None  # seconds from the stage change to the new version's first answer
    last_old: float | None  # seconds from the stage change to the old version's last answer

    def line(self, what: str) -> str:
        first = f"{self.first_new:.2f}s" if self.first_new is not None else "never"
        last = f"{self.last_old:.2f}s" if self.last_old is not None else "never"
        return (f"{what}: {self.requests} requests, {self.failed} failed; first answer of the new version "
                f"{first} after the stage change, last of the old one {last}; "
                f"answers {' -> '.join(self.sequence)}")  # fmt: skip


def figures(answers: list[Answer], *, changed: float, old: str, new: str) -> Figures:
    failed = [a for a in answers if a.error is not None]
    sequence: list[str] = []
    for a in answers:
        if a.version is not None and (not sequence or sequence[-1] != a.version):
            sequence.append(a.version)
    first_new = next((a.sent - changed for a in answers if a.version == new and a.sent >= changed), None)
    last_old = next((a.sent - changed for a in reversed(answers) if a.version == old), None)
    errors = [f"{a.sent - changed:+.2f}s {a.error}" for a in failed[:10]]
    return Figures(len(answers), len(failed), errors, sequence, first_new, last_old)


# --- helpers -----------------------------------------------------------------------------


def _cluster_ip(kube: Cluster) -> str:
    return kube.kubectl("get", "service", MODEL, "-n", NAMESPACE, "-o", "jsonpath={.spec.clusterIP}")


def _pods(kube: Cluster, version: str) -> list[dict[str, Any]]:
    selector = f"modelreg.dev/model={MODEL},modelreg.dev/version={version}"
    return list(kube.get_json("pods", "-n", NAMESPACE, "-l", selector)["items"])


def _switch_under_traffic(
    t: Traffic, *, old: Version, new: Version, change: Callable[[], None], what: str,
    during: Callable[[], None] | None = None,
) -> Figures:  # fmt: skip
    """Send traffic, make the stage change (then `during`, if given), and keep sending
    until the old version's Pods are gone (and a little longer); return the figures."""
    url = f"http://{_cluster_ip(t.kube)}/predict"
    with _invariants(t), Client(url) as client:
        wait_for(lambda: client.count(old.number) >= 20, timeout=30, what=f"20 answers of version {old.number}")
        changed = time.monotonic()
        change()
        if during is not None:
            during()
        wait_serving(t.kube, NAMESPACE, MODEL, new.number, timeout=150)
        wait_stage(t.kube, NAMESPACE, old.name, "Archived", timeout=30)
        wait_for(lambda: not _pods(t.kube, old.number), timeout=60, what=f"version {old.number}'s Pods to be gone")
        gone = len(client.answers)
        # Kept up a little after the last old Pod went: late routing to it would show here.
        wait_for(lambda: len(client.answers) >= gone + 100, timeout=30, what="100 more answers")
    result = figures(client.answers, changed=changed, old=old.number, new=new.number)
    print(result.line(what))
    return result


def _invariants(t: Traffic) -> Invariants:
    """The serving invariants of the model, checked all along (a context manager:
    a violation fails the test when it ends)."""
    return Invariants(kubeconfig=t.kube.kubeconfig, namespace=NAMESPACE, model=MODEL, require_endpoint=True)


def _assert_clean_switch(result: Figures, *, old: Version, new: Version) -> None:
    assert result.failed == 0, f"{result.failed} of {result.requests} requests failed:\n" + "\n".join(result.errors)
    assert result.sequence == [old.number, new.number], "the answers should switch version once and never go back"
    assert result.first_new is not None


# --- the tests -----------------------------------------------------------------------------


def test_the_operator_runs_in_cluster_under_its_service_account(traffic: Traffic) -> None:
    """Installed with `kubectl apply -k`: its Pod runs the image from the registry on
    the real node, Ready (its readiness probe passes) and never restarted (nor does its
    liveness probe fail), and what it writes reaches the API server as its ServiceAccount.
    Both replicas are Ready (a follower is a standby whose watches run); one leads."""
    traffic.operator.wait_ready()
    pods = traffic.operator.pods()
    assert len(pods) == OPERATOR_REPLICAS
    for pod in pods:
        assert pod["spec"]["nodeName"] == node.NODE_NAME
        assert pod["spec"]["serviceAccountName"] == "modelreg-operator"
        (container,) = pod["status"]["containerStatuses"]
        assert container["image"].endswith(traffic.operator_image.rsplit("/", 1)[1])
        assert container["restartCount"] == 0, traffic.operator.log()
        probes = pod["spec"]["containers"][0]
        assert probes["livenessProbe"]["httpGet"]["path"] == probes["readinessProbe"]["httpGet"]["path"] == "/healthz"
    # A model it can only reconcile by reading the API and S3 (its verification HEADs the artifact).
    kube, s3 = traffic.kube, traffic.s3
    creds = {"AWS_ACCESS_KEY_ID": s3.config.access_key.encode(), "AWS_SECRET_ACCESS_KEY": s3.config.secret_key.encode()}
    apply(kube, NAMESPACE, secret_manifest("s3-creds", creds))
    storage = {"endpoint": s3.config.endpoint, "region": s3.config.region, "credentialsSecret": {"name": "s3-creds"}}
    apply(kube, NAMESPACE, model_manifest("probe", storage=storage))
    apply(kube, NAMESPACE, version_manifest("probe-1", model="probe", version="1", uri=V1.uri, sha256=V1.sha256))
    st = wait_condition(kube, NAMESPACE, "probe-1", "ArtifactVerified", status_="True", timeout=90)
    assert st["artifact"]["digest"] == f"sha256:{V1.sha256}"
    assert kube.audit_log is not None
    ours = [w for w in operator_writes(kube.audit_log, NAMESPACE) if w["objectRef"].get("apiGroup") == "modelreg.dev"]
    assert ours, "the operator wrote no status"
    assert {w["user"]["username"] for w in ours} == {"system:serviceaccount:modelreg-system:modelreg-operator"}
    kube.kubectl("delete", "registeredmodel", "probe", "-n", NAMESPACE)
    kube.kubectl("delete", "modelversion", "probe-1", "-n", NAMESPACE)


def test_v1_answers_through_the_cluster_ip_from_pods_on_the_real_node(traffic: Traffic) -> None:
    kube, s3 = traffic.kube, traffic.s3
    placement = {
        "nodeSelector": {node.LABEL[0]: node.LABEL[1]},
        "tolerations": [{"key": node.LABEL[0], "operator": "Equal", "value": node.LABEL[1], "effect": "NoSchedule"}],
    }
    serving = {
        "image": traffic.server_image,
        "port": 8080,
        "replicas": REPLICAS,
        "stagingReplicas": 1,
        # v3's promotion waits minutes on purpose (a refused Pod, then a restored artifact);
        # a scale-up is timed from its request, so the deadline leaves room for that.
        "progressDeadlineSeconds": 300,
        # Answers within 1 s on an idle machine, but not always on a busy 2-core VM, where a
        # probe timing out at Kubernetes' default 1 s turned both Pods unready at once.
        "readinessProbe": {"path": "/healthz", "periodSeconds": 1, "timeoutSeconds": 3},
    } | placement
    storage = {"endpoint": s3.config.endpoint, "region": s3.config.region, "credentialsSecret": {"name": "s3-creds"}}
    apply(kube, NAMESPACE, model_manifest(MODEL, serving=serving, storage=storage))
    # Production only from Staging (admission says so).
    for v, stage in ((V1, "Staging"), (V2, "Development")):
        apply(kube, NAMESPACE, version_manifest(v.name, model=MODEL, version=v.number, uri=v.uri, sha256=v.sha256,
                                                stage=stage))  # fmt: skip
        wait_stage(kube, NAMESPACE, v.name, stage, timeout=150)

    promoted = time.monotonic()
    set_stage(kube, NAMESPACE, V1.name, "Production")
    wait_stage(kube, NAMESPACE, V1.name, "Production", timeout=150)
    wait_serving(kube, NAMESPACE, MODEL, V1.number)
    wait_replicas(kube, NAMESPACE, V1.name, REPLICAS, timeout=150)
    pods = _pods(kube, V1.number)
    assert {p["spec"]["nodeName"] for p in pods} == {node.NODE_NAME}
    # The init container ran the operator's image from the registry and fetched from S3.
    init = [s for p in pods for s in p["status"]["initContainerStatuses"]]
    assert {s["state"]["terminated"]["exitCode"] for s in init} == {0}

    url = f"http://{_cluster_ip(kube)}/predict"

    def answered() -> Answer | None:
        answer = predict(url)
        return answer if answer.version else None

    first = wait_for(answered, timeout=30, what=f"an answer through {url}")
    print(f"v1 answered through the ClusterIP {time.monotonic() - promoted:.1f}s after its promotion")
    answers = [first] + [predict(url) for _ in range(20)]
    assert [(a.version, a.error) for a in answers] == [(V1.number, None)] * len(answers)


def test_promoting_v2_under_traffic_fails_no_request(traffic: Traffic) -> None:
    assert serving_version(traffic.kube, NAMESPACE, MODEL) == V1.number, "test_v1_answers... serves v1 first"
    set_stage(traffic.kube, NAMESPACE, V2.name, "Staging")
    wait_stage(traffic.kube, NAMESPACE, V2.name, "Staging", timeout=150)
    result = _switch_under_traffic(
        traffic, old=V1, new=V2, what="promotion of v2",
        change=lambda: set_stage(traffic.kube, NAMESPACE, V2.name, "Production"),
    )  # fmt: skip
    _assert_clean_switch(result, old=V1, new=V2)
    wait_replicas(traffic.kube, NAMESPACE, V2.name, REPLICAS)
    old = deployment(traffic.kube, NAMESPACE, V1.name)
    assert old is not None, "an archived Deployment is kept for rollback"
    assert old["spec"]["replicas"] == 0


def test_rolling_back_to_v1_under_traffic_fails_no_request(traffic: Traffic) -> None:
    assert serving_version(traffic.kube, NAMESPACE, MODEL) == V2.number, "the promotion test serves v2 first"
    set_stage(traffic.kube, NAMESPACE, V1.name, "Archived")  # acknowledge the supersession, as the CLI would

    def roll_back() -> None:
        set_stage(traffic.kube, NAMESPACE, V1.name, "Production")

    result = _switch_under_traffic(traffic, old=V2, new=V1, change=roll_back, what="rollback to v1")
    _assert_clean_switch(result, old=V2, new=V1)
    st = wait_stage(traffic.kube, NAMESPACE, V1.name, "Production")
    assert st["history"][-1]["reason"] == "RolledBack"


def test_deleting_the_leader_pod_mid_switch_fails_no_request(traffic: Traffic) -> None:
    """The leading Pod is deleted once the new version's Pods are being started and
    before the Service has switched. It finishes its reconcile and releases the Lease;
    the other replica, already running, takes over within the lease duration and
    finishes the switch."""
    t = traffic
    assert serving_version(t.kube, NAMESPACE, MODEL) == V1.number, "the rollback test serves v1 first"
    set_stage(t.kube, NAMESPACE, V2.name, "Archived")  # acknowledge the supersession
    leader = t.operator.wait_ready()
    others = {p["metadata"]["name"] for p in t.operator.pods()} - {leader["metadata"]["name"]}
    lease_seconds = t.operator.lease()["leaseDurationSeconds"]
    deleted: list[tuple[str, float]] = []

    def delete_leader_mid_switch() -> None:
        def scaling_up() -> bool:
            d = deployment(t.kube, NAMESPACE, V2.name)
            return d is not None and d["spec"]["replicas"] > 0

        wait_for(scaling_up, timeout=30, what="version 2's Deployment to scale up")
        assert serving_version(t.kube, NAMESPACE, MODEL) == V1.number, "switched before the leader was deleted"
        at = time.time()
        deleted.append((t.operator.delete_leader(), at))

    result = _switch_under_traffic(
        t, old=V1, new=V2, what="promotion of v2 with the leader Pod deleted mid-switch",
        change=lambda: set_stage(t.kube, NAMESPACE, V2.name, "Production"), during=delete_leader_mid_switch,
    )  # fmt: skip
    _assert_clean_switch(result, old=V1, new=V2)
    [(name, at)] = deleted
    lease = t.operator.lease()
    holder = str(lease["holderIdentity"])
    assert any(holder.startswith(f"{other}_") for other in others), f"{holder} is not the standby replica"
    acquired = datetime.datetime.fromisoformat(lease["acquireTime"].replace("Z", "+00:00")).timestamp()
    print(f"takeover: the standby replica held the Lease {acquired - at:.2f}s after the leader Pod's deletion "
          f"(lease duration {lease_seconds}s)")  # fmt: skip
    assert acquired - at < lease_seconds
    st = wait_stage(t.kube, NAMESPACE, V2.name, "Production")
    assert st["history"][-1]["reason"] == "RolledBack"
    # The ReplicaSet replaced the deleted Pod, which now follows.
    new = t.operator.wait_ready()
    assert new["metadata"]["name"] != name


def _tamper(s3: S3, uri: str, data: bytes) -> None:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    s3.client().put_object(Bucket=bucket, Key=key, Body=data)


def test_a_tampered_artifact_is_refused_by_the_init_container_and_v2_keeps_answering(traffic: Traffic) -> None:
    """Version 3 is verified and runs its Staging Pod, and is promoted; its extra
    Production Pod waits for room (the node is cordoned), and meanwhile its object is
    changed in S3. The operator verified the artifact at the promotion and re-checks it
    only periodically, so it is the Pod's init container that meets the changed object:
    it refuses it with the digest-mismatch exit code, the switch never happens,
    version 2 answers every request, and v3's status says why. (Changed before the
    promotion, the operator's own check refuses it first, and its periodic re-checks
    catch it later: test_verification.py.)"""
    t = traffic
    assert serving_version(t.kube, NAMESPACE, MODEL) == V2.number, "the previous test serves v2"
    _tamper(t.s3, V3.uri, V3_BYTES)
    apply(t.kube, NAMESPACE, version_manifest(V3.name, model=MODEL, version=V3.number, uri=V3.uri, sha256=V3.sha256,
                                              stage="Staging"))  # fmt: skip
    wait_stage(t.kube, NAMESPACE, V3.name, "Staging", timeout=150)
    wait_replicas(t.kube, NAMESPACE, V3.name, 1, timeout=150)

    url = f"http://{_cluster_ip(t.kube)}/predict"
    with _invariants(t), Client(url) as client:
        wait_for(lambda: client.count(V2.number) >= 20, timeout=30, what="20 answers of version 2")
        t.kube.kubectl("cordon", node.NODE_NAME)
        try:
            set_stage(t.kube, NAMESPACE, V3.name, "Production")

            def pending() -> bool:
                return any(p["status"].get("phase") == "Pending" for p in _pods(t.kube, V3.number))

            wait_for(pending, timeout=60, what="version 3's Production Pod to wait for room")
            _tamper(t.s3, V3.uri, V3_BYTES.replace(b"versicolor", b"virginica"))
        finally:
            t.kube.kubectl("uncordon", node.NODE_NAME)

        def refused() -> dict[str, Any] | None:
            for pod in _pods(t.kube, V3.number):
                for init in pod["status"].get("initContainerStatuses", []):
                    state = init.get("lastState", {}).get("terminated") or init["state"].get("terminated")
                    if state and state["exitCode"] != 0:
                        return dict(state)
            return None

        refusal = wait_for(refused, timeout=90, what="version 3's init container to refuse the artifact")
        assert refusal["exitCode"] == fetching.EXIT_CHECKSUM_MISMATCH, refusal

        def explained() -> dict[str, Any] | None:
            st = status(t.kube, NAMESPACE, V3.name)
            said = [c for c in st.get("conditions", []) if "fetch-artifact" in c.get("message", "")]
            return st if said else None

        st = wait_for(explained, timeout=60, what="version 3's status to say why its rollout is stuck")
        assert st["stage"] == "Staging"
        assert serving_version(t.kube, NAMESPACE, MODEL) == V2.number
        count = len(client.answers)
        wait_for(lambda: len(client.answers) >= count + 100, timeout=30, what="100 more answers")
    said = next(c for c in st["conditions"] if "fetch-artifact" in c.get("message", ""))
    print(f"tampered v3: {len(client.answers)} requests, {sum(1 for a in client.answers if a.error)} failed; "
          f"status {said['type']}={said['status']} {said['reason']}: {said['message']}")  # fmt: skip
    assert {a.version for a in client.answers} == {V2.number}, [a.error for a in client.answers if a.error][:10]
    warnings = [e for e in events(t.kube, NAMESPACE, V3.name) if e["type"] == "Warning"]
    assert warnings, "a stuck rollout is announced by a Warning Event"


def test_the_switch_waits_for_the_production_replica_count(traffic: Traffic) -> None:
    """Version 3 has its Staging count ready (one Pod) but not its Production count
    (two): the Service stays on version 2. Once the artifact is restored in S3 and the
    refusing Pod replaced, both Pods are ready and the switch happens, with no failed request."""
    t = traffic
    ready = deployment(t.kube, NAMESPACE, V3.name)
    assert ready is not None, "the tampered-artifact test registers v3"
    assert ready["spec"]["replicas"] == REPLICAS, "the tampered-artifact test promotes v3"
    assert ready["status"].get("readyReplicas", 0) == 1
    assert serving_version(t.kube, NAMESPACE, MODEL) == V2.number
    assert status(t.kube, NAMESPACE, V3.name)["stage"] == "Staging"

    def restore() -> None:
        _tamper(t.s3, V3.uri, V3_BYTES)
        # The kubelet would retry the init container after its crash back-off (up to
        # minutes); a fresh Pod fetches at once.
        for pod in _pods(t.kube, V3.number):
            if not all(c.get("ready") for c in pod["status"].get("containerStatuses", [])):
                t.kube.kubectl("delete", "pod", pod["metadata"]["name"], "-n", NAMESPACE, "--wait=false")

    result = _switch_under_traffic(t, old=V2, new=V3, change=restore, what="promotion of v3 once it has 2 Pods")
    _assert_clean_switch(result, old=V2, new=V3)
    wait_stage(t.kube, NAMESPACE, V3.name, "Production")


def test_a_rolling_update_of_the_operator_mid_switch_fails_no_request(traffic: Traffic) -> None:
    """An upgrade, as `kubectl apply` of a new release does it: the operator's Pod
    template changes (here `kubectl rollout restart`) while version 2 is being rolled
    back to. New Pods start as standbys, old ones stop and release the Lease one at a
    time; the switch finishes, and not one request fails."""
    t = traffic
    assert serving_version(t.kube, NAMESPACE, MODEL) == V3.number, "the replica-count test serves v3 first"
    set_stage(t.kube, NAMESPACE, V2.name, "Archived")  # acknowledge the supersession
    before = {p["metadata"]["name"] for p in t.operator.pods()}
    started = time.monotonic()

    def roll_the_operator() -> None:
        t.kube.kubectl("rollout", "restart", "deployment/modelreg-operator", "-n", OPERATOR_NAMESPACE)

    result = _switch_under_traffic(
        t, old=V3, new=V2, what="rollback to v2 during a rolling update of the operator",
        change=lambda: set_stage(t.kube, NAMESPACE, V2.name, "Production"), during=roll_the_operator,
    )  # fmt: skip
    _assert_clean_switch(result, old=V3, new=V2)
    t.kube.kubectl("rollout", "status", "deployment/modelreg-operator", "-n", OPERATOR_NAMESPACE, "--timeout=180s")
    leader = t.operator.wait_ready()
    print(f"the operator's rolling update ended {time.monotonic() - started:.1f}s after it began")
    assert leader["metadata"]["name"] not in before
    # `rollout status` is done once the old Pods are terminating; they finish their work first.
    wait_for(lambda: not before & {p["metadata"]["name"] for p in t.operator.pods()}, timeout=60,
             what="the old operator Pods to be gone")  # fmt: skip
    st = wait_stage(t.kube, NAMESPACE, V2.name, "Production")
    assert st["history"][-1]["reason"] == "RolledBack"
