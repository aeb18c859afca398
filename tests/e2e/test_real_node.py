"""The dev cluster's real node: a kubelet on containerd next to the kwok node.

These tests start their own dev cluster with `real_node=True` (one per module;
a host holds one real node at a time) and run Pods from a locally built image
on it: they really run, logs, exec and port-forward reach them, and Services
route to them through the node's kube-proxy. The last test stops the cluster
and checks that the host is as it was. Needs root on a Debian host; with
CI=true a node that cannot start fails, it never skips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from modelreg.devcluster import building, cluster, node, ociarchive, processes
from tests.conftest import unavailable, wait_for
from tests.e2e.conftest import Cluster

IMAGE = "localhost/modelreg/busybox-e2e:1"
PLACED_ON_REAL_NODE: dict[str, object] = {
    "nodeSelector": {node.LABEL[0]: node.LABEL[1]},
    "tolerations": [{"key": node.LABEL[0], "operator": "Equal", "value": node.LABEL[1], "effect": "NoSchedule"}],
}

CONNTRACK_SYSCTLS = ("nf_conntrack_max", "nf_conntrack_tcp_timeout_established", "nf_conntrack_tcp_timeout_close_wait")
# Straight to the address: a proxy from the environment would answer for a ClusterIP that does not route.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class RealCluster:
    kube: Cluster
    state: cluster.ClusterState
    directory: Path
    host_before: dict[str, object]
    # What Pods put on the host while they ran, checked again after `down`.
    seen_processes: dict[int, processes.Process] = field(default_factory=dict)
    seen_veths: set[str] = field(default_factory=set)
    is_down: bool = False


def _host_snapshot() -> dict[str, object]:
    """The host state the real node touches, as comparable values."""
    return {
        "sysctls": {k: Path("/proc/sys", k).read_text().strip() for k in node.SYSCTLS},
        "paths": {p: os.path.lexists(p) for p in (*node.HOST_PATHS, str(node.RUN_DIR), str(node.KUBELET_ROOT))},
        "kube_chains": [
            line
            for tool in ("iptables-save", "ip6tables-save")
            for line in subprocess.run([tool], capture_output=True, text=True).stdout.splitlines()
            if "KUBE-" in line or node.NETWORK in line
        ],
        # kube-proxy's nftables tables, and the conntrack sysctls it rewrites unless told not to.
        "proxy_tables": [
            line
            for line in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.splitlines()
            if "kube-proxy" in line
        ],
        "conntrack_sysctls": {
            k: p.read_text().strip() for k in CONNTRACK_SYSCTLS if (p := Path("/proc/sys/net/netfilter", k)).exists()
        },
        "kubepods": [str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")],
        "netns_mounts": sorted(
            line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines() if "/run/netns" in line
        ),
    }


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    if os.geteuid() != 0:
        unavailable("the real node needs root (mounts, cgroups, a network bridge)")
    before = _host_snapshot()
    directory = tmp_path_factory.mktemp("realnode")
    try:
        bins = building.ensure_binaries()
        state = cluster.up(directory, bins=bins, with_s3=False, real_node=True, tie_to_parent=True)
    except Exception as exc:
        unavailable(f"the dev cluster with a real node could not start: {exc}")
    kube = Cluster(kubeconfig=state.kubeconfig, kubectl_path=str(bins.kubectl), audit_log=state.audit_log, state=state)
    try:
        archive = ociarchive.write_oci_archive(ociarchive.busybox(IMAGE), directory / "busybox-e2e.tar")
        ociarchive.import_image(archive, address=node.CONTAINERD_ADDRESS)
        # The node's first two sandboxes start together, as when a namespace was once left
        # hidden under a bind mount of /run/netns (see node._prepare_netns_dir).
        _web_pods(kube, "first-a", "first-b")
        yield RealCluster(kube=kube, state=state, directory=directory, host_before=before)
    finally:
        cluster.down(directory)


@pytest.fixture
def kube_real(real: RealCluster) -> Cluster:
    assert not real.is_down, "the real-node cluster was already stopped by test_down_leaves_the_host_as_it_was"
    return real.kube


def _pod(name: str, script: str, *, placement: dict[str, object], port: int | None = None) -> str:
    container: dict[str, object] = {
        "name": "main",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        # PID 1 ignores SIGTERM unless it traps it; without the trap a delete waits out the grace period.
        "command": ["/bin/sh", "-c", f"trap 'exit 0' TERM; {script} & wait"],
    }
    if port:
        container["ports"] = [{"containerPort": port}]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 5, **placement},
    }
    return json.dumps(pod)


def _web_pod(kube: Cluster, name: str) -> dict[str, object]:
    pod: dict[str, object] = _web_pods(kube, name)[0]
    return pod


def _web_pods(kube: Cluster, *names: str) -> list[dict[str, object]]:
    """Start the Pods in one request, so the kubelet starts their sandboxes at the same time."""
    script = (
        "echo started on the real node; mkdir -p /www; echo served-by-$(hostname) > /www/index.html; "
        "httpd -f -p 8080 -h /www"
    )
    items = [json.loads(_pod(n, script, placement=PLACED_ON_REAL_NODE, port=8080)) for n in names]
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    kube.kubectl("wait", "--for=condition=Ready", *(f"pod/{n}" for n in names), "--timeout=90s")
    return [kube.get_json("pod", n) for n in names]


def _remember_host_traces(real: RealCluster) -> None:
    for procs in Path("/sys/fs/cgroup/pids/kubepods").rglob("cgroup.procs"):
        for pid in map(int, procs.read_text().split()):
            # By pid and start time, so a pid recycled after `down` is not mistaken for a survivor.
            started = processes.start_time(pid)
            if started is not None:
                real.seen_processes[pid] = processes.Process(name="pod", pid=pid, started=started, log="")
    out = subprocess.run(["ip", "-o", "link", "show", "master", node.BRIDGE], capture_output=True, text=True).stdout
    real.seen_veths |= {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def test_real_node_is_ready_beside_the_kwok_node(kube_real: Cluster) -> None:
    real_node = kube_real.get_json("node", node.NODE_NAME)
    ready = {c["type"]: c["status"] for c in real_node["status"]["conditions"]}["Ready"]
    assert ready == "True"
    assert real_node["metadata"]["labels"][node.LABEL[0]] == node.LABEL[1]
    assert real_node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert {"key": node.LABEL[0], "value": node.LABEL[1], "effect": "NoSchedule"} in real_node["spec"]["taints"]
    kwok_node = kube_real.get_json("node", cluster.NODE_NAME)
    assert kwok_node["metadata"]["labels"]["type"] == "kwok"
    assert kwok_node["metadata"]["labels"].get(node.LABEL[0]) != node.LABEL[1]


def test_placement_is_explicit_with_both_nodes(kube_real: Cluster) -> None:
    """Both nodes are tainted: a Pod lands where it asks, and one that asks for
    nothing lands nowhere (never on a node by luck)."""
    kube_real.kubectl("apply", "-f", "-", input=_pod("on-kwok", "sleep 3600", placement=cluster.kwok_placement()))
    kube_real.kubectl("apply", "-f", "-", input=_pod("anywhere", "sleep 3600", placement={}))
    node_name = wait_for(
        lambda: kube_real.kubectl("get", "pod", "on-kwok", "-o", "jsonpath={.spec.nodeName}"),
        timeout=30,
        what="the scheduler to place pod/on-kwok",
    )
    assert node_name == cluster.NODE_NAME

    def unschedulable() -> bool:
        pod = json.loads(kube_real.kubectl("get", "pod", "anywhere", "-o", "json"))
        conditions = {c["type"]: c for c in pod["status"].get("conditions", [])}
        return bool(conditions.get("PodScheduled", {}).get("reason") == "Unschedulable")

    wait_for(unschedulable, timeout=30, what="pod/anywhere to be refused by every node's taint")
    assert kube_real.kubectl("get", "pod", "anywhere", "-o", "jsonpath={.spec.nodeName}") == ""
    kube_real.kubectl("delete", "pod", "on-kwok", "anywhere", "--grace-period=0", "--force", check=False)


def test_a_pod_from_a_local_image_runs_on_the_real_node(real: RealCluster, kube_real: Cluster) -> None:
    pod = _web_pod(kube_real, "web-run")
    spec, status = pod["spec"], pod["status"]
    assert isinstance(spec, dict)
    assert isinstance(status, dict)
    assert spec["nodeName"] == node.NODE_NAME
    assert status["phase"] == "Running"
    assert status["podIP"].startswith(node.POD_SUBNET.rsplit(".", 1)[0] + ".")
    # Reached straight from the host over the bridge: a real network namespace answers.
    with urllib.request.urlopen(f"http://{status['podIP']}:8080/", timeout=10) as resp:
        assert resp.read().decode().strip() == "served-by-web-run"
    _remember_host_traces(real)
    assert real.seen_processes
    assert real.seen_veths


def test_logs_exec_and_port_forward_reach_the_pod(real: RealCluster, kube_real: Cluster) -> None:
    _web_pod(kube_real, "web-tools")

    logs = wait_for(lambda: kube_real.kubectl("logs", "web-tools"), timeout=30, what="the pod's log")
    assert "started on the real node" in logs

    out = kube_real.kubectl("exec", "web-tools", "--", "sh", "-c", "cat /www/index.html; id -u")
    assert out.split() == ["served-by-web-tools", "0"]

    port = processes.free_port()
    forward = subprocess.Popen(
        [
            kube_real.kubectl_path,
            f"--kubeconfig={kube_real.kubeconfig}",
            "port-forward",
            "pod/web-tools",
            f"{port}:8080",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def fetch() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                    return str(resp.read().decode().strip())
            except OSError:
                return None

        assert wait_for(fetch, timeout=30, what="a page through kubectl port-forward") == "served-by-web-tools"
    finally:
        forward.terminate()
        forward.wait(10)
    _remember_host_traces(real)


def _deployment(name: str, replicas: int) -> dict[str, object]:
    script = "mkdir -p /www; echo served-by-$(hostname) > /www/index.html; httpd -f -p 8080 -h /www"
    pod = json.loads(_pod(name, script, placement=PLACED_ON_REAL_NODE, port=8080))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod["spec"]},
        },
    }


def _page(url: str) -> str | None:
    """The page's text, or None when nothing (or something else than a Pod: the VM's egress proxy) answers."""
    try:
        with NO_PROXY.open(url, timeout=3) as resp:
            text = str(resp.read().decode().strip())
    except OSError:
        return None
    return text if text.startswith("served-by-") else None


def test_a_cluster_ip_service_routes_to_the_pods_on_the_real_node(kube_real: Cluster) -> None:
    """kube-proxy (nftables) makes the ClusterIP reach the Pods from the host, spreads
    requests over both replicas, and follows a change of the Service's selector."""
    deployments = [_deployment("blue", 2), _deployment("green", 1)]
    kube_real.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": deployments}))
    try:
        kube_real.kubectl("rollout", "status", "deployment/blue", "deployment/green", "--timeout=90s")
        names = {
            app: set(
                kube_real.kubectl("get", "pods", "-l", f"app={app}", "-o", "jsonpath={.items[*].metadata.name}").split()
            )
            for app in ("blue", "green")
        }
        assert len(names["blue"]) == 2
        assert len(names["green"]) == 1
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "blue"}, "ports": [{"port": 80, "targetPort": 8080}]},
        }
        created = time.monotonic()
        kube_real.kubectl("apply", "-f", "-", input=json.dumps(service))
        ip = kube_real.kubectl("get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")
        url = f"http://{ip}/"
        first = wait_for(lambda: _page(url), timeout=30, what=f"a Pod's page through the ClusterIP {ip}")
        print(f"routed through the ClusterIP {time.monotonic() - created:.2f}s after the Service was created")
        seen = {first.removeprefix("served-by-")}
        deadline = time.monotonic() + 20
        while seen != names["blue"] and time.monotonic() < deadline:
            page = _page(url)
            assert page is not None, "the ClusterIP stopped answering"
            seen.add(page.removeprefix("served-by-"))
        assert seen == names["blue"], "requests should reach both replicas"

        kube_real.kubectl("patch", "service", "web", "-p", json.dumps({"spec": {"selector": {"app": "green"}}}))
        (green,) = names["green"]
        wait_for(lambda: _page(url) == f"served-by-{green}", timeout=30, what="traffic to follow the selector to green")
        assert {_page(url) for _ in range(10)} == {f"served-by-{green}"}
    finally:
        # Deployments would recreate the Pods that `down` drains.
        kube_real.kubectl("delete", "deployment", "blue", "green", "--wait=false", check=False)
        kube_real.kubectl("delete", "service", "web", "--wait=false", check=False)


