"""Faults while Production changes hands, with the serving invariants checked
throughout: the operator SIGKILLed at random moments of a switch, and a GitOps
sync that applies a demotion before the matching promotion.

The kill moments come from a seeded random generator; the seed is printed, and
MODELREG_FAULT_SEED replays a run.
"""

from __future__ import annotations

import os
import random
import time

from tests.e2e.conftest import S3, Cluster, Operator
from tests.e2e.invariants import Invariants
from tests.e2e.registry import (
    SERVING,
    apply,
    model_manifest,
    serving_version,
    set_stage,
    status,
    upload,
    version_manifest,
    wait_replicas,
    wait_serving,
    wait_stage,
)

SEED_ENV = "MODELREG_FAULT_SEED"
ROUNDS = 6
VERSIONS = ("1", "2", "3")


def fault_seed() -> int:
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**32))
    print(f"fault seed {seed} (replay with {SEED_ENV}={seed})")
    return seed


def stage_of(kube: Cluster, namespace: str, version: str) -> str | None:
    return status(kube, namespace, f"m-{version}").get("stage")


def clock() -> str:
    return time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"


def test_sigkill_during_production_switches(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    rng = random.Random(fault_seed())
    apply(kube, namespace, model_manifest("m", serving=SERVING))
    for n in VERSIONS:
        art = upload(s3)
        stage = "Production" if n == "1" else "Staging"  # Production only ever comes from Staging or Archived
        apply(kube, namespace, version_manifest(f"m-{n}", model="m", version=n, uri=art.uri, sha256=art.sha256,
                                                stage=stage))  # fmt: skip
    wait_serving(kube, namespace, "m", "1")
    for n in VERSIONS[1:]:
        wait_stage(kube, namespace, f"m-{n}", "Staging")
    invariants.wait_served()

    serving = "1"
    for round_ in range(ROUNDS):
        target = rng.choice([n for n in VERSIONS if n != serving])
        # One kill per round (each restart costs seconds): mostly at a random moment
        # of the switch, counted from the first write (a switch on kwok takes about
        # a second); sometimes before it, so the restarted operator finds the
        # change already made and must act on what it lists at start.
        delay = None if rng.random() < 0.25 else rng.uniform(0, 1.2)
        moment = "before the change" if delay is None else f"{delay:.2f}s into the change"
        print(f"{clock()} round {round_}: {serving} -> {target}, SIGKILL {moment}")
        if delay is None:
            operator.kill()
        began = time.monotonic()
        # As `modelreg stage` does it: the new request first, then the old one archived.
        set_stage(kube, namespace, f"m-{target}", "Production")
        set_stage(kube, namespace, f"m-{serving}", "Archived")
        if delay is not None:
            # The fault's moment is the point of this test, not a wait for a state.
            time.sleep(max(0.0, began + delay - time.monotonic()))
            operator.kill()
        done = (serving_version(kube, namespace, "m") == target and stage_of(kube, namespace, target) == "Production"
                and stage_of(kube, namespace, serving) == "Archived")  # fmt: skip
        print(f"{clock()} killed {'after the switch was done' if done else 'mid-switch'}; restarting")
        operator.start()
        wait_serving(kube, namespace, "m", target)
        wait_stage(kube, namespace, f"m-{target}", "Production")
        wait_stage(kube, namespace, f"m-{serving}", "Archived")
        serving = target

    wait_replicas(kube, namespace, f"m-{serving}", 2)
    stages = {n: stage_of(kube, namespace, n) for n in VERSIONS}
    assert [n for n, s in stages.items() if s == "Production"] == [serving], stages
    assert status(kube, namespace, "m", "registeredmodel").get("productionVersion") == serving
    assert invariants.observations > 0


def test_gitops_sync_archives_before_it_promotes(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    """Argo CD or Flux may apply the demotion of v1 in one sync and the promotion
    of v2 in the next: the endpoint must be handed over, never dropped."""
    a, b = upload(s3), upload(s3)

    def sync(stage_1: str, stage_2: str) -> None:
        apply(kube, namespace, "\n---\n".join([
            model_manifest("m", serving=SERVING),
            version_manifest("m-1", model="m", version="1", uri=a.uri, sha256=a.sha256, stage=stage_1),
            version_manifest("m-2", model="m", version="2", uri=b.uri, sha256=b.sha256, stage=stage_2),
        ]))  # fmt: skip

    sync("Production", "Staging")
    wait_serving(kube, namespace, "m", "1")
    wait_stage(kube, namespace, "m-1", "Production")
    wait_stage(kube, namespace, "m-2", "Staging")
    wait_replicas(kube, namespace, "m-2", 1)
    invariants.wait_served()

    sync("Archived", "Staging")
    time.sleep(1)  # the next sync comes a second later: the operator acts on the demotion alone first
    sync("Archived", "Production")
    wait_serving(kube, namespace, "m", "2")
    wait_stage(kube, namespace, "m-2", "Production")
    wait_stage(kube, namespace, "m-1", "Archived")
    wait_replicas(kube, namespace, "m-2", 2)
