"""The pure parts of the image build and the registry: the content key, the
Debian mirror read from apt's sources, and the registry's config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelreg.devcluster import images, registry


def _repo(root: Path) -> Path:
    for rel, text in {
        "Dockerfile": "FROM x\n",
        "pyproject.toml": "[project]\n",
        "README.md": "# r\n",
        "operator/modelreg/__init__.py": "",
        "operator/modelreg/cli.py": "print(1)\n",
        "operator/modelreg/devcluster/cluster.py": "print(3)\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_context_key_follows_the_sources_and_ignores_caches(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    first = images.stage_context(repo, tmp_path / "c1")
    (repo / "operator/modelreg/__pycache__").mkdir()
    (repo / "operator/modelreg/__pycache__/cli.cpython-311.pyc").write_bytes(b"\0")
    (repo / "operator/modelreg.egg-info").mkdir()
    (repo / "operator/modelreg.egg-info/PKG-INFO").write_text("x")
    assert images.stage_context(repo, tmp_path / "c2") == first
    assert not (tmp_path / "c2/operator/modelreg/__pycache__").exists()
    assert (tmp_path / "c2/operator/modelreg/cli.py").read_text() == "print(1)\n"

    (repo / "operator/modelreg/cli.py").write_text("print(2)\n")
    assert images.stage_context(repo, tmp_path / "c3") != first
    (repo / "operator/modelreg/cli.py").write_text("print(1)\n")
    (repo / "Dockerfile").write_text("FROM y\n")
    assert images.stage_context(repo, tmp_path / "c4") != first


def test_the_dev_cluster_is_not_in_the_context(tmp_path: Path) -> None:
    """The Dockerfile removes it anyway; out of the context, an edit to it does not rebuild the image."""
    repo = _repo(tmp_path / "repo")
    first = images.stage_context(repo, tmp_path / "c1")
    assert not (tmp_path / "c1/operator/modelreg/devcluster").exists()
    assert (tmp_path / "c1/operator/modelreg/cli.py").exists()
    (repo / "operator/modelreg/devcluster/cluster.py").write_text("print(4)\n")
    assert images.stage_context(repo, tmp_path / "c2") == first


def test_a_moved_file_changes_the_key(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    first = images.stage_context(repo, tmp_path / "c1")
    (repo / "operator/modelreg/cli.py").rename(repo / "operator/modelreg/main.py")
    assert images.stage_context(repo, tmp_path / "c2") != first


def test_a_checkout_without_dockerfile_is_refused(tmp_path: Path) -> None:
    with pytest.raises(images.ImageError, match="no Dockerfile"):
        images.stage_context(tmp_path, tmp_path / "c")


def test_the_model_server_context_is_its_two_files_and_the_key_follows_them(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / images.MODEL_SERVER_DIR).mkdir(parents=True)
    for name in images.MODEL_SERVER_FILES:
        (repo / images.MODEL_SERVER_DIR / name).write_text(f"{name} 1\n")
    (repo / images.MODEL_SERVER_DIR / "README.md").write_text("not copied")
    (tmp_path / "c1").mkdir()
    first = images.stage_model_server_context(repo, tmp_path / "c1")
    assert sorted(p.name for p in (tmp_path / "c1").iterdir()) == sorted(images.MODEL_SERVER_FILES)
    (repo / images.MODEL_SERVER_DIR / "README.md").write_text("changed")
    (tmp_path / "c2").mkdir()
    assert images.stage_model_server_context(repo, tmp_path / "c2") == first
    (repo / images.MODEL_SERVER_DIR / "server.py").write_text("server.py 2\n")
    (tmp_path / "c3").mkdir()
    assert images.stage_model_server_context(repo, tmp_path / "c3") != first
    (repo / images.MODEL_SERVER_DIR / "server.py").unlink()
    with pytest.raises(images.ImageError, match=r"server\.py"):
        images.stage_model_server_context(repo, tmp_path / "c3")


def test_the_base_key_names_the_recipe() -> None:
    assert images.base_reference() == f"localhost/modelreg/base:bookworm-{images.base_key()}"
    assert len(images.base_key()) == 16


@pytest.mark.parametrize(
    ("text", "deb822", "expected"),
    [
        ("deb http://mirror.example/debian bookworm main\n", False, "http://mirror.example/debian"),
        ("deb [arch=amd64] http://m.example/d bookworm main contrib\n", False, "http://m.example/d"),
        ("# deb http://old.example/d bookworm main\ndeb http://m.example/d bookworm-updates main\n", False, None),
        ("deb http://m.example/d bookworm contrib\n", False, None),
        (
            "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
            "Types: deb\nURIs: http://m.example/debian-security\nSuites: bookworm-security\nComponents: main\n",
            True,
            "http://m.example/debian",
        ),
        ("Types: deb-src\nURIs: http://m.example/d\nSuites: bookworm\nComponents: main\n", True, None),
    ],
)
def test_the_mirror_is_read_from_apt_sources(text: str, deb822: bool, expected: str | None) -> None:
    assert images.mirror_in(text, deb822) == expected


def test_the_registry_listens_on_loopback_only(tmp_path: Path) -> None:
    config = registry.new_config(tmp_path)
    doc = json.loads(registry.render_config(config))
    assert doc["http"]["addr"] == f"127.0.0.1:{config.port}" == config.address
    assert doc["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "storage")
    assert "debug" not in doc["http"]  # a debug listener would open a second port
    assert "auth" not in doc
