"""Bring the local control plane up and down: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok with one fake node, and the S3
server and a container registry, all on loopback ports picked free, with TLS
and RBAC.

Called by the `modelreg devcluster` commands and by the test fixtures. A
cluster is a state directory: certificates, kubeconfig, etcd data, logs and a
`state.json` naming every process, so `down` from another shell finds them.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from modelreg.devcluster import building, node, pki, processes, registry, s3server

NODE_NAME = "kwok-node-0"
# The kwok node runs nothing, so nothing lands on it by accident: it carries a taint,
# and what should run there (the e2e tests' and the demo's serving Pods) asks for it
# by label and tolerates the taint. A real node beside it stays the default.
KWOK_NODE_LABEL = ("modelreg.dev/node", "kwok")
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}


def kwok_placement() -> dict[str, object]:
    """`spec.serving` fields (also valid in a Pod spec) that place Pods on the kwok node."""
    key, value = KWOK_NODE_LABEL
    return {"nodeSelector": {key: value}, "tolerations": [{**KWOK_TAINT, "operator": "Equal"}]}


SERVICE_IP = "10.0.0.1"
Log = Callable[[str], None]


class ClusterError(RuntimeError):
    """The dev cluster could not be started, found or stopped."""


@dataclass
class ClusterState:
    directory: str
    kubeconfig: str
    server: str
    audit_log: str
    s3: s3server.S3Config
    processes: dict[str, processes.Process] = field(default_factory=dict)
    registry: registry.RegistryConfig | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def state_file(self) -> Path:
        return Path(self.directory) / "state.json"

    def save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, self.state_file)

    @classmethod
    def load(cls, directory: Path) -> ClusterState | None:
        try:
            raw = json.loads((directory / "state.json").read_text())
        except (OSError, ValueError):
            return None
        raw["s3"] = s3server.S3Config(**raw["s3"])
        raw["registry"] = registry.RegistryConfig(**raw["registry"]) if raw.get("registry") else None
        raw["processes"] = {k: processes.Process(**v) for k, v in raw["processes"].items()}
        return cls(**raw)

    def running(self) -> dict[str, bool]:
        return {name: p.alive() for name, p in self.processes.items()}

    def env(self) -> dict[str, str]:
        """Variables that point kubectl, boto3 and the tests at this cluster."""
        return {
            "KUBECONFIG": self.kubeconfig,
            "AWS_ACCESS_KEY_ID": self.s3.access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
            "AWS_DEFAULT_REGION": self.s3.region,
            "AWS_ENDPOINT_URL_S3": self.s3.endpoint,
            "MODELREG_DEVCLUSTER": self.directory,
        } | ({"MODELREG_REGISTRY": self.registry.address} if self.registry else {})


def default_directory() -> Path:
    return building.cache_root() / "devcluster"


def up(
    directory: Path,
    *,
    bins: building.Binaries,
    with_s3: bool = True,
    real_node: bool = False,
    with_registry: bool = True,
    tie_to_parent: bool = False,
    log: Log = building.say,
) -> ClusterState:
    """Start a cluster in `directory`; refuse if one already runs there.

    With `real_node`, a kubelet on containerd joins the kwok node (see `devcluster.node`).

    The registry starts only where Debian's `docker-registry` is installed: the
    control plane and the kwok node need no image, so a machine without it still
    gets a cluster (and is told why there is no registry).
    """
    existing = ClusterState.load(directory)
    if existing and any(existing.running().values()):
        raise ClusterError(
            f"a dev cluster is already running from {directory} "
            f"(kube-apiserver at {existing.server}); use it, or stop it with `modelreg devcluster down`"
        )
    if existing:
        shutil.rmtree(directory)  # leftovers of a cluster that died; nothing in it is alive
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    certs = pki.create_pki(directory / "pki", service_ip=SERVICE_IP)
    ports = {name: processes.free_port() for name in ("etcd", "etcd-peer", "apiserver", "kcm", "sched", "kwok")}
    state = ClusterState(
        directory=str(directory),
        kubeconfig=str(directory / "kubeconfig"),
        server=f"https://127.0.0.1:{ports['apiserver']}",
        audit_log=str(directory / "logs" / "audit.log"),
        s3=s3server.new_config(directory / "s3"),
    )
    _write_kubeconfig(Path(state.kubeconfig), server=state.server, certs=certs)
    (directory / "audit-policy.yaml").write_text(AUDIT_POLICY)
    logs = directory / "logs"

    def launch(name: str, argv: Sequence[str | os.PathLike[str]]) -> processes.Process:
        state.processes[name] = processes.start(name, argv, log=logs / f"{name}.log", tie_to_parent=tie_to_parent)
        state.save()
        return state.processes[name]

    try:
        launch("etcd", _etcd_argv(bins, directory, ports, certs))
        # Pods on a real node reach the API server through the `kubernetes` Service, whose
        # endpoint must be an address they can route to: the node's (the host's) own.
        advertise = node.node_ip() if real_node else None
        launch("kube-apiserver", _apiserver_argv(bins, directory, ports, certs, state, advertise=advertise))
        if with_s3:
            state.processes["s3"] = s3server.start(state.s3, binary=bins.s3_server, tie_to_parent=tie_to_parent)
            state.save()
        if with_registry:
            _start_registry(state, tie_to_parent=tie_to_parent, log=log)
        _wait_ready(state, certs)
        state.timings["readyz"] = round(time.monotonic() - started, 2)
        log(f"[devcluster] kube-apiserver ready at {state.server} ({state.timings['readyz']}s)")
        launch("kube-controller-manager", _kcm_argv(bins, ports, certs, state))
        launch("kube-scheduler", _scheduler_argv(bins, ports, state))
        launch("kwok", _kwok_argv(bins, ports, state))
        _create_node(bins, state)
        _wait_node_ready(bins, state)
        state.timings["node_ready"] = round(time.monotonic() - started, 2)
        state.save()
        log(f"[devcluster] node {NODE_NAME} Ready ({state.timings['node_ready']}s); S3 at {state.s3.endpoint}")
        if real_node:
            node.up(directory, server=state.server, kubectl=_admin_kubectl(bins, state), launch=launch, log=log)
            state.timings["real_node_ready"] = round(time.monotonic() - started, 2)
            state.save()
            log(f"[devcluster] real node {node.NODE_NAME} Ready ({state.timings['real_node_ready']}s)")
    except BaseException:
        down(directory, keep_logs=True)
        raise
    return state


def down(directory: Path, *, keep_logs: bool = False) -> list[str]:
    """Stop every process of the cluster in `directory` and delete its data.

    Returns the names of the processes that were still running. With
    `keep_logs`, the logs survive (a failed start wants them read).
    """
    state = ClusterState.load(directory)
    if state is None:
        return []
    stopped = [name for name, alive in state.running().items() if alive]
    api = state.processes.get("kube-apiserver")
    node.down(
        directory,
        kubectl=_admin_kubectl(building.binaries(), state) if api and api.alive() else None,
        procs=state.processes,
    )
    # Reverse start order: clients first, etcd last, so nothing logs a storm of errors.
    for proc in reversed(list(state.processes.values())):
        processes.stop(proc)
    if keep_logs:
        for child in directory.iterdir():
            if child.name != "logs":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return stopped


def kubectl(bins: building.Binaries, state: ClusterState, *args: str, check: bool = True) -> str:
    out = subprocess.run(
        [str(bins.kubectl), f"--kubeconfig={state.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and out.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def _admin_kubectl(bins: building.Binaries, state: ClusterState) -> Callable[..., str]:
    def run(*args: str, check: bool = True) -> str:
        return kubectl(bins, state, *args, check=check)

    return run


def _start_registry(state: ClusterState, *, tie_to_parent: bool, log: Log) -> None:
    if registry.find_binary() is None:
        log(f"[devcluster] no image registry: `{registry.BINARY}` is not installed (modelreg devcluster packages)")
        return
    state.registry = registry.new_config(Path(state.directory) / "registry")
    state.processes["registry"] = registry.start(state.registry, tie_to_parent=tie_to_parent)
    state.save()
    log(f"[devcluster] image registry at {state.registry.address}")


def _etcd_argv(
    bins: building.Binaries, d: Path, ports: dict[str, int], c: pki.ClusterPKI
) -> list[str | os.PathLike[str]]:
    client, peer = f"https://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd-peer']}"
    return [
        bins.etcd,
        "--name=devcluster",
        f"--data-dir={d / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=devcluster={peer}",
        f"--cert-file={c.etcd.cert}",
        f"--key-file={c.etcd.key}",
        f"--trusted-ca-file={c.ca.cert}",
        "--client-cert-auth",
        # A throwaway cluster: durability buys nothing and fsync costs seconds per test.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def _apiserver_argv(
    bins: building.Binaries,
    d: Path,
    ports: dict[str, int],
    c: pki.ClusterPKI,
    state: ClusterState,
    *,
    advertise: str | None = None,
) -> list[str | os.PathLike[str]]:
    if advertise is None:
        # Endpoints may not hold loopback addresses, and without a real node nothing
        # in-cluster calls the API server through the `kubernetes` Service.
        listen = ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none"]
    else:
        # Also on the host's address, which the `kubernetes` Service's endpoint names;
        # kubeconfigs keep using 127.0.0.1 (both are in the serving cert).
        listen = ["--bind-address=0.0.0.0", f"--advertise-address={advertise}", "--endpoint-reconciler-type=lease"]
    return [
        bins.kube_apiserver,
        f"--etcd-servers=https://127.0.0.1:{ports['etcd']}",
        f"--etcd-cafile={c.ca.cert}",
        f"--etcd-certfile={c.etcd_client.cert}",
        f"--etcd-keyfile={c.etcd_client.key}",
        *listen,
        f"--secure-port={ports['apiserver']}",
        f"--tls-cert-file={c.apiserver.cert}",
        f"--tls-private-key-file={c.apiserver.key}",
        f"--client-ca-file={c.ca.cert}",
        # A real node's kubelet authenticates the API server by this cert (see devcluster.node).
        f"--kubelet-client-certificate={c.kubelet_client.cert}",
        f"--kubelet-client-key={c.kubelet_client.key}",
        # Nothing resolves node names here; the real node's InternalIP is the host's.
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        "--authorization-mode=RBAC",
        # As on OpenShift: setting blockOwnerDeletion needs update on the owner's
        # finalizers, so the e2e tests prove the shipped RBAC grants it.
        "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={c.service_account.cert}",
        f"--service-account-signing-key-file={c.service_account.key}",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--allow-privileged=true",
        f"--audit-policy-file={d / 'audit-policy.yaml'}",
        f"--audit-log-path={state.audit_log}",
        "--audit-log-maxsize=200",
        "--audit-log-mode=batch",
        "--audit-log-batch-max-wait=1s",
        "--profiling=false",
    ]


def _kcm_argv(
    bins: building.Binaries, ports: dict[str, int], c: pki.ClusterPKI, state: ClusterState
) -> list[str | os.PathLike[str]]:
    kc = state.kubeconfig
    return [
        bins.kube_controller_manager,
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports['kcm']}",
        f"--service-account-private-key-file={c.service_account.key}",
        f"--root-ca-file={c.ca.cert}",
        "--leader-elect=false",
        "--controllers=*",
    ]


def _scheduler_argv(
    bins: building.Binaries, ports: dict[str, int], state: ClusterState
) -> list[str | os.PathLike[str]]:
    kc = state.kubeconfig
    return [
        bins.kube_scheduler,
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports['sched']}",
        "--leader-elect=false",
    ]


def _kwok_argv(bins: building.Binaries, ports: dict[str, int], state: ClusterState) -> list[str | os.PathLike[str]]:
    return [
        bins.kwok,
        f"--kubeconfig={state.kubeconfig}",
        f"--config={bins.kwok.parent / building.KWOK_STAGES}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        "--node-lease-duration-seconds=40",
        "--cidr=10.244.0.1/16",
        "--node-ip=10.0.0.2",
        f"--server-address=127.0.0.1:{ports['kwok']}",
    ]


def _write_kubeconfig(path: Path, *, server: str, certs: pki.ClusterPKI) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "modelreg-dev", "cluster": {"server": server, "certificate-authority": str(certs.ca.cert)}}
        ],
        "users": [
            {
                "name": "modelreg-admin",
                "user": {"client-certificate": str(certs.admin.cert), "client-key": str(certs.admin.key)},
            }
        ],
        "contexts": [{"name": "modelreg-dev", "context": {"cluster": "modelreg-dev", "user": "modelreg-admin"}}],
        "current-context": "modelreg-dev",
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
    path.chmod(0o600)


def _wait_ready(state: ClusterState, certs: pki.ClusterPKI, timeout: float = 120) -> None:
    ctx = ssl.create_default_context(cafile=str(certs.ca.cert))
    ctx.load_cert_chain(str(certs.admin.cert), str(certs.admin.key))
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for name in ("etcd", "kube-apiserver"):
            if not state.processes[name].alive():
                raise ClusterError(f"{name} exited during start:\n{processes.tail(state.processes[name].log)}")
        try:
            with urllib.request.urlopen(f"{state.server}/readyz", context=ctx, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise ClusterError(f"kube-apiserver was not ready within {timeout:.0f}s (last answer: {last})")


def _create_node(bins: building.Binaries, state: ClusterState) -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": "linux",
                KWOK_NODE_LABEL[0]: KWOK_NODE_LABEL[1],
            },
        },
        "spec": {"taints": [KWOK_TAINT]},
        # GPUs too (an extended resource, as the NVIDIA device plugin reports them), so
        # serving specs that ask for one can be scheduled and tested here.
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "500", "nvidia.com/gpu": "8"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "500", "nvidia.com/gpu": "8"},
        },
    }
    path = Path(state.directory) / "node.json"
    path.write_text(json.dumps(node))
    kubectl(bins, state, "apply", "-f", str(path))


def _wait_node_ready(bins: building.Binaries, state: ClusterState, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not state.processes["kwok"].alive():
            raise ClusterError(f"kwok exited during start:\n{processes.tail(state.processes['kwok'].log)}")
        out = kubectl(bins, state, "get", "node", NODE_NAME, "-o",
                      "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)  # fmt: skip
        if out.strip() == "True":
            return
        time.sleep(0.3)
    raise ClusterError(f"node {NODE_NAME} did not become Ready within {timeout:.0f}s")


# Metadata for every write, and for the GETs and LISTs of what the operator reads
# per reconcile (not watches, not other readers' kinds): enough to count the
# operator's writes (tests prove a no-op reconcile makes none) and its reads (an
# idle operator makes none, bench/scale.py counts them) without a huge log.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: Metadata
    verbs: ["get", "list"]
    resources:
      - group: modelreg.dev
      - group: apps
        resources: ["deployments", "replicasets"]
      - group: ""
        resources: ["services", "pods", "secrets"]
      - group: batch
        resources: ["jobs"]
      - group: autoscaling
        resources: ["horizontalpodautoscalers"]
  - level: None
"""
