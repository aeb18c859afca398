"""Fixtures for end-to-end tests: a real control plane, a real S3 server, a
fresh namespace per test, and the operator as a subprocess scoped to it.

`--cluster` (or MODELREG_TEST_CLUSTER) picks the cluster: `local` (default)
starts the dev cluster built from the Kubernetes sources; `current` uses the
current kubeconfig context; `kind` uses pytest-kind (needs Docker).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelreg import artifacts
from modelreg.devcluster import building, cluster, processes, s3server
from modelreg.devcluster.demo import EXAMPLE_BUCKET, seed_examples
from tests.conftest import unavailable, wait_for
from tests.e2e.invariants import Invariants

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster",
        default=os.environ.get("MODELREG_TEST_CLUSTER", "local"),
        choices=["local", "current", "kind"],
        help="where e2e tests run: the local dev cluster, the current kubeconfig, or kind",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@dataclass
class Cluster:
    kubeconfig: str
    kubectl_path: str
    audit_log: str | None = None
    state: cluster.ClusterState | None = None

    def kubectl(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120) -> str:
        out = self.run(*args, input=input, timeout=timeout)
        if check and out.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def run(self, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    choice = request.config.getoption("--cluster")
    if choice == "current":
        kubeconfig = os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config"))
        kubectl = shutil.which("kubectl")
        if not kubectl or not Path(kubeconfig).exists():
            unavailable("--cluster=current needs kubectl on PATH and a kubeconfig")
        yield Cluster(kubeconfig=kubeconfig, kubectl_path=str(kubectl))
        return
    if choice == "kind":
        try:
            kind_cluster = request.getfixturevalue("kind_cluster")
        except Exception as exc:  # pytest-kind missing, or no Docker
            unavailable(f"--cluster=kind needs pytest-kind and Docker: {exc}")
        yield Cluster(kubeconfig=str(kind_cluster.kubeconfig_path), kubectl_path=str(kind_cluster.kubectl_path))
        return
    try:
        bins = building.ensure_binaries()
        state = cluster.up(tmp_path_factory.mktemp("devcluster"), bins=bins, with_s3=False, tie_to_parent=True)
    except Exception as exc:
        unavailable(f"the local control plane could not start: {exc}")
    try:
        yield Cluster(
            kubeconfig=state.kubeconfig, kubectl_path=str(bins.kubectl), audit_log=state.audit_log, state=state
        )
    finally:
        cluster.down(Path(state.directory))


@dataclass
class S3:
    config: s3server.S3Config
    binary: Path
    process: processes.Process | None = None
    buckets: list[str] = field(default_factory=list)

    def client(self) -> Any:
        return artifacts.new_s3_client(
            endpoint=self.config.endpoint,
            region=self.config.region,
            access_key=self.config.access_key,
            secret_key=self.config.secret_key,
        )

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.config.access_key,
            "AWS_SECRET_ACCESS_KEY": self.config.secret_key,
            "AWS_DEFAULT_REGION": self.config.region,
            "AWS_ENDPOINT_URL_S3": self.config.endpoint,
        }

    def stop(self) -> None:
        if self.process:
            processes.stop(self.process)
            self.process = None

    def start(self) -> None:
        self.process = s3server.start(self.config, binary=self.binary, tie_to_parent=True)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    try:
        bins = building.ensure_binaries()
        server = S3(config=s3server.new_config(tmp_path_factory.mktemp("s3")), binary=bins.s3_server)
        server.start()
    except Exception as exc:
        unavailable(f"the S3 server could not start: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def example_artifacts(s3: S3) -> str:
    """examples/artifacts uploaded to the bucket the example versions name."""
    seed_examples(s3.client(), REPO / "examples" / "artifacts")
    return EXAMPLE_BUCKET


@pytest.fixture(scope="session")
def crds(kube: Cluster) -> Path:
    """The checked-in CRDs and admission policy, installed exactly as users install them."""
    kube.kubectl("apply", "--server-side", "-f", str(CRDS))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRDS))
    kube.kubectl("apply", "--server-side", "-f", str(REPO / "manifests" / "base" / "admission-policy.yaml"))
    return CRDS


@pytest.fixture
def namespace(kube: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@dataclass
class Operator:
    """The operator as a subprocess; tests may restart it."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    process: processes.Process | None = None

    def start(self) -> None:
        self.process = processes.start("operator", self.argv, log=self.log_path, env=self.env, tie_to_parent=True)
        wait_for(self._healthy, timeout=60, what="the operator's liveness endpoint")

    def stop(self) -> None:
        if self.process is not None:
            processes.stop(self.process)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: no shutdown, nothing flushed."""
        if self.process is not None:
            processes.kill(self.process)
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _healthy(self) -> bool:
        assert self.process is not None
        if not self.process.alive():
            pytest.fail(f"the operator exited at start:\n{processes.tail(self.log_path, 60)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False


@pytest.fixture
def operator(
    kube: Cluster, s3: S3, crds: Path, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Operator]:
    """The operator as a subprocess, watching only this test's namespace."""
    port = processes.free_port()
    env = os.environ | s3.env() | {"KUBECONFIG": kube.kubeconfig, "PYTHONUNBUFFERED": "1"}
    # The test S3 server speaks plain http on loopback: allow that, and only that endpoint.
    argv = [sys.executable, "-m", "modelreg", "run", "--namespace", namespace, "--resync-seconds", "3",
            "--liveness", f"http://127.0.0.1:{port}/healthz",
            "--allow-insecure-storage", "--storage-endpoint", s3.config.endpoint]  # fmt: skip
    op = Operator(argv=argv, env=env, log_path=tmp_path / "operator.log", port=port)
    op.start()
    yield op
    op.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"\n--- operator log ({namespace}) ---\n{processes.tail(op.log_path, 80)}")


