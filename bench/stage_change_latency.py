"""How long from `kubectl apply` of a stage change to the status showing the
new effective stage? Median over 20 changes (Development ⇄ Staging), each with
real artifact verification (one HEAD, digest cached) on the local control plane.

Run: make bench   (or .venv/bin/python bench/stage_change_latency.py)
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes.client import CustomObjectsApi

from bench.environment import environment

CHANGES = 20


def manifest(stage: str, sha: str) -> str:
    return json.dumps({
        "apiVersion": "modelreg.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": "bench-1"},
        "spec": {"model": "bench", "version": "1", "stage": stage, "metrics": {"accuracy": 0.9},
                 "artifact": {"uri": "s3://modelreg-bench/model.bin", "sha256": sha}},
    })  # fmt: skip


def main() -> None:
    with environment() as env:
        sha = env.seed()
        api = CustomObjectsApi(env.api())

        def effective() -> str | None:
            obj = api.get_namespaced_custom_object(
                "modelreg.dev", "v1alpha1", env.namespace, "modelversions", "bench-1"
            )
            return (obj.get("status") or {}).get("stage")

        applied: list[float] = []

        def change(stage: str) -> float:
            started = time.perf_counter()
            env.kubectl("apply", "-n", env.namespace, "-f", "-", input=manifest(stage, sha))
            applied.append(time.perf_counter() - started)
            deadline = started + 60
            while effective() != stage:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"stage {stage} never showed")
                time.sleep(0.005)
            return time.perf_counter() - started

        change("Development")  # registration and first verification, not measured
        samples = [change("Staging" if i % 2 == 0 else "Development") for i in range(CHANGES)]
        ms = sorted(s * 1000 for s in samples)
        print(f"stage change → effective stage in status, {CHANGES} changes (ms):")
        print(f"  median {statistics.median(ms):.0f}   p90 {ms[int(0.9 * len(ms)) - 1]:.0f}"
              f"   min {ms[0]:.0f}   max {ms[-1]:.0f}")  # fmt: skip
        print(f"  of which the kubectl apply command itself: median {statistics.median(applied[1:]) * 1000:.0f}")


if __name__ == "__main__":
    main()
