"""The dev cluster (Go builds, PKI, process supervision) stays out of the
operator's import graph: the operator image leaves `modelreg.devcluster` out
(see the Dockerfile), so an operator module that imported it would fail there.

Each check runs in a fresh interpreter, since this test session has long
imported the dev cluster for other tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _python(code: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ) | {"PYTHONPATH": str(REPO / "operator")} | (env or {})
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=environ, timeout=120)


DEVCLUSTER_LOADED = "print(sorted(m for m in sys.modules if m.startswith('modelreg.devcluster')))"


def test_every_operator_module_imports_without_the_dev_cluster() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "names = []\n"
        "def walk(package):\n"
        # Not pkgutil.walk_packages: it imports every package it walks into, devcluster too.
        "    for m in pkgutil.iter_modules(importlib.import_module(package).__path__, package + '.'):\n"
        "        if m.name in ('modelreg.devcluster', 'modelreg.__main__'):\n"
        "            continue\n"
        "        names.append(m.name)\n"
        "        walk(m.name) if m.ispkg else importlib.import_module(m.name)\n"
        "walk('modelreg')\n"
        "print(len(names))\n" + DEVCLUSTER_LOADED
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    count, loaded = out.stdout.splitlines()
    # The walk found the operator's modules (running, handlers, cli, fetching, ...), not an empty package.
    assert int(count) > 15
    assert loaded == "[]"


def test_the_run_and_fetch_artifact_commands_do_not_load_the_dev_cluster(tmp_path: Path) -> None:
    # fetch-artifact really runs, against a closed port: it fails as storage unavailable,
    # after its imports and its client have been made.
    code = (
        "import sys\n"
        "from modelreg import cli\n"
        "try:\n"
        "    cli.main(['run', '--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "import modelreg.running, modelreg.handlers\n"
        f"code = cli.main(['fetch-artifact', '--uri', 's3://b/k', '--sha256', '0' * 64, '--dest', '{tmp_path}/a'])\n"
        "print(code)\n" + DEVCLUSTER_LOADED
    )
    env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # discard: nothing listens there
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    out = _python(code, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-2] == "5"  # fetching.EXIT_STORAGE_UNAVAILABLE: the command ran
    assert lines[-1] == "[]"


def test_without_the_dev_cluster_its_commands_fail_with_one_line() -> None:
    """As in the operator image, where the package is absent: no traceback."""
    code = (
        "import sys\n"
        "sys.modules['modelreg.devcluster'] = None  # what Python does for a package it cannot find\n"
        "from modelreg import cli\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    for argv in (["devcluster", "status"], ["devcluster", "packages"], ["demo"]):
        out = _python(code, *argv)
        assert out.returncode == 2, (argv, out.stderr)
        assert out.stdout == ""
        assert out.stderr.count("\n") == 1, out.stderr
        assert "the dev cluster is not part of this installation" in out.stderr
        assert "Traceback" not in out.stderr
