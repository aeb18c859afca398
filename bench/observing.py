"""Watch-observed timings for the latency benchmarks, with their floor.

A figure is the time from a request to the watch event that shows its effect;
its floor is the time from a plain API write (a ConfigMap's data) to the watch
event that shows it, measured the same way in the same run. Used by
`stage_change_latency` and `switch_latency`.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client import ApiClient, CoreV1Api

Obj = dict[str, Any]


class Observer:
    """Every event of one watch, with the moment it arrived (perf_counter)."""

    def __init__(self, client: ApiClient, list_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.client = client
        self.events: list[tuple[float, Obj]] = []
        self._lock = threading.Lock()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(list_fn, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, list_fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        while True:
            try:
                for event in self._watch.stream(list_fn, *args, **kwargs):
                    obj = event["object"]
                    raw = obj if isinstance(obj, dict) else self.client.sanitize_for_serialization(obj)
                    with self._lock:
                        self.events.append((time.perf_counter(), raw))
            except Exception:  # an expired watch: start again (the benchmark's deadline bounds it)
                time.sleep(0.05)

    def first(self, predicate: Callable[[Obj], bool], *, after: float, timeout: float = 120) -> float:
        """When the first event at or after `after` matching `predicate` arrived."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self._lock:
                found = next((t for t, obj in self.events if t >= after and predicate(obj)), None)
            if found is not None:
                return found
            time.sleep(0.002)
        raise TimeoutError("no matching watch event")


class Floor:
    """API write → watch event of a ConfigMap nobody else touches."""

    def __init__(self, client: ApiClient, namespace: str) -> None:
        self.core, self.namespace, self.count = CoreV1Api(client), namespace, 0
        self.core.create_namespaced_config_map(namespace, {"metadata": {"name": "bench-floor"}, "data": {"n": "0"}})
        self.observer = Observer(client, self.core.list_namespaced_config_map, namespace,
                                 field_selector="metadata.name=bench-floor")  # fmt: skip
        self.samples: list[float] = []

    def sample(self) -> float:
        self.count += 1
        value = str(self.count)
        started = time.perf_counter()
        self.core.patch_namespaced_config_map("bench-floor", self.namespace, {"data": {"n": value}})
        seen = self.observer.first(lambda o: (o.get("data") or {}).get("n") == value, after=started)
        self.samples.append(seen - started)
        return seen - started


def report(name: str, samples: list[float], floor: list[float], *, target: float = 3.0) -> None:
    """One line: the figure's median, the floor's median, their ratio and the target."""
    fig, flo = statistics.median(samples) * 1000, statistics.median(floor) * 1000
    ms = sorted(s * 1000 for s in samples)
    print(f"{name}: median {fig:.1f} ms (min {ms[0]:.1f}, max {ms[-1]:.1f}, n={len(ms)})   "
          f"floor (API write → watch event) {flo:.1f} ms   ratio {fig / flo:.1f}x"
          f"   target ≤ {target:.0f}x")  # fmt: skip
