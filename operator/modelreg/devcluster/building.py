"""Build the control-plane binaries from their published Go modules.

Called by `modelreg devcluster build|up` and by the test fixtures. Binaries land
in a cache outside the repo, one folder per tool and version, and only missing
ones are built: a warm start costs a few `stat` calls.

Kubernetes cannot be `go install`ed (its go.mod replaces the staging modules with
local paths), so it is built inside a small generated wrapper module that pins
every staging module to the matching v0.X.Y release. etcd's server module has
the same problem and gets the same treatment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelreg.devcluster import versions

# kwok simulates nothing without Stage objects; these ship in its module.
KWOK_STAGES = "stages.yaml"
_KWOK_STAGE_DIRS = ("node/fast", "node/heartbeat-with-lease", "pod/fast")
KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")

Log = Callable[[str], None]


def say(message: str) -> None:
    """Default progress sink: flushed, so progress shows even when piped to a file."""
    print(message, flush=True)


def cache_root() -> Path:
    """Where built binaries live; `MODELREG_CACHE` overrides the XDG default."""
    if env := os.environ.get("MODELREG_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "modelreg"


@dataclass(frozen=True)
class Binaries:
    """Paths of every executable the local control plane needs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    s3_server: Path


def binaries(root: Path | None = None) -> Binaries:
    root = root or cache_root()
    kube = root / f"kubernetes-{versions.KUBERNETES}"
    return Binaries(
        etcd=root / f"etcd-{versions.ETCD}" / "etcd",
        kube_apiserver=kube / "kube-apiserver",
        kube_controller_manager=kube / "kube-controller-manager",
        kube_scheduler=kube / "kube-scheduler",
        kubectl=kube / "kubectl",
        kwok=root / f"kwok-{versions.KWOK}" / "kwok",
        s3_server=root / f"versitygw-{versions.VERSITYGW}" / "versitygw",
    )


def missing(bins: Binaries) -> list[Path]:
    absent = [p for p in vars(bins).values() if not os.access(p, os.X_OK)]
    stages = bins.kwok.parent / KWOK_STAGES
    return absent if stages.exists() else [*absent, stages]


def ensure_binaries(*, root: Path | None = None, log: Log = say) -> Binaries:
    """Build whatever is missing from the cache and return all paths."""
    bins = binaries(root)
    if not missing(bins):
        return bins
    _require_go()
    started = time.monotonic()
    if not all(
        os.access(getattr(bins, a), os.X_OK)
        for a in ("kube_apiserver", "kube_controller_manager", "kube_scheduler", "kubectl")
    ):
        build_kubernetes(bins.kubectl.parent, log=log)
    if not os.access(bins.etcd, os.X_OK):
        build_etcd(bins.etcd.parent, log=log)
    if not os.access(bins.kwok, os.X_OK):
        go_install("sigs.k8s.io/kwok/cmd/kwok", versions.KWOK, bins.kwok.parent, log=log)
    if not (bins.kwok.parent / KWOK_STAGES).exists():
        write_kwok_stages(bins.kwok.parent / KWOK_STAGES, log=log)
    if not os.access(bins.s3_server, os.X_OK):
        go_install(
            "github.com/versity/versitygw/cmd/versitygw",
            versions.VERSITYGW,
            bins.s3_server.parent,
            log=log,
        )
    log(f"[build] all binaries ready in {time.monotonic() - started:.0f}s")
    return bins


def _require_go() -> None:
    if shutil.which("go") is None:
        raise RuntimeError("the Go toolchain is needed to build the local control plane; install Go >= 1.25")


def staging_modules(go_mod: str) -> list[str]:
    """The `k8s.io/...` modules that a Kubernetes go.mod replaces with local paths."""
    return sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", go_mod, re.M)))


