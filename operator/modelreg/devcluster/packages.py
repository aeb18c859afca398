"""Install the Debian packages the dev cluster's real node runs on.

Called by `modelreg devcluster build` and before `up --real-node`. The real
node uses the distribution's container runtime rather than one we build:
containerd and runc, the reference CNI plugins, iptables (the bridge plugin
calls it) and nftables (kube-proxy's `nft`). busybox-static feeds the test image. When every
package is present this costs one `dpkg-query` call.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence

Log = Callable[[str], None]

REAL_NODE_PACKAGES = (
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "nftables",  # kube-proxy's nftables mode drives the `nft` command
    "busybox-static",
)


class PackagesUnavailable(RuntimeError):
    """The packages are missing and this machine cannot install them (not root, or no apt)."""


def missing(packages: Sequence[str] = REAL_NODE_PACKAGES) -> list[str]:
    """The packages dpkg does not list as installed (all of them when there is no dpkg)."""
    if shutil.which("dpkg-query") is None:
        return list(packages)
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages], capture_output=True, text=True
    )
    installed = {line.split()[0] for line in out.stdout.splitlines() if line.endswith(" installed")}
    return [p for p in packages if p not in installed]


def ensure_packages(packages: Sequence[str] = REAL_NODE_PACKAGES, *, log: Log) -> None:
    """Install whatever is missing with apt-get; quiet and quick when nothing is."""
    absent = missing(packages)
    if not absent:
        log(f"[packages] present: {' '.join(packages)}")
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PackagesUnavailable(
            f"the real node needs the Debian packages {' '.join(absent)}; "
            "run `modelreg devcluster build` as root on Debian, or install them yourself"
        )
    started = time.monotonic()
    log(f"[packages] apt-get install {' '.join(absent)}")
    # No package lists on a fresh image: update once, then install again.
    if _apt_install(absent).returncode != 0:
        log("[packages] apt-get update")
        _apt(["update"])
        proc = _apt_install(absent)
        if proc.returncode != 0:
            raise PackagesUnavailable(f"apt-get install {' '.join(absent)} failed:\n{proc.stdout[-3000:]}")
    if still := missing(packages):
        raise PackagesUnavailable(f"still missing after apt-get install: {' '.join(still)}")
    log(f"[packages] installed in {time.monotonic() - started:.0f}s")


def _apt_install(packages: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return _apt(["install", "-y", "--no-install-recommends", *packages])


def _apt(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    # The dev cluster starts its own containerd (own socket and root); a system
    # one that apt may start on a systemd host is left alone.
    env = dict(os.environ) | {"DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", "-q", *args], capture_output=True, text=True, env=env)
