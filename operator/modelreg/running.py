"""Start the operator: Kopf with our handlers, scoped to one namespace or all.

Called by `modelreg run` and by the test fixtures (as a subprocess).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import tracemalloc
from pathlib import Path

import kopf

from modelreg import handlers, kube, leading, logs, metrics, reconciling, serving, verifying
from modelreg.workqueue import WorkQueue


def run_operator(
    *,
    namespace: str | None,
    kubeconfig: str | None = None,
    liveness: str | None = None,
    resync: float = 60.0,
    verify: verifying.Settings | None = None,
    metrics_bind: tuple[str, int] | None = None,
    log_format: str = "text",
    log_level: str = "info",
    election: leading.Settings | None = None,
) -> None:
    logs.configure(log_format)
    logging.getLogger("modelreg").setLevel(log_level.upper())
    _profile_on_signal()
    # Kopf says "succeeded" for every event handled, and aiohttp logs every probe.
    for noisy in ("kopf.objects", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if kubeconfig:
        kube.use_kubeconfig(kubeconfig)  # for Kopf's own login too
    client = kube.new_client(kubeconfig)
    # Serving Pods run this same image as their init container (`modelreg fetch-artifact`).
    image = os.environ.get("MODELREG_OPERATOR_IMAGE", serving.DEFAULT_OPERATOR_IMAGE)
    # A finished artifact check puts its model back on the queue, from the verifier's own threads.
    measured = metrics.Metrics()
    if metrics_bind is not None:
        metrics.serve(measured, metrics_bind)
        logging.getLogger(__name__).info("serving metrics on %s:%d", *metrics_bind)
    queue: WorkQueue[handlers.ModelKey] = WorkQueue(measured.queue)
    verifier = verifying.Verifier(verify, notify=queue.add, metrics=measured)
    context = reconciling.Context(client=client, operator_image=image, verifier=verifier)
    # Its own client: renewing the lease never queues behind the reconciles' calls.
    elected = leading.Election(election, kube.new_client(kubeconfig)) if election is not None else None
    memo = handlers.Runtime(context=context, namespace=namespace, resync_seconds=resync, queue=queue,
                            metrics=measured, election=elected)  # fmt: skip
    asyncio.run(
        kopf.operator(
            # Kopf's handlers only queue keys, so every replica may run them; which one
            # reconciles is decided by our Lease (leading.py), not by Kopf's peering.
            standalone=True,
            clusterwide=namespace is None,
            namespaces=[namespace] if namespace else [],
            memo=memo,
            liveness_endpoint=liveness,
        )
    )
    # asyncio.run has waited for the reconciles still running on their threads:
    # nothing of ours writes any more, so a follower may take over now.
    if elected is not None:
        elected.release()


PROFILE_ENV = "MODELREG_TRACEMALLOC_FILE"


def _profile_on_signal() -> None:
    """Opt-in memory profile for the benchmarks (`bench/scale.py --tracemalloc`):
    with PYTHONTRACEMALLOC=1 (tracing from the interpreter's start, imports included)
    and $MODELREG_TRACEMALLOC_FILE set, SIGUSR1 writes what is held now, the top 20
    by line and by file, to that file. Off by default: tracing costs memory and CPU."""
    path = os.environ.get(PROFILE_ENV)
    if not path or not tracemalloc.is_tracing():
        return

    def dump(*_: object) -> None:
        snapshot = tracemalloc.take_snapshot()
        lines = [f"traced {tracemalloc.get_traced_memory()[0] / 2**20:.1f} MiB held"]
        for group in ("lineno", "filename"):
            lines.append(f"top 20 by {group} (MiB, blocks):")
            for stat in snapshot.statistics(group)[:20]:
                lines.append(f"  {stat.size / 2**20:7.2f} {stat.count:8d}  {stat.traceback[0]}")
        tmp = Path(path + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(path)  # whole, so a reader waiting for the file never sees half of it

    signal.signal(signal.SIGUSR1, dump)
