"""A real node next to the kwok one: containerd, runc, CNI bridge networking, a
kubelet and kube-proxy, so Pods pinned to it really run (logs, exec and
port-forward work) and Services route to them.

Called by `devcluster.cluster.up/down` when the cluster is started with
`--real-node`, and by `commands.status`. Unlike the rest of the dev cluster it
needs root and changes the host: mounts, a network bridge, network namespaces,
cgroups, iptables rules, kube-proxy's nftables tables and a few sysctls. `up` records what the host looked
like and `down` undoes exactly what the node did, so a host holds at most one
real node at a time (a lock file says which cluster owns it).

The node is tainted `modelreg.dev/node=real:NoSchedule` and labelled
`modelreg.dev/node=real`: a Pod lands on it only when it asks to, so tests
written for the kwok node never pull images that exist nowhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from modelreg.devcluster import building, ociarchive, packages, pki, processes

NODE_NAME = "modelreg-real-0"
LABEL = ("modelreg.dev/node", "real")
NETWORK = "modelreg-real-node"
BRIDGE = "mrnode0"
POD_SUBNET = "10.231.0.0/24"  # away from podman's 10.88/16 and 10.89.x defaults and kwok's fake 10.244/16
CNI_BIN = Path("/usr/lib/cni")
RUNC = Path("/usr/sbin/runc")
# Host-wide, as there is one real node per host: the lock naming the cluster that
# owns it, and containerd's sockets (a path under a pytest tmp dir outgrows the
# 108 bytes a unix socket path may have).
RUN_DIR = Path("/run/modelreg/real-node")
LOCK = RUN_DIR / "owner"
CONTAINERD_ADDRESS = RUN_DIR / "containerd.sock"
# kube-proxy in nftables mode keeps all its rules in one table per IP family.
PROXY_TABLES = (("ip", "kube-proxy"), ("ip6", "kube-proxy"))
PROXY_USER = "system:kube-proxy"
# The kubelet's root holds sockets too (pod-resources, plugins), so it cannot live there either.
KUBELET_ROOT = Path("/var/lib/modelreg/real-node/kubelet")

# What the kubelet rewrites (it refuses to start under protectKernelDefaults
# unless they already hold its values), and what the bridge plugin turns on.
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
)
# Host paths the kubelet or containerd write to whatever their configured roots.
HOST_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/var/lib/cni",
    "/run/netns",
)

Log = Callable[[str], None]
Launch = Callable[[str, Sequence[str | os.PathLike[str]]], processes.Process]


class NodeError(RuntimeError):
    """The real node could not be started or found."""


@dataclass(frozen=True)
class HostRecord:
    """The host as `up` found it, so `down` puts it back."""

    cluster: str
    node_ip: str
    sysctls: dict[str, str]
    existed: dict[str, bool]
    netns_bind: bool = False  # `up` made /run/netns a mount point of its own


def node_dir(cluster_dir: Path) -> Path:
    return cluster_dir / "node"


def up(
    cluster_dir: Path,
    *,
    server: str,
    kubectl: Callable[..., str],
    launch: Launch,
    log: Log = building.say,
) -> None:
    """Start containerd and the kubelet for a cluster whose API server runs; return once the node is Ready.

    `kubectl(*args)` runs kubectl as the cluster admin; `launch(name, argv)`
    starts a background process the cluster remembers (and `down` stops).
    """
    packages.ensure_packages([packages.REAL_NODE], log=log)
    kubelet = building.ensure_kubelet(log=log)
    kube_proxy = building.ensure_kube_proxy(log=log)
    pause = ociarchive.pause_archive(log=log)
    _take_lock(cluster_dir)
    d = node_dir(cluster_dir)
    d.mkdir(parents=True, exist_ok=True)
    record = HostRecord(
        cluster=str(cluster_dir),
        node_ip=node_ip(),
        sysctls={k: _read_sysctl(k) for k in SYSCTLS},
        existed={p: os.path.lexists(p) for p in HOST_PATHS},
        netns_bind=_prepare_netns_dir(),
    )
    (d / "host.json").write_text(json.dumps(asdict(record), indent=2))

    pki_dir = cluster_dir / "pki"
    client, serving = pki.issue_node_pair(pki_dir, node=NODE_NAME, ip=record.node_ip)
    _write_kubeconfig(d / "kubeconfig", server=server, ca=pki_dir / "ca.crt", pair=client)
    (d / "rbac.json").write_text(json.dumps(_rbac()))
    kubectl("apply", "-f", str(d / "rbac.json"))

    started = time.monotonic()
    address = CONTAINERD_ADDRESS
    (d / "containerd").mkdir(exist_ok=True)
    (d / "containerd" / "config.toml").write_text(_containerd_config(d, address))
    (d / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
    (d / "cni" / "net.d" / "10-modelreg.conflist").write_text(json.dumps(_cni_conflist(d), indent=2))
    containerd = launch("containerd", ["containerd", f"--config={d / 'containerd' / 'config.toml'}"])
    _wait_containerd(address, containerd)
    ociarchive.import_image(pause, address=address)
    log(f"[node] containerd ready, pause image imported ({time.monotonic() - started:.1f}s)")

    (d / "kubelet-config.json").write_text(
        json.dumps(_kubelet_config(d, address=address, ip=record.node_ip, ca=pki_dir / "ca.crt", serving=serving))
    )
    kubelet_proc = launch(
        "kubelet",
        [
            kubelet,
            f"--config={d / 'kubelet-config.json'}",
            f"--kubeconfig={d / 'kubeconfig'}",
            f"--root-dir={KUBELET_ROOT}",
            f"--cert-dir={d / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={record.node_ip}",
            f"--node-labels={LABEL[0]}={LABEL[1]}",
            "--v=1",
        ],
    )
    _wait_ready(kubectl, [containerd, kubelet_proc])

    proxy_pair = pki.issue_client_pair(pki_dir, name="kube-proxy-client", user=PROXY_USER)
    _write_kubeconfig(d / "kube-proxy.kubeconfig", server=server, ca=pki_dir / "ca.crt", pair=proxy_pair)
    healthz = f"127.0.0.1:{processes.free_port()}"
    config = _kube_proxy_config(
        d / "kube-proxy.kubeconfig", healthz=healthz, metrics=f"127.0.0.1:{processes.free_port()}"
    )
    (d / "kube-proxy-config.json").write_text(json.dumps(config, indent=2))
    proxy_started = time.monotonic()
    proxy = launch("kube-proxy", [kube_proxy, f"--config={d / 'kube-proxy-config.json'}", "--v=1"])
    _wait_proxy_healthy(healthz, proxy)
    log(f"[node] kube-proxy (nftables) synced ({time.monotonic() - proxy_started:.1f}s)")


def down(cluster_dir: Path, *, kubectl: Callable[..., str] | None, procs: dict[str, processes.Process]) -> None:
    """Stop the node and undo its changes to the host.

    With a live API server (`kubectl` given) the node's Pods are deleted first,
    so the kubelet tears them down the normal way (volumes unmounted, CNI DEL);
    whatever is left after that is swept by force.
    """
    d = node_dir(cluster_dir)
    try:
        record = HostRecord(**json.loads((d / "host.json").read_text()))
    except OSError:
        _release_lock(cluster_dir)  # taken by an `up` that failed before touching the host
        return
    kubelet, containerd, proxy = procs.get("kubelet"), procs.get("containerd"), procs.get("kube-proxy")
    if kubectl is not None and kubelet is not None and kubelet.alive():
        _drain(kubectl)
    for proc in (proxy, kubelet, containerd):
        if proc is not None:
            processes.stop(proc)
    # kube-proxy leaves its rules in place when it stops (so a restart does not cut
    # traffic); with it gone for good they must go, or ClusterIPs keep routing.
    for family, table in PROXY_TABLES:
        subprocess.run(["nft", "delete", "table", family, table], capture_output=True)
    address = str(CONTAINERD_ADDRESS)
    _kill_matching(lambda argv: "containerd-shim" in argv[0] and address in argv)
    _kill_kubepods()
    ours = our_netns()
    host_dirs = [p for p in ("/var/lib/kubelet", "/run/containerd") if not record.existed[p]]
    _unmount_under([str(d), str(KUBELET_ROOT), *host_dirs, *ours])
    for ns in ours:
        with contextlib.suppress(OSError):
            os.unlink(ns)
    _remove_kubepods_cgroups()
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
    _remove_masquerade_rules()
    # libcni's cache of what a Pod's CNI ADD returned; DEL removes it, a killed Pod leaves it.
    # containerd also runs a loopback network per sandbox, cached under the same sandbox id.
    results = Path("/var/lib/cni/results")
    for f in results.glob(f"{NETWORK}-*-eth0"):
        sandbox = f.name.removeprefix(f"{NETWORK}-").removesuffix("-eth0")
        f.unlink(missing_ok=True)
        (results / f"cni-loopback-{sandbox}-lo").unlink(missing_ok=True)
    _restore_host_paths(record)
    for key, value in record.sysctls.items():
        if _read_sysctl(key) != value:
            Path("/proc/sys", key).write_text(value)
    _release_lock(cluster_dir)


def describe(kubectl: Callable[..., str]) -> str:
    """One status line for `modelreg devcluster status`."""
    ready = kubectl(
        "get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False
    )
    return f"real node {NODE_NAME}: Ready={ready.strip() or 'unknown'} (label {LABEL[0]}={LABEL[1]})"


def _take_lock(cluster_dir: Path) -> None:
    """One real node per host: containerd and the kubelet share host paths whatever their roots."""
    with contextlib.suppress(OSError):
        owner = Path(LOCK.read_text())
        if owner != cluster_dir and (node_dir(owner) / "host.json").exists():
            raise NodeError(
                f"the dev cluster in {owner} runs this host's real node (or died leaving it); "
                f"stop it first: modelreg devcluster --dir {owner} down"
            )
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOCK.write_text(str(cluster_dir))


def _prepare_netns_dir() -> bool:
    """Make /run/netns a shared mount point before containerd creates namespaces in it.

    containerd 1.6 (like podman) bind-mounts /run/netns onto itself when it is not
    a mount point yet. Once, two Pods started together left a namespace mounted
    *under* such a bind mount made between their two sandboxes: invisible by its
    path, so `down` could not remove it. With the mount point in place first, nobody
    makes that bind any more. Returns whether the bind mount is ours.
    """
    netns = "/run/netns"
    if netns in _mount_points():
        return False
    os.makedirs(netns, exist_ok=True)
    for flags in (["--bind", netns, netns], ["--make-shared", netns]):
        proc = subprocess.run(["mount", *flags], capture_output=True, text=True)
        if proc.returncode != 0:
            raise NodeError(f"mount {' '.join(flags)} failed: {proc.stderr.strip()}")
    return True


def _release_lock(cluster_dir: Path) -> None:
    with contextlib.suppress(OSError):
        if LOCK.read_text() == str(cluster_dir):
            shutil.rmtree(RUN_DIR)
            RUN_DIR.parent.rmdir()  # only if empty


def node_ip() -> str:
    """The address of the default route's interface: the kubelet refuses loopback as a node IP."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.254", 9))  # UDP connect sends nothing; it only picks a route
        except OSError as exc:
            raise NodeError(f"no non-loopback IPv4 address for the node: {exc}") from exc
        return str(s.getsockname()[0])


