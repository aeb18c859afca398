"""What do Deployments and Services that are not ours cost the operator? Issue 11:
its watches of Deployments and Services are restricted server-side to ours (a
label selector, `handlers.configure`), so a cluster full of other workloads
costs it nothing. On the local control plane, with the operator watching its
namespace and one model there, this creates COUNT unrelated Deployments (0
replicas) and COUNT unrelated Services (headless: the local service IP range is
small) in that same namespace, then changes a label on each, and prints the
operator's CPU seconds and RSS over that time next to the same figures over an equally long idle period just before (the
floor: what the operator costs when nothing happens), and how many watch events
an unselected watch of the same kinds received meanwhile (what the selector
spares the operator).

Run: .venv/bin/python bench/unrelated_objects.py [COUNT]   (also in `make bench`, COUNT=2000)
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import watch
from kubernetes.client import AppsV1Api, CoreV1Api, CustomObjectsApi

from bench.environment import Environment, environment
from bench.scale import proc_stats


def unrelated(count: int, label: str) -> str:
    items = []
    for i in range(count):
        meta = {"name": f"other-{i:05d}", "labels": {"app": f"other-{i:05d}", "round": label}}
        pod = {"metadata": {"labels": {"app": meta["name"]}},
               "spec": {"containers": [{"name": "c", "image": "registry.example.com/other:1"}]}}  # fmt: skip
        items.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta,
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": meta["name"]}}, "template": pod},
            }
        )
        items.append({"apiVersion": "v1", "kind": "Service", "metadata": meta,
                      "spec": {"clusterIP": "None", "selector": {"app": meta["name"]},
                               "ports": [{"port": 80}]}})  # fmt: skip
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


class Counter:
    """An unselected watch of one kind: the events the operator would have received without its selector."""

    def __init__(self, list_fn: Callable[..., object], namespace: str) -> None:
        self.events = self.bytes = 0
        self._watch = watch.Watch()
        threading.Thread(target=self._run, args=(list_fn, namespace), daemon=True).start()

    def _run(self, list_fn: Callable[..., object], namespace: str) -> None:
        for event in self._watch.stream(list_fn, namespace):
            self.events += 1
            self.bytes += len(json.dumps(event.get("raw_object") or {}))


def main(count: int) -> None:
    with environment() as env:
        env.seed()  # one model (registry-only), so the operator has something of its own
        client = env.api()
        models = CustomObjectsApi(client)
        deadline = time.monotonic() + 120
        while not reconciled(models, env.namespace):
            if time.monotonic() > deadline:
                raise TimeoutError("the operator never reconciled model bench")
            time.sleep(0.2)
        time.sleep(10)  # its first reconcile is over (it loads what it needs once): what follows is steady state
        counters = [Counter(AppsV1Api(client).list_namespaced_deployment, env.namespace),
                    Counter(CoreV1Api(client).list_namespaced_service, env.namespace)]  # fmt: skip
        rss0, _, cpu0 = proc_stats(env.operator_pid)
        started = time.monotonic()
        churn(env, count)
        took = time.monotonic() - started
        rss1, _, cpu1 = proc_stats(env.operator_pid)
        time.sleep(took)  # the floor: the same time with nothing happening (after, so the operator is warm)
        _, _, cpu2 = proc_stats(env.operator_pid)
        events, size = sum(c.events for c in counters), sum(c.bytes for c in counters)
        print(f"{count} unrelated Deployments and {count} Services created, then relabelled ({took:.0f} s): "
              f"operator CPU {cpu1 - cpu0:.2f} s   floor (the same time idle) {cpu2 - cpu1:.2f} s")  # fmt: skip
        print(f"  operator RSS before {rss0:.0f} MiB, after {rss1:.0f} MiB (+{rss1 - rss0:.1f})")
        print(f"  an unselected watch of the same kinds received {events} events ({size / 2**20:.1f} MiB of JSON) "
              "meanwhile; the operator's selected watches, none of them")  # fmt: skip


def reconciled(models: CustomObjectsApi, namespace: str) -> bool:
    model = models.get_namespaced_custom_object("modelreg.dev", "v1alpha1", namespace, "registeredmodels", "bench")
    return bool((model.get("status") or {}).get("observedGeneration"))


def churn(env: Environment, count: int) -> None:
    env.kubectl("create", "-n", env.namespace, "-f", "-", input=unrelated(count, "1"))
    env.kubectl("label", "-n", env.namespace, "deployments,services", "-l", "round=1", "round=2", "--overwrite")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
