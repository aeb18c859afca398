"""How long from a stage patch to the status showing the new effective stage,
watch-observed? Median over CHANGES changes (Development ⇄ Staging), each with
real artifact verification (one HEAD, digest cached) on the local control plane,
next to its floor: a plain API write to the watch event that shows it, measured
the same way in the same run (one floor sample between two changes), and
the required path: a minimal controller making only the round trips a change
needs (`bench/required_path.py`), sampled in the same rounds.

Run: make bench   (or .venv/bin/python bench/stage_change_latency.py)
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes.client import CustomObjectsApi

from bench import required_path
from bench.environment import Environment, environment
from bench.observing import Floor, Obj, Observer, operator_steps, report, report_steps

CHANGES = 30
GVR = ("modelreg.dev", "v1alpha1")


def manifest(stage: str, sha: str) -> str:
    return json.dumps({
        "apiVersion": "modelreg.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": "bench-1"},
        "spec": {"model": "bench", "version": "1", "stage": stage, "metrics": {"accuracy": 0.9},
                 "artifact": {"uri": "s3://modelreg-bench/model.bin", "sha256": sha}},
    })  # fmt: skip


def main() -> None:
    with environment(operator_args=("--log-level", "debug", "--log-format", "json")) as env:
        sha = env.seed()
        client = env.api()
        api = CustomObjectsApi(client)
        versions = Observer(client, api.list_namespaced_custom_object, *GVR, env.namespace, "modelversions")
        floor = Floor(client, env.namespace)

        def shows(observer: Observer, stage: str, after: float) -> float:
            return observer.first(lambda o: (o.get("status") or {}).get("stage") == stage
                                  and (o.get("status") or {}).get("observedGeneration")
                                  == o["metadata"].get("generation"), after=after)  # fmt: skip

        started = time.perf_counter()
        env.kubectl("apply", "-n", env.namespace, "-f", "-", input=manifest("Development", sha))
        shows(versions, "Development", started)  # registration and first verification, not measured
        required, copies = start_required_path(env, client, api)
        shows(copies, "Development", started)
        samples, patched = [], []
        for i in range(CHANGES):
            stage = "Staging" if i % 2 == 0 else "Development"
            floor.sample()
            time.sleep(0.05)  # let the floor's write settle; nothing else is in flight
            started = time.perf_counter()
            patched.append(time.time())
            api.patch_namespaced_custom_object(*GVR, env.namespace, "modelversions", "bench-1",
                                               {"spec": {"stage": stage}})  # fmt: skip
            samples.append(shows(versions, stage, started) - started)
            time.sleep(0.1)  # the echo of the status write and its reconcile, before the next change
            required.sample("bench-1", stage, functools.partial(shows, copies, stage))
            time.sleep(0.1)  # its echo too
        report("stage patch → status shows it (watch-observed)", samples, floor.samples)
        required_path.report(required.samples, floor.samples, samples, write="status write")
        report_steps(operator_steps(env.operator_log, patched))


def start_required_path(
    env: Environment, client: Any, api: CustomObjectsApi
) -> tuple[required_path.RequiredPath, Observer]:
    """The required path on a copy of bench-1 (its spec, and the operator's status of it
    to write), and a watch of the copy."""
    required_path.install_crd(env)
    real: Obj = api.get_namespaced_custom_object(*GVR, env.namespace, "modelversions", "bench-1")
    required = required_path.RequiredPath(client, env.s3(), namespace=env.namespace,
                                          write=required_path.writes_status(real["status"]))  # fmt: skip
    copies = Observer(client, api.list_namespaced_custom_object, required_path.GROUP, required_path.VERSION,
                      env.namespace, "modelversions")  # fmt: skip
    api.create_namespaced_custom_object(required_path.GROUP, required_path.VERSION, env.namespace,
                                        "modelversions", required_path.version_copy(real))  # fmt: skip
    return required, copies


if __name__ == "__main__":
    main()
