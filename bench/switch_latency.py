"""Blue/green timing on the local control plane (kwok runs the Pods):
- promotion: `kubectl apply` of stage Production on a Staging version → the
  model's Service selects the new version;
- rollback: `kubectl apply` of Production on an archived version → the Service
  selects it again.
Medians over ROUNDS of each; and the operator's own two steps of a promotion,
watch-observed, next to their floor (a plain API write → its watch event, same
run): the request → the new Deployment scaled up, and the Deployment Available
→ the Service switched; and for the first, the required path: a minimal
controller making only the round trips it needs (`bench/required_path.py`),
sampled in the same rounds.

Run: make bench   (or .venv/bin/python bench/switch_latency.py)
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes.client import AppsV1Api, CoreV1Api, CustomObjectsApi

from bench import required_path
from bench.environment import Environment, environment
from bench.observing import Floor, Obj, Observer, operator_steps, report, report_steps
from modelreg.devcluster import cluster
from modelreg.serving import deployment_name

ROUNDS = 10
REQUIRED_DEPLOYMENT = "required-path"  # the required path's Deployment (no model's, no version's)
SERVING = {
    "image": "registry.example.com/model-server:1.0",
    "replicas": 2,
    "stagingReplicas": 1,
} | cluster.kwok_placement()  # the tainted kwok node runs the Pods


def version(n: int, stage: str, sha: str) -> str:
    return json.dumps({
        "apiVersion": "modelreg.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": f"bench-{n}"},
        "spec": {"model": "bench", "version": str(n), "stage": stage, "metrics": {"accuracy": 0.9},
                 "artifact": {"uri": "s3://modelreg-bench/model.bin", "sha256": sha}},
    })  # fmt: skip


class Bench:
    def __init__(self, env: Environment, sha: str) -> None:
        self.env, self.sha = env, sha
        client = env.api()
        self.core, self.custom = CoreV1Api(client), CustomObjectsApi(client)

    def apply(self, n: int, stage: str) -> float:
        started = time.perf_counter()
        self.env.kubectl("apply", "-n", self.env.namespace, "-f", "-", input=version(n, stage, self.sha))
        return started

    def wait(self, probe: object, what: str, started: float) -> float:
        while not probe():  # type: ignore[operator]
            if time.perf_counter() - started > 120:
                raise TimeoutError(what)
            time.sleep(0.005)
        return time.perf_counter() - started

    def serving(self) -> str | None:
        try:
            svc = self.core.read_namespaced_service("bench", self.env.namespace)
        except Exception:
            return None
        return (svc.spec.selector or {}).get("modelreg.dev/version")

    def stage(self, n: int) -> tuple[str | None, str | None]:
        obj = self.custom.get_namespaced_custom_object("modelreg.dev", "v1alpha1", self.env.namespace,
                                                       "modelversions", f"bench-{n}")  # fmt: skip
        st = obj.get("status") or {}
        ready = next((c["status"] for c in st.get("conditions", []) if c["type"] == "Ready"), None)
        return st.get("stage"), ready

    def settle(self, n: int, stage: str) -> None:
        """Set a stage and wait until the operator has seen it (Ready)."""
        started = self.apply(n, stage)
        self.wait(lambda: self.stage(n) == (stage, "True"), f"bench-{n} {stage}", started)

    def switch(self, n: int) -> float:
        started = self.apply(n, "Production")
        return self.wait(lambda: self.serving() == str(n), f"Service → {n}", started)


def main() -> None:
    with environment(operator_args=("--log-level", "debug", "--log-format", "json")) as env:
        b = Bench(env, env.seed(serving=SERVING))
        client = env.api()
        apps = AppsV1Api(client)
        deployments = Observer(client, apps.list_namespaced_deployment, env.namespace)
        services = Observer(client, b.core.list_namespaced_service, env.namespace)
        floor = Floor(client, env.namespace)
        b.apply(1, "Production")
        b.wait(lambda: b.serving() == "1", "first version served", time.perf_counter())
        promotions, rollbacks, scale_ups, switches, patched = [], [], [], [], []
        want = int(SERVING["replicas"])  # type: ignore[call-overload]
        staging = int(SERVING["stagingReplicas"])  # type: ignore[call-overload]
        required = start_required_path(b, apps, up=want, down=staging)

        def scaled_to(replicas: int) -> Callable[[float], float]:
            return lambda sent: deployments.first(_scaled(REQUIRED_DEPLOYMENT, replicas), after=sent)

        for n in range(2, 2 + ROUNDS):
            b.settle(n, "Staging")
            floor.sample()
            # The required path's scale-up, and its Pods started before the real request.
            asked = time.perf_counter()
            required.sample("bench-1", "Production", scaled_to(want))
            deployments.first(_available(REQUIRED_DEPLOYMENT, want), after=asked)
            name = deployment_name("bench", str(n))
            started = time.perf_counter()  # the request: one API patch, as `modelreg stage` sends
            patched.append(time.time())
            b.custom.patch_namespaced_custom_object("modelreg.dev", "v1alpha1", env.namespace, "modelversions",
                                                    f"bench-{n}", {"spec": {"stage": "Production"}})  # fmt: skip
            promotions.append(b.wait(lambda n=n: b.serving() == str(n), f"Service → {n}", started))
            # The operator's two steps, watch-observed: the request → the new Deployment
            # scaled up (its first write); the Deployment Available → the Service switched.
            scaled = deployments.first(_scaled(name, want), after=started)
            available = deployments.first(_available(name, want), after=scaled)
            switched = services.first(_selects(str(n)), after=started)
            scale_ups.append(scaled - started)
            switches.append(switched - available)
            b.settle(n - 1, "Archived")  # acknowledge the superseded version, as the CLI does
            required.sample("bench-1", "Staging", scaled_to(staging), record=False)  # back, not measured
            floor.sample()
            rollbacks.append(b.switch(n - 1))
            b.settle(n, "Archived")
        report("request → new Deployment scaled up", scale_ups, floor.samples)
        required_path.report(required.samples, floor.samples, scale_ups, write="Deployment scaled")
        report_steps(operator_steps(env.operator_log, patched))  # "serving": the scale-up, then the rest
        report("Deployment Available → Service switched", switches, floor.samples)
        for what, samples in (("promotion (Staging → Production)", promotions), ("rollback (Archived → Production)",
                                                                               rollbacks)):  # fmt: skip
            ms = sorted(s * 1000 for s in samples)
            print(f"{what}: apply → Service switched, {len(ms)} runs (ms): median {statistics.median(ms):.0f}"
                  f"   min {ms[0]:.0f}   max {ms[-1]:.0f} (includes kwok starting the Pods)")  # fmt: skip


def start_required_path(b: Bench, apps: AppsV1Api, *, up: int, down: int) -> required_path.RequiredPath:
    """The required path on a copy of bench-1 (its spec), scaling a copy of bench-1's
    Deployment (its Pod template and placement, at `down` replicas) between `down` and `up`."""
    ns, client = b.env.namespace, b.custom.api_client
    required_path.install_crd(b.env)
    served = client.sanitize_for_serialization(apps.read_namespaced_deployment(deployment_name("bench", "1"), ns))
    deployment = required_path.deployment_copy(served, REQUIRED_DEPLOYMENT)
    deployment["spec"]["replicas"] = down
    apps.create_namespaced_deployment(ns, deployment)
    real = b.custom.get_namespaced_custom_object("modelreg.dev", "v1alpha1", ns, "modelversions", "bench-1")
    version = required_path.version_copy(real)
    version["spec"]["stage"] = "Staging"
    write = required_path.scales(REQUIRED_DEPLOYMENT, up=up, down=down)
    required = required_path.RequiredPath(client, b.env.s3(), namespace=ns, write=write)
    b.custom.create_namespaced_custom_object(required_path.GROUP, required_path.VERSION, ns, "modelversions", version)
    return required


def _scaled(name: str, want: int) -> Callable[[Obj], bool]:
    return lambda o: bool(o["metadata"]["name"] == name and (o.get("spec") or {}).get("replicas") == want)


def _available(name: str, want: int) -> Callable[[Obj], bool]:
    def probe(o: Obj) -> bool:
        st = o.get("status") or {}
        return bool(o["metadata"]["name"] == name and st.get("observedGeneration") == o["metadata"].get("generation")
                    and st.get("availableReplicas") == want and st.get("updatedReplicas") == want)  # fmt: skip

    return probe


def _selects(version: str) -> Callable[[Obj], bool]:
    """The model's Service selects `version`."""

    def probe(o: Obj) -> bool:
        selector = (o.get("spec") or {}).get("selector") or {}
        return bool(o["metadata"]["name"] == "bench" and selector.get("modelreg.dev/version") == version)

    return probe


if __name__ == "__main__":
    main()