def test_a_pod_reaches_the_api_server_through_the_kubernetes_service(real: RealCluster, kube_real: Cluster) -> None:
    """What an in-cluster client does: the `kubernetes` Service from its environment
    variables, TLS checked against the cluster CA, the service account's token."""
    # From the container: busybox's built-in TLS fails its handshake with the API server
    # (alert 40, on loopback too), so plain HTTP to its TLS port, which only Go's TLS
    # listener answers this way (the VM's egress proxy would say 404).
    raw = 'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT'
    out = kube_real.kubectl("exec", "first-a", "--", "sh", "-c", f"env; {raw}", timeout=30)
    assert f"KUBERNETES_SERVICE_HOST={cluster.SERVICE_IP}" in out.splitlines()
    assert "Client sent an HTTP request to an HTTPS server." in out
    # From the Pod's network namespace with Python's TLS: verified, and authenticated as the Pod's service account.
    pod_ip = kube_real.kubectl("get", "pod", "first-a", "-o", "jsonpath={.status.podIP}")
    (netns,) = [ns for ns in node.our_netns() if f"inet {pod_ip}/" in _netns_addresses(ns)]
    token = kube_real.kubectl("create", "token", "default").strip()
    client = (
        "import ssl, sys, urllib.request as u\n"
        "ctx = ssl.create_default_context(cafile=sys.argv[1])\n"
        "req = u.Request(f'https://{sys.argv[2]}/api', headers={'Authorization': 'Bearer ' + sys.argv[3]})\n"
        "print(u.build_opener(u.ProxyHandler({}), u.HTTPSHandler(context=ctx)).open(req, timeout=10).read().decode())"
    )
    ca = Path(real.state.directory) / "pki" / "ca.crt"
    argv = ["ip", "netns", "exec", Path(netns).name, sys.executable, "-c", client, str(ca), cluster.SERVICE_IP, token]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    # Discovery is for authenticated users only: an anonymous request gets no APIVersions.
    api = json.loads(done.stdout)
    assert api["kind"] == "APIVersions"
    assert api["versions"] == ["v1"]


