"""The operator's fixed cost: its resident memory (RSS) on the local control plane
with no objects and with 4 models, next to the targets (issue 11: ≤ 80 MiB with
no objects, ≤ 100 MiB with 4 models), and where that memory goes:

1. the operator as `modelreg run` starts it (a subprocess, watching one
   namespace, metrics served so the bench knows when it has reconciled):
   RSS and peak RSS once it is up with no objects, then once 4 models (a
   verified version each) are reconciled, then for a fresh operator started
   with those 4 models already there;
2. in a fresh interpreter, the RSS after each import step of that process
   (Python, pydantic and our types, the Kubernetes client, Kopf, our API
   calls, boto3 and an S3 client), and tracemalloc's view of the
   Python allocations of the whole start-up, summed by package. tracemalloc
   sees only Python's allocator, not C libraries' own (OpenSSL, the code of
   extension modules), which is why its total is below the RSS.

With --tracemalloc the first operator traces its allocations from the start
(PYTHONTRACEMALLOC=1) and the bench prints what its Python heap holds once up
with no objects and once the 4 models are reconciled (top 20 by line and by
file, `running._profile_on_signal`); its RSS rows are then inflated by the tracing.

Run: make bench   (or .venv/bin/python bench/operator_memory.py [--tracemalloc])
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.observing import metric
from modelreg import artifacts
from modelreg.api.crds import write_crds
from modelreg.devcluster import building, cluster, processes
from modelreg.running import PROFILE_ENV

NAMESPACE = "bench-memory"
BUCKET = "modelreg-bench-memory"
MODELS = 4
TARGET_EMPTY, TARGET_FOUR = 80, 100  # MiB
REPO = Path(__file__).resolve().parents[1]


def status_mib(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) of a process, MiB, from /proc."""
    text = Path(f"/proc/{pid}/status").read_text()
    rss, hwm = (int(re.search(rf"{k}:\s+(\d+)", text).group(1)) / 1024 for k in ("VmRSS", "VmHWM"))  # type: ignore[union-attr]
    return rss, hwm


