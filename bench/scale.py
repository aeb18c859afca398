"""How does the operator cope with many versions? Registers MODELS models x 10
versions on the local control plane before the operator starts, then starts it and
prints: the time from its start to every version converged (status observed and at
its asked stage), its RSS (now and peak) and CPU seconds, the CPU seconds the API
server, etcd and S3 spent meanwhile (they share the machine's cores) and the
operator's requests by verb and resource; once settled, the API requests it makes
per idle minute (from the API server's audit log, which records GETs and LISTs of
the kinds the operator reads, and every write, over three idle windows) with its CPU
seconds in each (the third is the steady state: before it, a resync has re-planned
each model once since its last write); then time and RSS per version.
Artifact re-checks (one HEAD per version, about every 300 s for a deployed version,
Staging or Production as two of each model's ten are, and every 3600 s for one
that is not) fall into the idle windows when they come due there: the deployed
versions' first come 240 to 360 s after their verification. `--recheck-seconds 30` re-checks
every version every 30 s instead: the run then prints the re-checks per idle
minute and the CPU each costs, and from that what the operator's default periods
cost at this size in steady state.

Models are registry-only (no spec.serving): the figure is the operator's own cost
per version (parse, verify the artifact by one HEAD against the store checksum,
plan, write status), not the cluster's cost of running Pods.

Run: make bench-scale                       (100, 500 and 1,000 models)
     .venv/bin/python bench/scale.py 100    (one size; --idle-seconds to shorten)
     .venv/bin/python bench/scale.py 1000 --tracemalloc /tmp/held
        (also writes what the operator's Python heap holds after the idle window,
        top 20 by line and by file, to /tmp/held-1000; tracing inflates RSS and
        CPU, so take the RSS figures from a run without it)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import watch
from kubernetes.client import CustomObjectsApi

from bench.observing import metric
from modelreg import artifacts, kube
from modelreg.api.crds import write_crds
from modelreg.devcluster import building, cluster, processes
from modelreg.running import PROFILE_ENV

VERSIONS = 10
DEPLOYED = 2  # of them per model: version 1 asks for Production, version 2 for Staging
NAMESPACE = "scale"
BUCKET = "modelreg-bench"
OPERATOR_AGENTS = (kube.USER_AGENT, "kopf")


def manifests(models: int, sha: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in range(models):
        model = f"m{m:04d}"
        out.append({"apiVersion": "modelreg.dev/v1alpha1", "kind": "RegisteredModel",
                    "metadata": {"name": model}, "spec": {}})  # fmt: skip
        for v in range(1, VERSIONS + 1):
            stage = "Production" if v == 1 else "Staging" if v == 2 else "Development"
            spec = {"model": model, "version": str(v), "stage": stage, "metrics": {"accuracy": 0.9},
                    "artifact": {"uri": f"s3://{BUCKET}/model.bin", "sha256": sha}}  # fmt: skip
            out.append({"apiVersion": "modelreg.dev/v1alpha1", "kind": "ModelVersion",
                        "metadata": {"name": f"{model}-{v}"}, "spec": spec})  # fmt: skip
    return out


def kubectl(bins: building.Binaries, state: cluster.ClusterState, *args: str, input: str | None = None) -> str:
    out = subprocess.run([str(bins.kubectl), f"--kubeconfig={state.kubeconfig}", *args], input=input,
                         capture_output=True, text=True, check=False)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr}")
    return out.stdout


def proc_stats(pid: int) -> tuple[float, float, float]:
    """(RSS MiB, peak RSS MiB, CPU seconds) of a process, from /proc."""
    rss = peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, peak, cpu


def operator_requests(audit_log: str, *, after: int, until: int | None = None,
                      by: str = "verb") -> dict[str, int]:  # fmt: skip
    """Requests by the operator (its client and Kopf's) between bytes `after` and
    `until` of the audit log, by verb (`by="resource"`: by verb and resource,
    subresource); watches are not recorded."""
    counts: dict[str, int] = {}
    with open(audit_log, "rb") as f:
        f.seek(after)
        position = after
        for line in f:
            position += len(line)
            if until is not None and position > until:
                break
            entry = json.loads(line)
            if entry.get("stage") == "ResponseComplete" and str(entry.get("userAgent", "")).startswith(OPERATOR_AGENTS):
                key = entry["verb"]
                if by == "resource":
                    ref = entry.get("objectRef") or {}
                    key += " " + "/".join(filter(None, (ref.get("resource"), ref.get("subresource"))))
                counts[key] = counts.get(key, 0) + 1
    return counts


CLUSTER_PROCESSES = ("kube-apiserver", "etcd", "s3")


def verifications(port: int) -> float:
    """Artifact checks the operator has finished, from its metrics."""
    return metric(port, "modelreg_artifact_verification_duration_seconds_count")


def cluster_cpu(state: cluster.ClusterState) -> dict[str, float]:
    """CPU seconds so far of the control plane's processes that serve the operator."""
    return {name: proc_stats(p.pid)[2] for name, p in state.processes.items() if name in CLUSTER_PROCESSES}


def _done(item: dict[str, Any]) -> bool:
    """A version whose status describes its spec and shows its asked stage."""
    status = item.get("status") or {}
    return bool(status.get("observedGeneration") == item["metadata"].get("generation")
                and status.get("stage") == item["spec"]["stage"])  # fmt: skip


class Convergence:
    """How many versions have converged, followed by a watch (one LIST, then events):
    polling with a LIST of every version each second costs the API server, which
    shares the cores with the operator, as much as a good part of the operator's work."""

    def __init__(self, api: CustomObjectsApi) -> None:
        self.api = api
        self.done: dict[str, bool] = {}
        self.error: BaseException | None = None
        listed = api.list_namespaced_custom_object("modelreg.dev", "v1alpha1", NAMESPACE, "modelversions")
        for item in listed.get("items", []):
            self.done[item["metadata"]["name"]] = _done(item)
        self._version = listed["metadata"]["resourceVersion"]
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        try:
            stream = watch.Watch().stream(self.api.list_namespaced_custom_object, "modelreg.dev", "v1alpha1",
                                          NAMESPACE, "modelversions", resource_version=self._version,
                                          timeout_seconds=3600)  # fmt: skip
            for event in stream:
                item = event["object"]
                if event["type"] in ("ADDED", "MODIFIED"):
                    self.done[item["metadata"]["name"]] = _done(item)
        except BaseException as exc:  # shown by `count`
            self.error = exc

    def count(self) -> int:
        if self.error is not None:
            raise RuntimeError(f"the watch of versions failed: {self.error!r}")
        return sum(self.done.values())


def run(models: int, *, idle_seconds: float, timeout: float, keep_log: str | None = None,
        operator_args: tuple[str, ...] = (), tracemalloc: str | None = None) -> dict[str, float]:  # fmt: skip
    bins = building.ensure_binaries()
    with tempfile.TemporaryDirectory(prefix="modelreg-scale-") as tmp:
        state = cluster.up(Path(tmp) / "cluster", bins=bins, with_registry=False, tie_to_parent=True,
                           log=lambda *_: None)  # fmt: skip
        try:
            return _measure(bins, state, Path(tmp), models, idle_seconds=idle_seconds, timeout=timeout,
                            keep_log=keep_log, operator_args=operator_args, tracemalloc=tracemalloc)  # fmt: skip
        finally:
            cluster.down(Path(tmp) / "cluster")


def _measure(bins: building.Binaries, state: cluster.ClusterState, tmp: Path, models: int, *,
             idle_seconds: float, timeout: float, keep_log: str | None,
             operator_args: tuple[str, ...], tracemalloc: str | None) -> dict[str, float]:  # fmt: skip
    crds = tmp / "crds"
    write_crds(crds)
    kubectl(bins, state, "apply", "--server-side", "-f", str(crds))
    kubectl(bins, state, "wait", "--for=condition=Established", "-f", str(crds))
    kubectl(bins, state, "create", "namespace", NAMESPACE)
    c = state.s3
    s3: Any = artifacts.new_s3_client(endpoint=c.endpoint, region=c.region, access_key=c.access_key,
                                      secret_key=c.secret_key)  # fmt: skip
    data = b"benchmark model" * 1000
    artifacts.ensure_bucket(s3, BUCKET)
    s3.put_object(Bucket=BUCKET, Key="model.bin", Body=data, ChecksumAlgorithm="SHA256")
    items = manifests(models, hashlib.sha256(data).hexdigest())
    for i in range(0, len(items), 1000):
        batch = {"apiVersion": "v1", "kind": "List", "items": items[i : i + 1000]}
        kubectl(bins, state, "create", "-n", NAMESPACE, "-f", "-", input=json.dumps(batch))
    expected = models * VERSIONS
    api = CustomObjectsApi(kube.new_client(state.kubeconfig, user_agent="bench"))

    metrics_port = processes.free_port()
    argv = [sys.executable, "-m", "modelreg", "run", "--namespace", NAMESPACE,
            "--metrics-bind-address", f"127.0.0.1:{metrics_port}", *operator_args]  # fmt: skip
    env = os.environ | state.env()
    if tracemalloc:
        profile = Path(f"{tracemalloc}-{models}")
        profile.unlink(missing_ok=True)
        env |= {"PYTHONTRACEMALLOC": "1", PROFILE_ENV: str(profile)}
    convergence = Convergence(api)
    time.sleep(1.5)  # the audit log is written in batches of up to 1 s
    start_offset = os.path.getsize(state.audit_log)
    cpu_at_start = cluster_cpu(state)
    started = time.monotonic()
    proc = processes.start("operator", argv, log=tmp / "operator.log", env=env, tie_to_parent=True)
    try:
        while (done := convergence.count()) < expected:
            if not proc.alive():
                raise RuntimeError(processes.tail(proc.log))
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{done} of {expected} versions converged in {timeout:.0f}s")
            time.sleep(0.2)
        converge = time.monotonic() - started
        rss, peak, cpu = proc_stats(proc.pid)
        cpu_at_converged = cluster_cpu(state)
        # Settle: the last reconciles, artifact checks, Events; then an idle window.
        time.sleep(10)
        time.sleep(1.5)  # the audit log is written in batches of up to 1 s
        offset = os.path.getsize(state.audit_log)
        converge_requests = operator_requests(state.audit_log, after=start_offset, until=offset, by="resource")
        # Three idle windows. A reconcile that wrote is confirmed by the next one: the
        # first resync after each model's last write re-plans it once, in the first
        # window or the second (resyncs are timed from the operator's start). The
        # third shows the steady state, and there the re-checks are counted.
        # The re-checks are counted from the operator's metrics, read outside the windows:
        # serving a scrape of 1,000 models' series costs the operator a few hundred ms.
        idle_cpu = []
        for window in range(3):
            if window == 2:
                checks_before = verifications(metrics_port)
            started_cpu = proc_stats(proc.pid)[2]
            time.sleep(idle_seconds)
            idle_cpu.append(proc_stats(proc.pid)[2] - started_cpu)
        checks_after = verifications(metrics_port)
        time.sleep(1.5)
        idle = operator_requests(state.audit_log, after=offset)
        idle_rss, idle_peak, _ = proc_stats(proc.pid)
        if tracemalloc:
            os.kill(proc.pid, signal.SIGUSR1)
            deadline = time.monotonic() + 300
            while not profile.exists() and time.monotonic() < deadline:
                time.sleep(1.0)
            print(f"what the operator holds ({models} models, traced RSS {idle_rss:.0f} MiB), in {profile}:")
            print(profile.read_text() if profile.exists() else "  (not written in time)")
    finally:
        processes.stop(proc)
    log = Path(proc.log).read_text(errors="replace")
    if keep_log is not None:
        Path(keep_log).mkdir(parents=True, exist_ok=True)
        (Path(keep_log) / f"operator-{models}.log").write_text(log)
    per_minute = 60.0 / idle_seconds
    return {
        "versions": expected,
        "converge_s": converge,
        "rss_mib": max(rss, idle_rss),
        "peak_rss_mib": max(peak, idle_peak),
        "cpu_s": cpu,
        "idle_reads_per_min": (idle.get("get", 0) + idle.get("list", 0)) * per_minute / 3,  # (three windows)
        "idle_writes_per_min": sum(n for v, n in idle.items() if v not in ("get", "list")) * per_minute / 3,
        **{f"idle_cpu_s_per_min {i + 1}": cpu * per_minute for i, cpu in enumerate(idle_cpu)},
        "idle_rechecks_per_min": (checks_after - checks_before) * per_minute,
        "stale_requeues": log.count("changed while it was reconciled"),
        "failed_reconciles": log.count("failed; retrying"),
        # Where the converge time went: CPU of the processes sharing the machine's cores.
        **{f"converge_cpu_{name}": cpu_at_converged[name] - cpu_at_start[name] for name in cpu_at_start},
        # The operator's requests from its start until 10 s after convergence, by verb and resource.
        **{f"requests {k}": float(n) for k, n in sorted(converge_requests.items())},
    }


def report(r: dict[str, float]) -> None:
    n = r["versions"]
    print(f"{n:>6.0f} versions: converged in {r['converge_s']:.1f} s ({r['converge_s'] / n * 1000:.2f} ms/version)"
          f"   RSS {r['rss_mib']:.0f} MiB (peak {r['peak_rss_mib']:.0f}; "
          f"{r['peak_rss_mib'] / n * 1024:.1f} KiB/version)   CPU {r['cpu_s']:.1f} s")  # fmt: skip
    print(f"        idle: {r['idle_reads_per_min']:.0f} API reads/min (GET+LIST; target 0 beyond watches)"
          f"   {r['idle_writes_per_min']:.0f} writes/min   CPU-s/min {r['idle_cpu_s_per_min 3']:.2f}"
          f" (target <= 0.5 at 10,000; the two minutes before, with the re-plan that confirms each model's"
          f" last write: {r['idle_cpu_s_per_min 1']:.2f}, {r['idle_cpu_s_per_min 2']:.2f})")  # fmt: skip
    rechecks = r.get("idle_rechecks_per_min", 0)
    if 0 < rechecks < 200:  # the window's other work would be priced as re-checks
        print(
            f"        re-checks: {rechecks:.0f}/min in the idle window (too few to price them; with"
            " --recheck-seconds 30 every version is re-checked there)"
        )
    elif rechecks >= 200:
        each = r["idle_cpu_s_per_min 3"] / rechecks * 1000  # an upper bound: the window's other work included
        # Versions 1 and 2 of each model are deployed (re-checked every 300 s), the rest are not (3600 s).
        deployed = n * DEPLOYED / VERSIONS
        default = (deployed / 300 + (n - deployed) / 3600) * 60 * each / 1000
        print(
            f"        re-checks: {rechecks:.0f}/min in the idle window, {each:.2f} CPU-ms each; at the default "
            f"periods these {n:.0f} versions would cost {default:.2f} CPU-s/min (target <= 0.5 at 10,000)"
        )
    print(f"        reconciles planned from an outdated read (409, requeued): {r.get('stale_requeues', 0):.0f}"
          f"   failed: {r.get('failed_reconciles', 0):.0f}")  # fmt: skip
    others = "   ".join(f"{k.removeprefix('converge_cpu_')} {v:.1f}" for k, v in r.items()
                        if k.startswith("converge_cpu_"))  # fmt: skip
    print(f"        CPU-s while converging: operator {r['cpu_s']:.1f}   {others}")
    cores = os.cpu_count() or 1
    theirs = sum(v for k, v in r.items() if k.startswith("converge_cpu_"))
    print(
        f"        its floor on {cores} cores (all that CPU spread over them): {(theirs + r['cpu_s']) / cores:.1f} s;"
        f" with an operator that cost nothing: {theirs / cores:.1f} s (converged in {r['converge_s']:.1f} s)"
    )
    requests = "   ".join(f"{k.removeprefix('requests ')} {v:.0f} ({v / n:.2f}/version)" for k, v in r.items()
                          if k.startswith("requests "))  # fmt: skip
    print(f"        operator requests until settled: {requests}")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=int, nargs="*", default=[100, 500, 1000], help="models (x 10 versions)")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="the idle window measured")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up converging after this long")
    parser.add_argument("--tracemalloc", metavar="FILE", help="write the operator's held allocations to FILE-<models>")
    parser.add_argument("--keep-log", metavar="DIR", help="keep the operator's log of each run in DIR")
    parser.add_argument(
        "--recheck-seconds",
        type=float,
        help="re-check every artifact about this often (the operator's defaults, 300 s deployed and 3600 s "
        "not, come due past the idle windows)",
    )
    args = parser.parse_args()
    results = []
    every = str(args.recheck_seconds)
    recheck = ("--recheck-seconds", every, "--recheck-undeployed-seconds", every) if args.recheck_seconds else ()
    for models in args.models:
        results.append(
            run(
                models,
                idle_seconds=args.idle_seconds,
                timeout=args.timeout,
                keep_log=args.keep_log,
                tracemalloc=args.tracemalloc,
                operator_args=recheck,
            )
        )
        report(results[-1])
    if len(results) > 1:
        first, last = results[0], results[-1]
        grow = last["versions"] / first["versions"]
        print(f"growth x{grow:.0f} versions: time x{last['converge_s'] / first['converge_s']:.1f}, "
              f"peak RSS x{last['peak_rss_mib'] / first['peak_rss_mib']:.1f} (linear would be x{grow:.0f} "
              "for time; RSS has a fixed part)")  # fmt: skip


if __name__ == "__main__":
    main()