def _push_build(real: RealCluster, reference: str, build: str) -> None:
    """Push a busybox image whose config says `build` (so each build has its own digest)."""
    image = ociarchive.busybox(reference)
    image.env = {"PATH": "/bin", "BUILD": build}
    archive = ociarchive.write_oci_archive(image, real.directory / f"pull-{build}.tar")
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci-archive:{archive}",
                    f"docker://{reference}"], check=True, capture_output=True, text=True)  # fmt: skip


def _run_once(kube: Cluster, name: str, image: str, policy: str) -> str:
    """Run a Pod that prints its image's BUILD; return what it printed."""
    pod = json.loads(_pod(name, 'echo "build $BUILD"', placement=PLACED_ON_REAL_NODE))
    pod["spec"]["restartPolicy"] = "Never"
    pod["spec"]["containers"][0] |= {"image": image, "imagePullPolicy": policy}
    kube.kubectl("apply", "-f", "-", input=json.dumps(pod))
    kube.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", f"pod/{name}", "--timeout=60s")
    return kube.kubectl("logs", name).strip()


def test_image_pull_policy_with_the_loopback_registry(real: RealCluster, kube_real: Cluster) -> None:
    """What the README says about imagePullPolicy, on the real kubelet: IfNotPresent
    runs what the node has under a tag even after the registry's tag moved; Always
    asks the registry and runs the new content; Never runs only what the node has."""
    assert real.state.registry is not None
    reference = f"{real.state.registry.address}/e2e/pull-policy:1"
    _push_build(real, reference, "a")
    assert _run_once(kube_real, "pull-first", reference, "IfNotPresent") == "build a"
    _push_build(real, reference, "b")  # the same tag, other content
    assert _run_once(kube_real, "pull-if-not-present", reference, "IfNotPresent") == "build a"
    assert _run_once(kube_real, "pull-always", reference, "Always") == "build b"
    assert _run_once(kube_real, "pull-never", reference, "Never") == "build b"  # the node's copy now

    absent = json.loads(_pod("pull-never-absent", "true", placement=PLACED_ON_REAL_NODE))
    absent["spec"]["containers"][0] |= {"image": f"{real.state.registry.address}/e2e/absent:1",
                                        "imagePullPolicy": "Never"}  # fmt: skip
    kube_real.kubectl("apply", "-f", "-", input=json.dumps(absent))

    def never_pulled() -> str | None:
        statuses = kube_real.get_json("pod", "pull-never-absent")["status"].get("containerStatuses", [])
        reason = statuses[0]["state"].get("waiting", {}).get("reason") if statuses else None
        return reason if reason == "ErrImageNeverPull" else None

    wait_for(never_pulled, timeout=60, what="ErrImageNeverPull for an image the node does not have")
    kube_real.kubectl("delete", "pod", "pull-first", "pull-if-not-present", "pull-always", "pull-never",
                      "pull-never-absent", "--wait=false")  # fmt: skip


