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
    env = dict(os.environ) | {"PYTHONPATH": str(REPO / "operator")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


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
