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


def clock() -> str:
    return time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"


def test_sigkill_during_production_switches(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    rng = random.Random(fault_seed())
    invariants.require_endpoint = True  # nothing here takes the model offline
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
        kills = [rng.uniform(0, 2.5) for _ in range(rng.choice((1, 1, 2)))]
        print(f"{clock()} round {round_}: {serving} -> {target}, SIGKILL after {', '.join(f'{k:.2f}s' for k in kills)}")
        # As `modelreg stage` does it: the new request first, then the old one archived.
        set_stage(kube, namespace, f"m-{target}", "Production")
        set_stage(kube, namespace, f"m-{serving}", "Archived")
        for delay in kills:
            time.sleep(delay)  # the fault's moment is the point of this test, not a wait for a state
            operator.kill()
            print(f"{clock()} SIGKILL")
            operator.start()
        wait_serving(kube, namespace, "m", target)
        wait_stage(kube, namespace, f"m-{target}", "Production")
        wait_stage(kube, namespace, f"m-{serving}", "Archived")
        serving = target

    wait_replicas(kube, namespace, f"m-{serving}", 2)
    stages = {n: status(kube, namespace, f"m-{n}").get("stage") for n in VERSIONS}
    assert [n for n, s in stages.items() if s == "Production"] == [serving], stages
    assert status(kube, namespace, "m", "registeredmodel").get("productionVersion") == serving
    assert invariants.observations > 0


def test_gitops_sync_archives_before_it_promotes(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, invariants: Invariants
) -> None:
    """Argo CD or Flux may apply the demotion of v1 in one sync and the promotion
    of v2 in the next: the endpoint must be handed over, never dropped."""
    invariants.require_endpoint = True
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