StartOperator = Callable[..., Operator]


@pytest.fixture
def start_operator(
    kube: Cluster, s3: S3, crds: Path, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StartOperator]:
    """Like the `operator` fixture, with extra flags for `modelreg run`."""
    started: list[Operator] = []

    def start(*extra: str) -> Operator:
        port = processes.free_port()
        env = os.environ | s3.env() | {"KUBECONFIG": kube.kubeconfig, "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "modelreg", "run", "--namespace", namespace, "--resync-seconds", "3",
                "--liveness", f"http://127.0.0.1:{port}/healthz",
                "--allow-insecure-storage", "--storage-endpoint", s3.config.endpoint, *extra]  # fmt: skip
        op = Operator(argv=argv, env=env, log_path=tmp_path / f"operator-{len(started)}.log", port=port)
        op.start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for op in started:
            print(f"\n--- {op.log_path.name} ({namespace}) ---\n{processes.tail(op.log_path, 80)}")


_INVARIANT_FIGURES = pytest.StashKey[list[str]]()


@pytest.fixture
def invariants(kube: Cluster, crds: Path, namespace: str, request: pytest.FixtureRequest) -> Iterator[Invariants]:
    """The serving invariants of model `m`, checked in the background for the whole
    test; a violation fails the test (see pytest_runtest_call). The figures go to
    the session summary. The endpoint must never drop once served: a test that
    takes the model offline on purpose sets `require_endpoint = False` first."""
    checker = Invariants(kubeconfig=kube.kubeconfig, namespace=namespace, model="m", require_endpoint=True).start()
    try:
        yield checker
    finally:
        checker.stop()
        print(checker.report())
        request.config.stash.setdefault(_INVARIANT_FIGURES, []).append(f"{request.node.nodeid}: {checker.summary()}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Judge the invariants as the test's last step, so a violation fails the test
    itself rather than its teardown (a test that failed already keeps its own error)."""
    result = yield
    checker = getattr(item, "funcargs", {}).get("invariants")
    if isinstance(checker, Invariants):
        checker.stop()
        checker.assert_held()
    return result


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    figures = config.stash.get(_INVARIANT_FIGURES, [])
    if figures:
        terminalreporter.section("serving invariants")
        for line in figures:
            terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep
