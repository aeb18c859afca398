"""The one installer of Debian packages (devcluster.packages): which packages
dpkg-query's output leaves missing, the apt-get command lines, and how many
commands an install costs, recorded by a runner that stands in for the shell."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from modelreg.devcluster import commands, packages

DPKG = """\
containerd installed
runc installed
iptables config-files
nftables not-installed
busybox-static:amd64 installed
"""


def test_missing_is_what_dpkg_does_not_show_as_installed() -> None:
    wanted = ["containerd", "runc", "iptables", "nftables", "busybox-static", "containernetworking-plugins"]
    # config-files (removed, configuration kept) and not-installed are missing, and so is a
    # package dpkg never heard of (no line at all); a multi-arch name counts for its package.
    assert packages.missing_from(wanted, DPKG) == ["iptables", "nftables", "containernetworking-plugins"]
    assert packages.missing_from(wanted, "") == wanted
    assert packages.missing_from([], DPKG) == []


def test_a_status_that_only_ends_in_installed_is_not_installed() -> None:
    assert packages.missing_from(["runc"], "runc half-installed\n") == ["runc"]
    assert packages.missing_from(["runc"], "runc not-installed\n") == ["runc"]


def test_the_command_lines() -> None:
    assert packages.dpkg_query_argv(["runc", "podman"]) == [
        "dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", "runc", "podman",
    ]  # fmt: skip
    assert packages.apt_install_argv(["runc", "podman"]) == ["apt-get", "-q", "install", "-y", "runc", "podman"]
    assert packages.apt_update_argv() == ["apt-get", "-q", "update"]
    env = packages.apt_env({"PATH": "/usr/bin", "DEBIAN_FRONTEND": "dialog"})
    assert env == {"PATH": "/usr/bin", "DEBIAN_FRONTEND": "noninteractive"}


def test_the_groups_are_the_real_node_and_the_images_and_runc_is_asked_for_once() -> None:
    assert set(packages.GROUPS) == {packages.REAL_NODE, packages.IMAGES}
    assert "containerd" in packages.GROUPS[packages.REAL_NODE]
    assert {"docker-registry", "buildah", "podman", "skopeo", "debootstrap"} <= set(packages.GROUPS[packages.IMAGES])
    both = packages.packages_of([packages.REAL_NODE, packages.IMAGES])
    assert both.count("runc") == 1
    assert set(both) == set(packages.GROUPS[packages.REAL_NODE]) | set(packages.GROUPS[packages.IMAGES])


class Machine:
    """Records each command; dpkg-query answers from `installed`, apt-get install
    installs (or fails while the package lists are stale, until an update)."""

    def __init__(self, installed: set[str], *, lists_fresh: bool = True, apt_works: bool = True) -> None:
        self.installed = set(installed)
        self.lists_fresh = lists_fresh
        self.apt_works = apt_works
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "dpkg-query":
            out = "".join(f"{p} installed\n" for p in argv[3:] if p in self.installed)
            return subprocess.CompletedProcess(argv, 0, out, "")
        if argv[2] == "update":
            self.lists_fresh = True
            return subprocess.CompletedProcess(argv, 0, "", "")
        if not (self.lists_fresh and self.apt_works):
            return subprocess.CompletedProcess(argv, 100, "", "E: Unable to locate package\n")
        self.installed |= set(argv[4:])
        return subprocess.CompletedProcess(argv, 0, "", "")

    def commands(self) -> list[str]:
        return ["dpkg-query" if c[0] == "dpkg-query" else f"apt-get {c[2]}" for c in self.calls]


def test_when_everything_is_present_it_costs_one_dpkg_query() -> None:
    machine = Machine(set(packages.packages_of(packages.GROUPS)))
    assert packages.ensure_packages(list(packages.GROUPS), log=print, run=machine, installable=True) == []
    assert machine.commands() == ["dpkg-query"]


def test_only_the_missing_packages_are_installed_without_an_update_when_the_lists_are_fresh() -> None:
    machine = Machine({"containerd", "runc", "iptables"})
    installed = packages.ensure_packages([packages.REAL_NODE], log=print, run=machine, installable=True)
    assert installed == ["containernetworking-plugins", "nftables", "busybox-static"]
    assert machine.commands() == ["dpkg-query", "apt-get install", "dpkg-query"]
    assert machine.calls[1] == packages.apt_install_argv(installed)


def test_stale_lists_cost_exactly_one_update() -> None:
    machine = Machine(set(), lists_fresh=False)
    packages.ensure_packages([packages.IMAGES], log=print, run=machine, installable=True)
    assert machine.commands() == ["dpkg-query", "apt-get install", "apt-get update", "apt-get install", "dpkg-query"]
    assert machine.installed == set(packages.GROUPS[packages.IMAGES])


def test_an_install_that_fails_after_the_update_is_an_error_and_is_not_retried_again() -> None:
    machine = Machine(set(), apt_works=False)
    with pytest.raises(packages.InstallFailed, match="Unable to locate package"):
        packages.ensure_packages([packages.IMAGES], log=print, run=machine, installable=True)
    assert machine.commands() == ["dpkg-query", "apt-get install", "apt-get update", "apt-get install"]


def test_without_root_and_apt_nothing_is_run_but_the_query() -> None:
    machine = Machine({"runc"})
    with pytest.raises(packages.PackagesUnavailable, match="modelreg devcluster packages real-node") as caught:
        packages.ensure_packages([packages.REAL_NODE], log=print, run=machine, installable=False)
    assert not isinstance(caught.value, packages.InstallFailed)
    assert machine.commands() == ["dpkg-query"]


def test_the_command_says_cannot_install_with_its_own_exit_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make setup` goes on when packages cannot be installed here (status 3) and stops when apt-get failed."""

    def unavailable(groups: Sequence[str], **_: object) -> list[str]:
        raise packages.PackagesUnavailable("not root")

    def failed(groups: Sequence[str], **_: object) -> list[str]:
        raise packages.InstallFailed("apt-get install x failed")

    monkeypatch.setattr(packages, "ensure_packages", unavailable)
    assert commands.dispatch("packages", directory=None, groups=["images"]) == commands.CANNOT_INSTALL == 3
    monkeypatch.setattr(packages, "ensure_packages", failed)
    assert commands.dispatch("packages", directory=None, groups=["images"]) == 1
    assert "error: apt-get install x failed" in capsys.readouterr().out
    assert commands.dispatch("packages", directory=None, groups=["nodes"]) == 2
