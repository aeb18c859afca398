"""The operator's fixed cost (issue 11, "Start-up and memory"): boto3 is loaded only
when the first S3 client is built, and every client after the first shares one
boto3 Session (a client of its own Session costs ~15 MiB; bench/operator_memory.py
measures it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from modelreg.verifying import Settings, Target, Verifier

REPO = Path(__file__).resolve().parents[2]


def _fresh_interpreter(code: str) -> str:
    """What `code` prints in a new Python process with the operator on its path (imports start empty)."""
    env = dict(os.environ) | {"PYTHONPATH": str(REPO / "operator")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_operator_starts_without_boto3_and_loads_it_for_its_first_client() -> None:
    code = (
        "import sys\n"
        "import modelreg.running, modelreg.handlers, modelreg.cli\n"
        "print(any(m == 'boto3' or m.startswith('boto3.') for m in sys.modules))\n"
        "from modelreg.verifying import Verifier, Target\n"
        "v = Verifier()\n"
        "v._client(Target(endpoint='http://127.0.0.1:9', region='us-east-1', access_key='a', secret_key='b'))\n"
        "print('boto3' in sys.modules)\n"
        "v.close()\n"
    )
    assert _fresh_interpreter(code).split() == ["False", "True"]


def test_clients_for_other_credentials_share_one_session() -> None:
    v = Verifier(Settings())
    first = v._client(Target(endpoint="http://127.0.0.1:9", region="us-east-1", access_key="a", secret_key="one"))
    second = v._client(Target(endpoint="http://127.0.0.1:9", region="us-east-1", access_key="a", secret_key="two"))
    assert first is not second  # other credentials: another client …
    # … built from the same Session, so its service data is loaded once (botocore's loader).
    assert first._loader is second._loader
    other = Verifier(Settings())
    alone = other._client(Target(endpoint="http://127.0.0.1:9", region="us-east-1"))
    assert alone._loader is not first._loader  # another Verifier, another Session: what the check can tell
    v.close()
    other.close()


def test_the_operator_loads_no_typed_kubernetes_api_class_for_its_own_calls() -> None:
    """`kube` calls the API by path with plain JSON: importing CoreV1Api and the other
    typed classes loaded ~330 pydantic model classes (~29 MiB, bench/operator_memory.py).
    Leader election keeps the library's Lease lock, and with it the Lease API and models."""
    code = (
        "import sys\n"
        "import modelreg.running, modelreg.handlers, modelreg.cli, modelreg.kube, modelreg.reconciling\n"
        "print(sorted(m.rsplit('.', 1)[1] for m in sys.modules if m.startswith('kubernetes.client.api.')))\n"
        "print(sum(m.startswith('kubernetes.client.models.') for m in sys.modules))\n"
    )
    apis, models = _fresh_interpreter(code).splitlines()
    assert apis == "['coordination_v1_api']"
    assert int(models) < 30  # the Lease's and Status's own, not every kind's