def wait_for(probe: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


class Operator:
    def __init__(self, env: dict[str, str], log: Path, endpoint: str, *extra: str) -> None:
        self.metrics_port, self.liveness_port = processes.free_port(), processes.free_port()
        argv = [sys.executable, "-m", "modelreg", "run", "--namespace", NAMESPACE,
                "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
                "--metrics-bind-address", f"127.0.0.1:{self.metrics_port}",
                "--allow-insecure-storage", "--storage-endpoint", endpoint, *extra]  # fmt: skip
        self.proc = processes.start("operator", argv, log=log, env=env, tie_to_parent=True)
        wait_for(self.healthy, "the operator's liveness endpoint")

    def healthy(self) -> bool:
        if not self.proc.alive():
            raise RuntimeError(processes.tail(self.proc.log))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metric(self, name: str) -> float:
        return metric(self.metrics_port, name)

    def reconciles(self) -> float:
        return self.metric("controller_runtime_reconcile_total")

    def verifications(self) -> float:
        return self.metric("modelreg_artifact_verification_duration_seconds_count")

    def settled(self) -> tuple[float, float]:
        """RSS once nothing has been reconciled for two seconds (the first resync is a minute away)."""
        last, quiet_since = -1.0, time.monotonic()
        while time.monotonic() - quiet_since < 2.0:
            now = self.reconciles()
            if now != last:
                last, quiet_since = now, time.monotonic()
            time.sleep(0.2)
        return status_mib(self.proc.pid)

    def stop(self) -> None:
        processes.stop(self.proc)

    def held(self, profile: Path) -> str:
        """What the traced heap holds now (SIGUSR1; the operator writes `profile`)."""
        profile.unlink(missing_ok=True)
        os.kill(self.proc.pid, signal.SIGUSR1)
        wait_for(profile.exists, "the operator's tracemalloc profile")
        return profile.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracemalloc", action="store_true", help="trace the first operator; print what it holds")
    args = parser.parse_args()
    bins = building.ensure_binaries()
    with tempfile.TemporaryDirectory(prefix="modelreg-bench-memory-") as tmp:
        state = cluster.up(Path(tmp) / "cluster", bins=bins, with_registry=False, tie_to_parent=True)
        try:
            measure_operator(state, bins, Path(tmp), trace=args.tracemalloc)
        finally:
            cluster.down(Path(tmp) / "cluster")
    profile_startup()


def measure_operator(state: cluster.ClusterState, bins: building.Binaries, tmp: Path, *, trace: bool = False) -> None:
    def kubectl(*args: str, input: str | None = None) -> str:
        out = subprocess.run([str(bins.kubectl), f"--kubeconfig={state.kubeconfig}", *args], input=input,
                             capture_output=True, text=True, check=False)  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr}")
        return out.stdout

    crds = tmp / "crds"
    write_crds(crds)
    kubectl("apply", "--server-side", "-f", str(crds))
    kubectl("wait", "--for=condition=Established", "-f", str(crds))
    kubectl("create", "namespace", NAMESPACE)
    s3c = state.s3
    s3: Any = artifacts.new_s3_client(endpoint=s3c.endpoint, region=s3c.region, access_key=s3c.access_key,
                                      secret_key=s3c.secret_key)  # fmt: skip
    artifacts.ensure_bucket(s3, BUCKET)
    env = os.environ | state.env() | {"PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}"}

    rows: list[tuple[str, float, float, int]] = []
    profile, held = tmp / "held", []
    traced = env | {"PYTHONTRACEMALLOC": "1", PROFILE_ENV: str(profile)} if trace else env
    first = Operator(traced, tmp / "operator-1.log", s3c.endpoint)
    try:
        rows.append(("started, no objects" + " (traced)" * trace, *first.settled(), TARGET_EMPTY))
        if trace:
            held.append(("started, no objects", first.held(profile)))
        for i in range(MODELS):
            data = f"bench model {i}".encode() * 1000
            s3.put_object(Bucket=BUCKET, Key=f"m{i}/model.bin", Body=data, ChecksumAlgorithm="SHA256")
            objects = [
                {"apiVersion": "modelreg.dev/v1alpha1", "kind": "RegisteredModel", "metadata": {"name": f"m{i}"},
                 "spec": {"promotion": {"compareToProduction": {"metric": "accuracy"}}}},
                {"apiVersion": "modelreg.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": f"m{i}-1"},
                 "spec": {"model": f"m{i}", "version": "1", "metrics": {"accuracy": 0.9},
                          "artifact": {"uri": f"s3://{BUCKET}/m{i}/model.bin",
                                       "sha256": hashlib.sha256(data).hexdigest()}}},
            ]  # fmt: skip
            kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                            "items": objects}))  # fmt: skip
        kubectl("wait", "-n", NAMESPACE, "--for=condition=Ready", "--timeout=120s", "modelversions", "--all")
        rows.append((f"same process, {MODELS} models reconciled" + " (traced)" * trace, *first.settled(), TARGET_FOUR))
        if trace:
            held.append((f"{MODELS} models reconciled", first.held(profile)))
    finally:
        first.stop()
    second = Operator(env, tmp / "operator-2.log", s3c.endpoint)
    try:
        wait_for(lambda: second.reconciles() >= MODELS, f"the {MODELS} models reconciled after a restart")
        rows.append((f"started with {MODELS} models", *second.settled(), TARGET_FOUR))
    finally:
        second.stop()
    # A restarted operator builds its S3 client for its first check only, and verifiedAt says
    # the artifacts were checked a moment ago: with re-checks due within seconds, that client too.
    third = Operator(env, tmp / "operator-3.log", s3c.endpoint, "--recheck-seconds", "3",
                     "--recheck-undeployed-seconds", "3")  # fmt: skip
    try:
        wait_for(lambda: third.verifications() >= MODELS, f"the {MODELS} artifacts re-checked")
        rows.append(("the same, after its first re-checks", *status_mib(third.proc.pid), TARGET_FOUR))
    finally:
        third.stop()
    print("operator RSS (MiB), `modelreg run` on the local control plane:")
    for what, rss, peak, target in rows:
        print(f"  {what:<36} RSS {rss:6.1f}   peak {peak:6.1f}   target <= {target}   ratio {rss / target:.2f}x")
    for what, text in held:
        print(f"what the first operator's Python heap holds, {what}:")
        print("  " + text.replace("\n", "\n  ").rstrip())


