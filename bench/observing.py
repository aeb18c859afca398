"""Watch-observed timings for the latency benchmarks, with their floor.

A figure is the time from a request to the watch event that shows its effect;
its floor is the time from a plain API write (a ConfigMap's data) to the watch
event that shows it, measured the same way in the same run. Used by
`stage_change_latency` and `switch_latency`.
"""

from __future__ import annotations

import datetime
import json
import re
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import watch
from kubernetes.client import ApiClient, CoreV1Api
from urllib3.exceptions import MaxRetryError

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
            except MaxRetryError:  # the API server is gone: its environment ended (left running,
                return  # the thread would keep a core busy in the benchmarks that `make bench` runs next)
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


def operator_steps(log: Path, patched: list[float]) -> dict[str, list[float]]:
    """Where the time of each change went, from the operator's own log (run with
    `--log-level debug --log-format json`): for the i-th patch (wall clock,
    `patched[i]`), the time until the operator's watch delivered it, then the
    steps of the first reconcile after it that wrote something (`timings` lines,
    see `reconciling.Laps`). Milliseconds, per step, one entry per change."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    steps: dict[str, list[float]] = {}
    at = 0
    for when in patched:
        event = next((i for i in range(at, len(lines)) if lines[i]["message"].startswith("event MODIFIED")
                      and _wall(lines[i]["time"]) >= when - 0.001), None)  # fmt: skip
        if event is None:
            break
        timing = next((i for i in range(event, len(lines)) if lines[i]["message"].startswith("timings")
                       and not lines[i]["message"].endswith("; 0 writes")), None)  # fmt: skip
        if timing is None:
            break
        at = timing + 1
        steps.setdefault("watch delivers the patch", []).append((_wall(lines[event]["time"]) - when) * 1000)
        head, rest = lines[timing]["message"].removeprefix("timings (ms): ").split("; ")[0].split(", ", 1)
        for part in [head, *rest.split(", ")]:
            name, ms = part.rsplit(" ", 1)
            steps.setdefault(name, []).append(float(ms))
    return steps


def _wall(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


def report_steps(steps: dict[str, list[float]]) -> None:
    """The median of each step, in order (a reconcile's steps as `reconciling.Laps` names them)."""
    print("  where it goes (medians, ms; from the operator's debug log, clock resolution 1 ms for the first):")
    for name, values in steps.items():
        print(f"    {name:<28} {statistics.median(values):6.1f}   (n={len(values)})")


def metric(port: int, name: str) -> float:
    """The sum of a metric's series, scraped from an operator's /metrics on `port`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(m) for m in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M))
