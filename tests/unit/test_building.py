"""Pure parts of the control-plane build: wrapper go.mod and version stamps."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelreg.devcluster import building

GO_MOD = """module k8s.io/kubernetes

go 1.25.0

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tgithub.com/other/thing => github.com/other/thing v1.0.0
)
"""


def test_staging_modules_are_read_from_the_replace_block() -> None:
    assert building.staging_modules(GO_MOD) == ["k8s.io/api", "k8s.io/client-go"]


def test_wrapper_pins_every_staging_module() -> None:
    text = building.wrapper_go_mod(
        module="example/wrapper",
        require="k8s.io/kubernetes",
        version="v1.35.4",
        replaces={"k8s.io/api": "v0.35.4", "k8s.io/client-go": "v0.35.4"},
        go_directive="1.25.0",
    )
    assert "require k8s.io/kubernetes v1.35.4" in text
    assert "\tk8s.io/api => k8s.io/api v0.35.4" in text
    assert "godebug default=go1.25" in text
    assert "go 1.25.0" in text


def test_version_stamps_cover_server_and_client_packages() -> None:
    flags = building.kube_ldflags("v1.35.4", "abc123")
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {pkg}.gitVersion=v1.35.4" in flags
        assert f"-X {pkg}.gitMinor=35" in flags
        assert f"-X {pkg}.gitCommit=abc123" in flags


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELREG_CACHE", str(tmp_path))
    assert building.cache_root() == tmp_path
    assert building.binaries().kubectl.parent.parent == tmp_path
    assert building.missing(building.binaries())  # an empty cache misses everything