def wrapper_go_mod(*, module: str, require: str, version: str, replaces: dict[str, str], go_directive: str) -> str:
    lines = [f"module {module}", "", f"go {go_directive}", ""]
    minor = ".".join(go_directive.split(".")[:2])
    lines += [f"godebug default=go{minor}", "", f"require {require} {version}", ""]
    if replaces:
        lines.append("replace (")
        lines += [f"\t{name} => {name} {ver}" for name, ver in sorted(replaces.items())]
        lines.append(")")
    return "\n".join(lines) + "\n"


def kube_ldflags(version: str, commit: str) -> str:
    """Version stamps so `kubectl version` and /version report the real release."""
    major, minor = version.lstrip("v").split(".")[:2]
    stamps = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitCommit": commit,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    pkgs = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
    return " ".join(f"-X {pkg}.{k}={v}" for pkg in pkgs for k, v in stamps.items()) + " -s -w"


def build_kubernetes(dest: Path, *, log: Log = say) -> None:
    _build_kube_commands(dest, KUBE_COMMANDS, name="kubernetes", log=log)


def kubelet_binary(root: Path | None = None) -> Path:
    """The real node's kubelet: its own cache folder, so adding it never invalidates the control plane's."""
    return _node_binary("kubelet", root)


def ensure_kubelet(*, root: Path | None = None, log: Log = say) -> Path:
    return _ensure_node_binary("kubelet", root=root, log=log)


def kube_proxy_binary(root: Path | None = None) -> Path:
    """The real node's kube-proxy, in a cache folder of its own like the kubelet's."""
    return _node_binary("kube-proxy", root)


def ensure_kube_proxy(*, root: Path | None = None, log: Log = say) -> Path:
    return _ensure_node_binary("kube-proxy", root=root, log=log)


def _node_binary(command: str, root: Path | None) -> Path:
    return (root or cache_root()) / f"{command}-{versions.KUBERNETES}" / command


def _ensure_node_binary(command: str, *, root: Path | None, log: Log) -> Path:
    binary = _node_binary(command, root)
    if not os.access(binary, os.X_OK):
        _require_go()
        _build_kube_commands(binary.parent, (command,), name=command, log=log)
    return binary


def _build_kube_commands(dest: Path, commands: Sequence[str], *, name: str, log: Log) -> None:
    version = versions.KUBERNETES
    info = _mod_download(f"k8s.io/kubernetes@{version}", log=log)
    go_mod = Path(info["GoMod"]).read_text()
    staging_version = "v0" + version[2:]
    replaces = {m: staging_version for m in staging_modules(go_mod)}
    go_directive = re.search(r"^go (\S+)", go_mod, re.M)
    assert go_directive, "Kubernetes go.mod has no go directive"
    pkgs = [f"k8s.io/kubernetes/cmd/{c}" for c in commands]
    _build_in_wrapper(
        dest,
        name=f"{name}-{version}",
        go_mod=wrapper_go_mod(
            module=f"modelreg.dev/devcluster/{name}",
            require="k8s.io/kubernetes",
            version=version,
            replaces=replaces,
            go_directive=go_directive.group(1),
        ),
        packages=pkgs,
        ldflags=kube_ldflags(version, info.get("Origin", {}).get("Hash", "")),
        log=log,
    )


def build_etcd(dest: Path, *, log: Log = say) -> None:
    version = versions.ETCD
    info = _mod_download(f"go.etcd.io/etcd/server/v3@{version}", log=log)
    go_mod = Path(info["GoMod"]).read_text()
    siblings = set(re.findall(r"^\s*(go\.etcd\.io/etcd/[\w./-]+)\s*=>\s*\.\./", go_mod, re.M))
    go_directive = re.search(r"^go (\S+)", go_mod, re.M)
    assert go_directive, "etcd go.mod has no go directive"
    _build_in_wrapper(
        dest,
        name=f"etcd-{version}",
        go_mod=wrapper_go_mod(
            module="modelreg.dev/devcluster/etcd",
            require="go.etcd.io/etcd/server/v3",
            version=version,
            replaces={m: version for m in siblings},
            go_directive=go_directive.group(1),
        ),
        packages=["go.etcd.io/etcd/server/v3"],
        ldflags="-s -w",
        log=log,
        rename={"v3": "etcd", "server": "etcd"},
    )


def go_install(package: str, version: str, dest: Path, *, log: Log = say) -> None:
    log(f"[build] go install {package}@{version}")
    env = _go_env() | {"GOBIN": str(dest)}
    dest.mkdir(parents=True, exist_ok=True)
    _run(["go", "install", "-ldflags=-s -w", f"{package}@{version}"], env=env, log=log)


def write_kwok_stages(dest: Path, *, log: Log = say) -> None:
    """Collect kwok's "fast" node and pod stages (and node leases) into one config file."""
    module_dir = Path(_mod_download(f"sigs.k8s.io/kwok@{versions.KWOK}", log=log)["Dir"])
    docs = []
    for sub in _KWOK_STAGE_DIRS:
        for f in sorted((module_dir / "kustomize" / "stage" / sub).glob("*.yaml")):
            if f.name != "kustomization.yaml":
                docs.append(f.read_text().strip())
    if not docs:
        raise RuntimeError(f"no kwok stages found in {module_dir}")
    dest.write_text("\n---\n".join(docs) + "\n")


def _build_in_wrapper(
    dest: Path,
    *,
    name: str,
    go_mod: str,
    packages: Sequence[str],
    ldflags: str,
    log: Log,
    rename: dict[str, str] | None = None,
) -> None:
    work = cache_root() / "build" / name
    work.mkdir(parents=True, exist_ok=True)
    (work / "go.mod").write_text(go_mod)
    tools = "//go:build tools\n\npackage tools\n\nimport (\n"
    tools += "".join(f'\t_ "{p}"\n' for p in packages) + ")\n"
    (work / "tools.go").write_text(tools)
    env = _go_env()
    log(f"[build] resolving modules for {name} (go mod tidy)")
    _run(["go", "mod", "tidy"], cwd=work, env=env, log=log)
    out = work / "out"
    out.mkdir(exist_ok=True)
    log(f"[build] compiling {name}: {' '.join(p.rsplit('/', 1)[-1] for p in packages)} (many minutes when cold)")
    _run(
        ["go", "build", "-trimpath", f"-ldflags={ldflags}", "-o", str(out) + "/", *packages], cwd=work, env=env, log=log
    )
    dest.mkdir(parents=True, exist_ok=True)
    for built in out.iterdir():
        target = dest / (rename or {}).get(built.name, built.name)
        os.replace(built, target)
    shutil.rmtree(work, ignore_errors=True)


def _go_env() -> dict[str, str]:
    return dict(os.environ) | {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}


def _mod_download(spec: str, *, log: Log) -> dict[str, Any]:
    log(f"[build] go mod download {spec}")
    out = subprocess.run(
        ["go", "mod", "download", "-json", spec], capture_output=True, text=True, env=_go_env(), cwd="/"
    )
    info: dict[str, Any] = json.loads(out.stdout or "{}")
    if out.returncode != 0 or "Error" in info:
        raise RuntimeError(f"go mod download {spec} failed: {info.get('Error') or out.stderr.strip()}")
    return info


def _run(cmd: Sequence[str], *, env: dict[str, str], log: Log, cwd: Path | None = None) -> None:
    """Run a build step; a heartbeat thread shows progress during a long, silent compile."""
    started = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(30):
            log(f"[build]   ... still working ({time.monotonic() - started:.0f}s)")

    threading.Thread(target=heartbeat, daemon=True).start()
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    finally:
        done.set()
    if proc.returncode != 0:
        sys.stderr.write((proc.stdout + proc.stderr)[-6000:])
        raise RuntimeError(f"build step failed ({proc.returncode}): {' '.join(cmd)}")
    log(f"[build]   done in {time.monotonic() - started:.0f}s")