STARTUP = r"""
import re, sys, tracemalloc
TRACE = sys.argv[1:] == ["trace"]
if TRACE:
    tracemalloc.start()
def rss():
    return int(re.search(r'VmRSS:\s+(\d+)', open('/proc/self/status').read()).group(1)) / 1024
def traced():
    return tracemalloc.get_traced_memory()[0] / 2**20 if TRACE else 0.0
steps = []
def step(name, fn):
    before, before_traced = rss(), traced()
    fn()
    steps.append((name, rss() - before, traced() - before_traced))
step("pydantic + modelreg.api types", lambda: __import__("modelreg.api.modelversion"))
step("kubernetes client (ApiClient)", lambda: __import__("kubernetes.client.api_client"))
step("kopf (+ aiohttp)", lambda: __import__("kopf"))
# No typed API class (CoreV1Api …): those would load ~330 model classes, ~32 MiB (kube.py's docstring).
step("modelreg.kube (calls by path, JSON)", lambda: __import__("modelreg.kube"))
step("the rest of modelreg run", lambda: __import__("modelreg.running"))
def s3():
    from modelreg.verifying import Target, Verifier
    global v
    v = Verifier()
    v._client(Target(endpoint="http://127.0.0.1:9", region="us-east-1", access_key="a", secret_key="b"))
step("boto3 + first S3 client", s3)
def s3_more():
    from modelreg.verifying import Target
    for i in range(3):
        v._client(Target(endpoint="http://127.0.0.1:9", region="us-east-1", access_key="a", secret_key=str(i)))
step("3 more S3 clients (other credentials)", s3_more)
if not TRACE:
    total = rss()
    print("start-up, step by step in a fresh interpreter (MiB): RSS added, then Python allocations (tracemalloc)")
    print(f"  {'python itself':<38} {total - sum(d for _, d, _ in steps):6.1f}")
    for name, mib, _ in steps:
        print(f"  {name:<38} {mib:6.1f}")
    print(f"  {'total RSS':<38} {total:6.1f}")
    sys.exit(0)
for name, _, mib in steps:
    print(f"  {name:<38} {mib:6.1f} traced")
print(f"  {'total traced':<38} {traced():6.1f}")
snap = tracemalloc.take_snapshot()
by_file = {}
for stat in snap.statistics("filename"):
    path = stat.traceback[0].filename
    if path.startswith("<frozen importlib"):
        key = "modules' code and constants (importlib)"
    else:
        m = re.search(r"site-packages/([^/]+)", path) or re.search(r"/(modelreg)/", path)
        key = m.group(1) if m else ("stdlib" if "python3" in path else path.rsplit("/", 1)[-1])
    by_file[key] = by_file.get(key, 0) + stat.size
print("  the same allocations by where they were made (MiB):")
for key, size in sorted(by_file.items(), key=lambda kv: -kv[1])[:10]:
    print(f"    {key:<40} {size / 2**20:6.1f}")
"""


def profile_startup() -> None:
    env = os.environ | {"PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}"}
    # Two interpreters: tracemalloc's own bookkeeping would inflate the RSS steps.
    for mode in ("rss", "trace"):
        out = subprocess.run([sys.executable, "-c", STARTUP, mode], capture_output=True, text=True, env=env,
                             check=False, timeout=600)  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        print(out.stdout, end="")


if __name__ == "__main__":
    main()
