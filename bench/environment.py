"""A throwaway environment for benchmarks: dev cluster, S3 server, CRDs and
the operator, all torn down when the `with` block ends."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelreg import artifacts, kube
from modelreg.api.crds import write_crds
from modelreg.devcluster import building, cluster, processes

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Environment:
    state: cluster.ClusterState
    bins: building.Binaries
    namespace: str
    operator_log: Path
    operator_pid: int = 0

    def kubectl(self, *args: str, input: str | None = None) -> str:
        out = subprocess.run(
            [str(self.bins.kubectl), f"--kubeconfig={self.state.kubeconfig}", *args],
            input=input, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr}")
        return out.stdout

    def s3(self) -> object:
        c = self.state.s3
        return artifacts.new_s3_client(endpoint=c.endpoint, region=c.region, access_key=c.access_key,
                                       secret_key=c.secret_key)  # fmt: skip

    def api(self) -> object:
        return kube.new_client(self.state.kubeconfig)

    def seed(self, *, serving: dict[str, object] | None = None) -> str:
        """Upload the bench artifact and register model `bench`; returns the artifact's SHA-256."""
        s3: Any = self.s3()
        data = b"benchmark model" * 1000
        artifacts.ensure_bucket(s3, "modelreg-bench")
        s3.put_object(Bucket="modelreg-bench", Key="model.bin", Body=data, ChecksumAlgorithm="SHA256")
        spec = {"serving": serving} if serving else {}
        model = {"apiVersion": "modelreg.dev/v1alpha1", "kind": "RegisteredModel", "metadata": {"name": "bench"},
                 "spec": spec}  # fmt: skip
        self.kubectl("apply", "-n", self.namespace, "-f", "-", input=json.dumps(model))
        return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def environment(namespace: str = "bench", operator_args: tuple[str, ...] = ()) -> Iterator[Environment]:
    bins = building.ensure_binaries()
    with tempfile.TemporaryDirectory(prefix="modelreg-bench-") as tmp:
        state = cluster.up(Path(tmp) / "cluster", bins=bins, tie_to_parent=True)
        try:
            env = Environment(state=state, bins=bins, namespace=namespace, operator_log=Path(tmp) / "operator.log")
            crds = Path(tmp) / "crds"
            write_crds(crds)
            env.kubectl("apply", "--server-side", "-f", str(crds))
            env.kubectl("wait", "--for=condition=Established", "-f", str(crds))
            env.kubectl("create", "namespace", namespace)
            operator_env = os.environ | state.env()
            argv = [sys.executable, "-m", "modelreg", "run", "--namespace", namespace, *operator_args]
            proc = processes.start("operator", argv, log=env.operator_log, env=operator_env,
                                   tie_to_parent=True)  # fmt: skip
            time.sleep(0.5)
            if not proc.alive():
                raise RuntimeError(processes.tail(proc.log))
            env.operator_pid = proc.pid
            try:
                yield env
            finally:
                processes.stop(proc)
        finally:
            cluster.down(Path(tmp) / "cluster")
