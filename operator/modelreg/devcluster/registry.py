"""A container registry on a loopback port: Debian's `docker-registry`
(github.com/docker/distribution 2.8), storage under a given directory.

Called by `devcluster.cluster` (started with the cluster, stopped by `down`)
and by the test fixtures that push the operator image (`devcluster.images`).
Nothing but package registries is reachable from our machines, so every image
a real node runs is built here, pushed to this registry and pulled from it.

Plain http on 127.0.0.1: containerd's CRI and the containers/image tools
(buildah, skopeo, podman) treat a loopback registry as plain-http only when
told to (`--tls-verify=false`) or, for containerd, by default for localhost
hosts; nothing outside this machine can reach the port.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from modelreg.devcluster import processes

BINARY = "docker-registry"


class RegistryError(RuntimeError):
    """The registry could not be started or did not answer."""


@dataclass(frozen=True)
class RegistryConfig:
    port: int
    storage_dir: str
    config_file: str
    log: str

    @property
    def address(self) -> str:
        """host:port, the prefix of every image reference in this registry."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"


def new_config(directory: Path) -> RegistryConfig:
    return RegistryConfig(
        port=processes.free_port(),
        storage_dir=str(directory / "storage"),
        config_file=str(directory / "config.yml"),
        log=str(directory / "registry.log"),
    )


def find_binary() -> Path | None:
    found = shutil.which(BINARY) or shutil.which("registry")
    return Path(found) if found else None


def render_config(config: RegistryConfig) -> str:
    """The registry's YAML config (as JSON, which is YAML): loopback only, no auth,
    deletes allowed so a test can show a missing image fails to pull."""
    doc = {
        "version": 0.1,
        "log": {"level": "warn", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": config.storage_dir},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        # No `debug` listener: it would take a second port on all interfaces.
        "http": {
            "addr": config.address,
            # One instance, so any secret works; a fixed one spares a warning per start.
            "secret": secrets.token_hex(16),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }
    return json.dumps(doc, indent=2) + "\n"


def start(
    config: RegistryConfig, *, binary: Path | None = None, tie_to_parent: bool = False, timeout: float = 30
) -> processes.Process:
    binary = binary or find_binary()
    if binary is None:
        raise RegistryError(f"`{BINARY}` is not installed (as root on Debian: modelreg devcluster packages)")
    Path(config.storage_dir).mkdir(parents=True, exist_ok=True)
    Path(config.config_file).write_text(render_config(config))
    # The registry reads REGISTRY_* variables over its config file: drop any
    # inherited ones so the file is the whole truth.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    proc = processes.start(
        "registry", [binary, "serve", config.config_file], log=Path(config.log), env=env, tie_to_parent=tie_to_parent
    )
    wait_ready(config, proc=proc, timeout=timeout)
    return proc


def wait_ready(config: RegistryConfig, *, proc: processes.Process, timeout: float) -> None:
    """Wait until `GET /v2/` answers 200: the registry API's own liveness check."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RegistryError(f"the registry exited at start:\n{processes.tail(proc.log)}")
        try:
            with urllib.request.urlopen(f"{config.url}/v2/", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.1)
    processes.stop(proc)
    raise RegistryError(f"the registry did not answer on {config.url} within {timeout:.0f}s (last: {last})")


def tags(config: RegistryConfig, repository: str) -> list[str]:
    """The tags of `repository`, read through the registry's HTTP API."""
    try:
        with urllib.request.urlopen(f"{config.url}/v2/{repository}/tags/list", timeout=10) as resp:
            return list(json.load(resp).get("tags") or [])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise
