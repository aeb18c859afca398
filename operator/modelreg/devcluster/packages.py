"""The Debian packages the dev cluster and its tests use, and the one place that installs them.

Called by `modelreg devcluster packages` (which `make setup` runs), by
`devcluster.node` before the real node starts and by `devcluster.images` before
an image is built. Two groups:

- `real-node`: the distribution's container runtime rather than one we build:
  containerd and runc, the reference CNI plugins, iptables (the bridge plugin
  calls it) and nftables (kube-proxy's `nft`); busybox-static feeds the test image.
- `images`: the loopback registry (docker-registry) and the tools that make,
  push and run the operator image (buildah, podman with runc, skopeo,
  debootstrap for the Debian base).

Only what is missing is installed, only as root with apt-get. When every
package is present this costs one `dpkg-query` call; otherwise at most one
`apt-get update` runs (only when an install fails on stale or absent lists).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence

Log = Callable[[str], None]
# Runs one command and returns it finished; a parameter so tests can record the calls.
Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]

REAL_NODE = "real-node"
IMAGES = "images"
GROUPS: dict[str, tuple[str, ...]] = {
    REAL_NODE: (
        "containerd",
        "runc",
        "containernetworking-plugins",
        "iptables",
        "nftables",  # kube-proxy's nftables mode drives the `nft` command
        "busybox-static",
    ),
    IMAGES: ("docker-registry", "buildah", "podman", "runc", "skopeo", "debootstrap"),
}
DPKG_FORMAT = "${Package} ${db:Status-Status}\n"


class PackagesUnavailable(RuntimeError):
    """The packages are missing and this machine cannot install them (not root, or no apt)."""


class InstallFailed(PackagesUnavailable):
    """apt-get ran and the packages are still missing."""


def packages_of(groups: Iterable[str]) -> list[str]:
    """The packages of the named groups, in order, each once (runc is in both)."""
    return list(dict.fromkeys(p for g in groups for p in GROUPS[g]))


def dpkg_query_argv(packages: Sequence[str]) -> list[str]:
    return ["dpkg-query", "-W", f"-f={DPKG_FORMAT}", *packages]


def missing_from(packages: Sequence[str], dpkg_output: str) -> list[str]:
    """The packages `dpkg_output` (of `dpkg_query_argv`) does not show as installed.

    dpkg lists a removed package whose configuration stays as `config-files`, and
    prints nothing on stdout for one it has never heard of: both are missing.
    A `pkg:arch` name (multi-arch) counts for `pkg`.
    """
    installed = set()
    for line in dpkg_output.splitlines():
        name, _, status = line.partition(" ")
        if status.strip() == "installed":
            installed.add(name.split(":", 1)[0])
    return [p for p in packages if p not in installed]


def apt_install_argv(packages: Sequence[str]) -> list[str]:
    # With recommends, as the machines these were tested on have them: podman's
    # and buildah's (fuse-overlayfs, catatonit, uidmap, ...) and runc's criu.
    return ["apt-get", "-q", "install", "-y", *packages]


def apt_update_argv() -> list[str]:
    return ["apt-get", "-q", "update"]


def apt_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for apt-get: never a question on a terminal nobody watches."""
    return dict(os.environ if environ is None else environ) | {"DEBIAN_FRONTEND": "noninteractive"}


def can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def missing(packages: Sequence[str], *, run: Runner | None = None) -> list[str]:
    """The packages dpkg does not list as installed (all of them when there is no dpkg): one dpkg-query."""
    if run is None:
        if shutil.which("dpkg-query") is None:
            return list(packages)
        run = _run
    return missing_from(packages, run(dpkg_query_argv(packages)).stdout)


def ensure_packages(
    groups: Sequence[str],
    *,
    log: Log,
    run: Runner | None = None,
    installable: bool | None = None,
) -> list[str]:
    """Install whatever of `groups` is missing with apt-get; return what was installed.

    Quiet and quick when nothing is missing. Raises PackagesUnavailable when
    packages are missing and this is not root with apt-get, InstallFailed when
    apt-get could not install them.
    """
    wanted = packages_of(groups)
    absent = missing(wanted, run=run)
    if not absent:
        log(f"[packages] present: {' '.join(wanted)}")
        return []
    if not (can_install() if installable is None else installable):
        raise PackagesUnavailable(
            f"the Debian packages {' '.join(absent)} are not installed and only root with apt-get can install them; "
            f"run `modelreg devcluster packages {' '.join(groups)}` as root on Debian, or install them yourself"
        )
    run = run or _run
    started = time.monotonic()
    log(f"[packages] apt-get install {' '.join(absent)}")
    proc = run(apt_install_argv(absent))
    # A fresh machine or image has no package lists, or stale ones: update once, then install again.
    if proc.returncode != 0:
        log("[packages] apt-get update")
        run(apt_update_argv())
        proc = run(apt_install_argv(absent))
        if proc.returncode != 0:
            raise InstallFailed(f"apt-get install {' '.join(absent)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    if still := missing(absent, run=run):
        raise InstallFailed(f"still missing after apt-get install: {' '.join(still)}")
    log(f"[packages] installed in {time.monotonic() - started:.0f}s")
    return absent


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    # The dev cluster starts its own containerd (own socket and root); a system
    # one that apt may start on a systemd host is left alone.
    return subprocess.run(list(argv), capture_output=True, text=True, env=apt_env())