def _read_sysctl(key: str) -> str:
    return Path("/proc/sys", key).read_text().strip()


def _write_kubeconfig(path: Path, *, server: str, ca: Path, pair: pki.KeyPair) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "modelreg-dev", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "node", "user": {"client-certificate": str(pair.cert), "client-key": str(pair.key)}}],
        "contexts": [{"name": "node", "context": {"cluster": "modelreg-dev", "user": "node"}}],
        "current-context": "node",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


def _rbac() -> dict[str, object]:
    """The API server runs without the Node authorizer, so nodes get the system:node role
    through RBAC; and the API server's own kubelet client may use the kubelet API."""

    def binding(name: str, role: str, kind: str, subject: str) -> dict[str, object]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}],
        }

    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            binding("modelreg:nodes", "system:node", "Group", "system:nodes"),
            binding("modelreg:apiserver-kubelet", "system:kubelet-api-admin", "User", pki.KUBELET_CLIENT_USER),
            binding("modelreg:kube-proxy", "system:node-proxier", "User", PROXY_USER),
        ],
    }


def _containerd_config(d: Path, address: Path) -> str:
    c = d / "containerd"
    return f"""\
version = 2
root = "{c / "root"}"
state = "{c / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{address}"
[ttrpc]
  address = "{address}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{c / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{ociarchive.PAUSE_IMAGE}"
  # The VM lacks CAP_SYS_RESOURCE, so runc cannot lower oom_score_adj to the
  # kubelet's -998 and every sandbox would fail; this clamps it to ours (0).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{RUNC}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{d / "cni" / "net.d"}"
    max_conf_num = 1
"""


