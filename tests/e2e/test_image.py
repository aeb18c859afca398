"""The operator image, built for real from the repository's Dockerfile (on the
Debian base made here), pushed to a loopback registry, pulled back into a
fresh store as a node would, and run there as a restricted Pod runs it: uid
65532, read-only root file system, no new privileges.

Only the last test needs the control plane (the operator, run from the
image, makes the examples Ready); the others need the registry and the S3
server. On a machine without buildah, podman, skopeo, debootstrap or docker-registry these
tests skip; with CI=true they fail (tests/conftest.py `unavailable`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from modelreg.devcluster import demo, images, processes, registry
from modelreg.fetching import EXIT_CHECKSUM_MISMATCH
from tests.conftest import local_cluster_only, unavailable, wait_for
from tests.e2e.conftest import REPO, S3, Cluster
from tests.e2e.registry import upload


@dataclass(frozen=True)
class Pulled:
    """The image as pulled back from the registry into a store of its own."""

    reference: str
    store: images.Store
    registry: registry.RegistryConfig

    def run(
        self, *args: str, volumes: tuple[tuple[Path, str], ...] = (), env: dict[str, str] | None = None,
        entrypoint: str | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        argv = images.run_argv(self.store, self.reference, args, volumes=volumes, env=env, entrypoint=entrypoint)
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    def remove(self, name: str) -> None:
        subprocess.run(["podman", *self.store.args(), "rm", "--force", "--time=5", name], capture_output=True)


@pytest.fixture(scope="session")
def image_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[registry.RegistryConfig]:
    if registry.find_binary() is None:
        unavailable("the image tests need Debian's docker-registry")
    config = registry.new_config(tmp_path_factory.mktemp("registry"))
    proc = registry.start(config, tie_to_parent=True)
    yield config
    processes.stop(proc)


@pytest.fixture(scope="session")
def operator_image(image_registry: registry.RegistryConfig) -> str:
    if gone := images.missing_tools():
        unavailable(f"building the operator image needs {', '.join(gone)}")
    try:
        return images.ensure_operator_image(registry=image_registry.address)
    except images.ImageError as exc:
        unavailable(f"the operator image could not be built: {exc}")
        raise  # unreachable: unavailable() fails or skips


@pytest.fixture(scope="session")
def pulled(
    operator_image: str, image_registry: registry.RegistryConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pulled]:
    store = images.Store(tmp_path_factory.mktemp("node-store"))
    images.pull(store, operator_image)
    yield Pulled(reference=operator_image, store=store, registry=image_registry)
    subprocess.run(["podman", *store.args(), "rmi", "--all", "--force"], capture_output=True)
    shutil.rmtree(store.path, ignore_errors=True)


def test_the_image_pulled_back_is_the_one_pushed(pulled: Pulled) -> None:
    remote = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{pulled.reference}"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    local = subprocess.run(
        ["podman", *pulled.store.args(), "image", "inspect", "--format", "{{.Digest}}", pulled.reference],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert local == remote["Digest"]
    assert pulled.reference.startswith(f"{pulled.registry.address}/modelreg/operator:")
    assert pulled.reference.rsplit(":", 1)[1] in registry.tags(pulled.registry, "modelreg/operator")
    # The base image went there too, so a node can build on it as well.
    assert registry.tags(pulled.registry, "modelreg/base") == [images.base_reference().rsplit(":", 1)[1]]


def test_a_warm_call_reuses_the_cached_image(pulled: Pulled) -> None:
    started = time.monotonic()
    again = images.ensure_operator_image(registry=pulled.registry.address)
    assert again == pulled.reference
    assert time.monotonic() - started < 60  # a rebuild takes minutes: debootstrap and pip alone exceed this


def test_it_runs_as_uid_65532_on_a_read_only_root(pulled: Pulled) -> None:
    out = pulled.run("-c", "id -u; id -g; touch /tmp/probe || touch /probe", entrypoint="/bin/sh")
    assert out.stdout.split() == ["65532", "65532"]
    assert out.returncode != 0
    assert out.stderr.count("Read-only file system") == 2  # not even /tmp, as in a Pod without an emptyDir
    config = subprocess.run(
        ["podman", *pulled.store.args(), "image", "inspect", "--format", "{{.Config.User}}", pulled.reference],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert config == "65532:65532"  # the image itself says non-root, numerically (runAsNonRoot checks it)


def test_modelreg_help(pulled: Pulled) -> None:
    out = pulled.run("--help")
    assert out.returncode == 0, out.stderr
    for command in ("run", "fetch-artifact", "stage"):
        assert command in out.stdout


def test_modelreg_run_help(pulled: Pulled) -> None:
    out = pulled.run("run", "--help")
    assert out.returncode == 0, out.stderr
    assert "--namespace" in out.stdout
    assert "--storage-endpoint" in out.stdout


def test_fetch_artifact_downloads_and_verifies_inside_the_image(pulled: Pulled, s3: S3, tmp_path: Path) -> None:
    art = upload(s3, data=b"weights from inside the image" * 500)
    volume = tmp_path / "models"
    volume.mkdir()
    os.chown(volume, 65532, 65532)  # as an emptyDir with fsGroup would be writable to the pod's user
    out = pulled.run(
        "fetch-artifact", "--uri", art.uri, "--sha256", art.sha256, "--dest", "/models/artifact",
        volumes=((volume, "/models"),), env=s3.env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    fetched = volume / "artifact"
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == art.sha256
    assert fetched.stat().st_uid == 65532


def test_fetch_artifact_exit_codes_survive_the_container(pulled: Pulled, s3: S3, tmp_path: Path) -> None:
    art = upload(s3)
    volume = tmp_path / "models"
    volume.mkdir()
    os.chown(volume, 65532, 65532)
    out = pulled.run(
        "fetch-artifact", "--uri", art.uri, "--sha256", "0" * 64, "--dest", "/models/artifact",
        volumes=((volume, "/models"),), env=s3.env(),
    )  # fmt: skip
    assert out.returncode == EXIT_CHECKSUM_MISMATCH, out.stderr
    assert list(volume.iterdir()) == []


def test_the_image_holds_the_operator_and_not_the_dev_cluster_dependencies(pulled: Pulled) -> None:
    probe = (
        "import importlib.util as u, sys; import modelreg.cli, modelreg.running, modelreg.fetching; "
        "print(sorted(m for m in ('cryptography', 'pytest', 'pip', 'modelreg.devcluster') if u.find_spec(m))); "
        "print(sorted(m for m in sys.modules if m.startswith('modelreg.devcluster')))"
    )
    out = pulled.run("-c", probe, entrypoint="python3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]", "[]"]


def test_the_dev_cluster_is_not_in_the_image(pulled: Pulled) -> None:
    out = pulled.run("-c", "import modelreg.devcluster", entrypoint="python3")
    assert out.returncode != 0
    assert "No module named 'modelreg.devcluster'" in out.stderr
    out = pulled.run(
        "-c", "import modelreg, pathlib; print(pathlib.Path(modelreg.__file__).parent)", entrypoint="python3"
    )
    assert out.returncode == 0, out.stderr
    found = pulled.run("-c", f"ls {out.stdout.strip()}", entrypoint="/bin/sh")
    assert "cli.py" in found.stdout.split()
    assert "devcluster" not in found.stdout.split()
    # Its commands say so in one line instead of a traceback.
    for argv in (["devcluster", "status"], ["demo"]):
        out = pulled.run(*argv)
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr
        said = [line for line in out.stderr.splitlines() if line.startswith("modelreg:")]
        assert len(said) == 1, out.stderr
        assert "the dev cluster is not part of this installation" in said[0]


def test_the_operator_in_the_image_makes_the_examples_ready(
    pulled: Pulled, kube: Cluster, crds: Path, namespace: str, s3: S3, example_artifacts: str, tmp_path: Path
) -> None:
    """`modelreg run` itself, from the image, non-root on a read-only root:
    Kopf, the Kubernetes client and boto3 work there, not only argparse."""
    local_cluster_only(kube.state is not None, "mounting the dev cluster's kubeconfig and certificates")
    assert kube.state is not None
    port = processes.free_port()
    name = f"modelreg-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "config"
    config.mkdir()
    _container_kubeconfig(Path(kube.kubeconfig), config)
    argv = images.run_argv(
        pulled.store, pulled.reference,
        ["run", "--namespace", namespace, "--kubeconfig", "/config/kubeconfig", "--resync-seconds", "3",
         "--liveness", f"http://127.0.0.1:{port}/healthz",
         "--allow-insecure-storage", "--storage-endpoint", s3.config.endpoint],
        volumes=((config, "/config:ro"),), env=s3.env(),
    )  # fmt: skip
    argv.insert(argv.index("run") + 1, f"--name={name}")
    log = tmp_path / "operator.log"
    proc = processes.start("operator-image", argv, log=log, tie_to_parent=True)
    try:

        def healthy() -> bool:
            if not proc.alive():
                pytest.fail(f"the operator's container exited:\n{processes.tail(log, 60)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        wait_for(healthy, timeout=90, what="the liveness endpoint of the operator in its image")
        kube.kubectl("apply", "-n", namespace, "-f", "-", input=demo.examples_on_kwok(REPO / "examples"))
        for obj in ("modelversion/iris-1", "modelversion/iris-2", "registeredmodel/iris"):
            out = kube.run("wait", "-n", namespace, "--for=condition=Ready", "--timeout=90s", obj, timeout=120)
            assert out.returncode == 0, f"{obj}: {out.stderr}\n{processes.tail(log, 60)}"
        # Verified inside the container: the artifact facts came from the S3 server.
        status = kube.get_json("-n", namespace, "modelversion/iris-1")["status"]
        expected = yaml.safe_load((REPO / "examples" / "modelversion-iris-1.yaml").read_text())["spec"]["artifact"]
        assert status["artifact"]["digest"] == f"sha256:{expected['sha256']}"
    finally:
        processes.stop(proc)
        pulled.remove(name)


def _container_kubeconfig(source: Path, dest: Path) -> Path:
    """The dev cluster's kubeconfig and its certificate files copied into `dest`,
    which the container mounts at /config, the paths rewritten to match: files,
    as a mounted Secret holds them, because `*-data` fields would make the client
    library write temporary files, and the Pod has no writable /tmp."""
    config = json.loads(source.read_text())  # the dev cluster writes it as JSON
    for section, keys in (("clusters", ("certificate-authority",)), ("users", ("client-certificate", "client-key"))):
        for entry in config[section]:
            body = entry["cluster" if section == "clusters" else "user"]
            for key in keys:
                if key in body:
                    shutil.copyfile(body[key], dest / key)
                    body[key] = f"/config/{key}"
    (dest / "kubeconfig").write_text(json.dumps(config))
    for path in (dest, *dest.iterdir()):
        os.chown(path, 65532, 65532)  # readable to the Pod's user, as fsGroup would make a Secret volume
    return dest / "kubeconfig"