def _netns_addresses(netns: str) -> str:
    return subprocess.run(["ip", "-n", Path(netns).name, "-o", "-4", "addr"], capture_output=True, text=True).stdout


def test_down_leaves_the_host_as_it_was(real: RealCluster) -> None:
    """Run last: stops the module's cluster while a Pod still runs on the real node."""
    if real.is_down:
        pytest.fail("already stopped")
    _web_pod(real.kube, "web-left-running")
    _remember_host_traces(real)
    node_procs = [real.state.processes[n] for n in ("containerd", "kubelet", "kube-proxy")]
    netns_before_down = node.our_netns()
    assert netns_before_down, "a running Pod should have a network namespace from the node's subnet"

    stopped = cluster.down(real.directory)
    real.is_down = True

    assert {"containerd", "kubelet", "kube-proxy"} <= set(stopped)
    assert not any(p.alive() for p in node_procs)
    address = str(node.CONTAINERD_ADDRESS)
    shims = [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and address in _cmdline(p)]
    assert shims == [], f"processes talking to the node's containerd survived: {shims}"
    survivors = [pid for pid, proc in real.seen_processes.items() if proc.alive()]
    assert survivors == [], f"processes of the node's Pods survived: {survivors}"
    mounts = Path("/proc/self/mountinfo").read_text()
    node_paths = (str(real.directory), str(node.KUBELET_ROOT), "/var/lib/kubelet", "/run/containerd")
    for prefix in (*node_paths, *netns_before_down):
        assert f" {prefix}" not in mounts, f"a mount under {prefix} survived"
    assert not any(os.path.lexists(ns) for ns in netns_before_down)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f" {node.BRIDGE}:" not in links
    assert not [v for v in real.seen_veths if f" {v}@" in links or f" {v}:" in links]
    assert _host_snapshot() == real.host_before
    assert not real.directory.exists()