def _cni_conflist(d: Path) -> dict[str, object]:
    return {
        "cniVersion": "0.4.0",
        "name": NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(d / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _kubelet_config(d: Path, *, address: Path, ip: str, ca: Path, serving: pki.KeyPair) -> dict[str, object]:
    endpoint = f"unix://{address}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # containerd 1.6 cannot tell the kubelet its cgroup driver, and this VM has cgroup v1.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": endpoint,
        "imageServiceEndpoint": endpoint,
        "podLogsDir": str(d / "pod-logs"),
        "address": ip,
        "port": processes.free_port(),
        "readOnlyPort": 0,
        "healthzPort": 0,
        "tlsCertFile": str(serving.cert),
        "tlsPrivateKeyFile": str(serving.key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        # The chains are for kube-proxy, which does not run here; without them the
        # kubelet leaves iptables alone.
        "makeIPTablesUtilChains": False,
        "registerWithTaints": [{"key": LABEL[0], "value": LABEL[1], "effect": "NoSchedule"}],
        "clusterDomain": "cluster.local",
        "resolvConf": "/etc/resolv.conf",
        # A shared dev VM's disk may be fuller than a node's defaults allow.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
    }


def _kube_proxy_config(kubeconfig: Path, *, healthz: str, metrics: str) -> dict[str, object]:
    """nftables mode: its rules live in tables of their own (`down` deletes two tables
    instead of hunting KUBE-* chains), and the kernel (>= 5.13) and nft (>= 1.0.1) suffice.
    Traffic to a ClusterIP without endpoints is rejected there, not sent out the default route."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "nftables",
        # Traffic from outside the pod subnet (the host, the VM's network) is masqueraded.
        "clusterCIDR": POD_SUBNET,
        "detectLocalMode": "ClusterCIDR",
        "healthzBindAddress": healthz,
        "metricsBindAddress": metrics,
        # Its default -999 needs CAP_SYS_RESOURCE, which the VM lacks.
        "oomScoreAdj": 0,
        # Zero leaves the host's conntrack sysctls alone (by default kube-proxy raises
        # nf_conntrack_max and rewrites two TCP timeouts).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


def _wait_proxy_healthy(healthz: str, proc: processes.Process, timeout: float = 60) -> None:
    """kube-proxy's /healthz answers 200 once it has written its rules for the current Services."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise NodeError(f"kube-proxy exited during start:\n{processes.tail(proc.log)}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://{healthz}/healthz", timeout=5) as resp:
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise NodeError(f"kube-proxy was not healthy within {timeout:.0f}s:\n{processes.tail(proc.log)}")


def _wait_containerd(address: Path, proc: processes.Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise NodeError(f"containerd exited during start:\n{processes.tail(proc.log)}")
        if address.exists():
            check = subprocess.run(["ctr", f"--address={address}", "version"], capture_output=True, timeout=10)
            if check.returncode == 0:
                return
        time.sleep(0.1)
    raise NodeError(f"containerd did not answer on {address} within {timeout:.0f}s")


def _wait_ready(kubectl: Callable[..., str], procs: list[processes.Process], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise NodeError(f"{p.name} exited during start:\n{processes.tail(p.log)}")
        ready = kubectl(
            "get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False
        )
        if ready.strip() == "True":
            return
        time.sleep(0.3)
    raise NodeError(f"node {NODE_NAME} was not Ready within {timeout:.0f}s:\n{processes.tail(procs[-1].log)}")


def _drain(kubectl: Callable[..., str], timeout: float = 40) -> None:
    """Delete the node's Pods and wait until the kubelet has torn them down."""
    selector = f"--field-selector=spec.nodeName={NODE_NAME}"
    kubectl("delete", "pods", "--all-namespaces", selector, "--grace-period=1", "--wait=false", check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not kubectl("get", "pods", "--all-namespaces", selector, "-o", "name", check=False).strip():
            return
        time.sleep(0.3)


def _kill_matching(match: Callable[[list[str]], bool]) -> None:
    """SIGKILL the processes whose command line `match`es (the containerd shims, which run in their own group)."""
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (pid_dir / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if argv and match(argv):
                os.kill(int(pid_dir.name), signal.SIGKILL)


def _kubepods_dirs() -> list[Path]:
    return [p for p in Path("/sys/fs/cgroup").glob("*/kubepods") if p.is_dir()]


def _kill_kubepods(timeout: float = 10) -> None:
    """Containers the kubelet did not stop: their processes still sit in the kubepods cgroups."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = {
            int(pid)
            for top in _kubepods_dirs()
            for procs in top.rglob("cgroup.procs")
            for pid in procs.read_text().split()
        }
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _remove_kubepods_cgroups() -> None:
    for top in _kubepods_dirs():
        for sub in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def our_netns() -> list[str]:
    """Network namespaces holding an address from this node's pod subnet (podman's live beside them)."""
    prefix = POD_SUBNET.rsplit(".", 1)[0] + "."
    found = []
    for ns in Path("/run/netns").glob("*") if Path("/run/netns").is_dir() else []:
        out = subprocess.run(["ip", "-n", ns.name, "-o", "-4", "addr", "show"], capture_output=True, text=True)
        if f"inet {prefix}" in out.stdout:
            found.append(str(ns))
    return found


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        raw = line.split()[4]
        points.append(raw.encode().decode("unicode_escape"))  # \040 and friends
    return points


def _unmount_under(prefixes: Sequence[str]) -> None:
    """Lazily unmount every mount at or below `prefixes`, deepest first, until none is left."""
    libc = ctypes.CDLL(None, use_errno=True)
    mnt_detach = 2
    for _ in range(10):
        targets = [m for m in _mount_points() if any(m == p or m.startswith(p.rstrip("/") + "/") for p in prefixes)]
        if not targets:
            return
        for m in sorted(set(targets), key=lambda m: -m.count("/")):
            libc.umount2(m.encode(), mnt_detach)


def _remove_masquerade_rules() -> None:
    """The bridge plugin's per-Pod NAT rules, found by the network name in their comment.

    CNI DEL removes them when the kubelet stops a Pod; this sweeps up after a
    Pod that was killed instead. Other CNI users' rules (podman's) stay.
    """
    saved = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    chains = set()
    for line in saved.splitlines():
        if line.startswith("-A ") and f'\\"{NETWORK}\\"' in line:
            args = shlex.split(line)
            subprocess.run(["iptables", "-t", "nat", "-D", *args[1:]], capture_output=True)
            if "-j" in args:
                chains.add(args[args.index("-j") + 1])
    for chain in sorted(c for c in chains if c.startswith("CNI-")):
        subprocess.run(["iptables", "-t", "nat", "-F", chain], capture_output=True)
        subprocess.run(["iptables", "-t", "nat", "-X", chain], capture_output=True)


def _restore_host_paths(record: HostRecord) -> None:
    shutil.rmtree(KUBELET_ROOT.parent, ignore_errors=True)
    with contextlib.suppress(OSError):
        KUBELET_ROOT.parent.parent.rmdir()  # /var/lib/modelreg, only if empty
    for path in ("/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/run/containerd"):
        if not record.existed[path]:
            shutil.rmtree(path, ignore_errors=True)
    # Shared with other CNI users (podman): remove only what is empty and was not there.
    for path in ("/var/lib/cni/results", "/var/lib/cni"):
        if not record.existed["/var/lib/cni"]:
            with contextlib.suppress(OSError):
                os.rmdir(path)
    # Shared with podman too: undo the bind mount and the folder only when nothing is left in it.
    netns = Path("/run/netns")
    if netns.is_dir() and not any(netns.iterdir()):
        if record.netns_bind:
            _unmount_under([str(netns)])
        if not record.existed[str(netns)]:
            with contextlib.suppress(OSError):
                netns.rmdir()