def _cmdline(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_down_after_the_node_crashed_still_cleans_the_host(real: RealCluster, tmp_path: Path) -> None:
    """kubelet and containerd SIGKILLed (as when a test session dies): their Pods, shims,
    mounts and namespaces outlive them, and `down` must find and remove them by itself."""
    if not real.is_down:  # one real node per host: the module's must go first
        cluster.down(real.directory)
        real.is_down = True
    directory = tmp_path / "crashing"
    state = cluster.up(directory, bins=building.binaries(), with_s3=False, real_node=True, tie_to_parent=True)
    try:
        kube = Cluster(kubeconfig=state.kubeconfig, kubectl_path=str(building.binaries().kubectl), state=state)
        archive = ociarchive.write_oci_archive(ociarchive.busybox(IMAGE), directory / "busybox-e2e.tar")
        ociarchive.import_image(archive, address=node.CONTAINERD_ADDRESS)
        _web_pods(kube, "crash-a", "crash-b")
        pod_processes = [
            processes.Process(name="pod", pid=pid, started=started, log="")
            for procs in Path("/sys/fs/cgroup/pids/kubepods").rglob("cgroup.procs")
            for pid in map(int, procs.read_text().split())
            if (started := processes.start_time(pid)) is not None
        ]
        for name in ("kubelet", "containerd"):
            processes.kill(state.processes[name])
        assert pod_processes
        assert all(p.alive() for p in pod_processes), "the Pods should outlive their kubelet and containerd"
    finally:
        cluster.down(directory)

    assert not any(p.alive() for p in pod_processes)
    assert not [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and str(directory) in _cmdline(p)]
    assert _host_snapshot() == real.host_before
    assert f" {directory}" not in Path("/proc/self/mountinfo").read_text()
