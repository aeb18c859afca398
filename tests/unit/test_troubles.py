"""Why a serving rollout is stuck, read from its Pods (pure), and what
`rollout_of` makes of it. The Pods are shaped as the API server returns them
for a real kubelet (kwok does not run containers, so e2e cannot make these)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelreg import lifecycle, serving, troubles
from modelreg.api.common import Stage
from modelreg.facts import RolloutState
from tests.unit.lifecycle_builders import EARLIER, NOW, condition, model, replan, version

Obj = dict[str, Any]
HASH = "7d9c5b6f4"
MISMATCH = ("fetch-artifact: ChecksumMismatch: s3://models/iris/3/model.onnx has SHA-256 "
            f"{'a' * 64}, expected {'b' * 64}; nothing was written")  # fmt: skip


def pod(name: str, *, init: Obj | None = None, server: Obj | None = None, ready: bool = False,
        scheduled: Obj | None = None, template_hash: str = HASH, **meta: Any) -> Obj:  # fmt: skip
    """A serving Pod; by default its init container completed and the server runs (not yet ready)."""
    init = init or {"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}, "ready": True}
    server = server or {"state": {"running": {"startedAt": "2026-11-30T15:00:00Z"}}, "ready": ready}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml", "labels": {"modelreg.dev/model": "iris",
                     "modelreg.dev/version": "3", "pod-template-hash": template_hash}, **meta},
        "status": {
            "phase": "Running" if ready else "Pending",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True" if ready else "False", "reason": "ContainersNotReady"},
                {"type": "ContainersReady", "status": "True" if ready else "False"},
                scheduled or {"type": "PodScheduled", "status": "True"},
            ],
            "initContainerStatuses": [{"name": "fetch-artifact", "image": "registry.local/modelreg:0.1.0",
                                       "restartCount": 0, "lastState": {}, **init}],
            "containerStatuses": [{"name": "server", "image": "registry.local/iris-server:1", "restartCount": 0,
                                   "lastState": {}, "started": ready, **server}],
        },
    }  # fmt: skip


def crash_looping(restarts: int, backoff: str) -> Obj:
    return {
        "restartCount": restarts,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {backoff} restarting failed "
                              "container=fetch-artifact pod=iris-3-7d9c5b6f4-x2kqp_ml(0b5e…)"}},
        "lastState": {"terminated": {"exitCode": 4, "reason": "Error", "message": MISMATCH,
                                     "startedAt": "2026-11-30T15:00:01Z", "finishedAt": "2026-11-30T15:00:02Z",
                                     "containerID": f"containerd://{restarts}"}},
    }  # fmt: skip


FIRST_EXIT = {"state": {"terminated": {"exitCode": 3, "reason": "Error", "message": "fetch-artifact: ArtifactNotFound: "
                                       "s3://models/iris/3/model.onnx does not exist"}}}  # fmt: skip
RETRYING = {"restartCount": 1, "state": {"running": {"startedAt": "2026-11-30T15:00:05Z"}},
            "lastState": FIRST_EXIT["state"]}  # fmt: skip
UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. "
                 "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."}  # fmt: skip
WAITING_POD = {"state": {"waiting": {"reason": "PodInitializing"}}}


def pull(reason: str) -> Obj:
    message = {"ErrImagePull": 'failed to pull and unpack image "registry.local/iris-server:9": not found',
               "ImagePullBackOff": 'Back-off pulling image "registry.local/iris-server:9"'}[reason]  # fmt: skip
    return {"image": "registry.local/iris-server:9", "state": {"waiting": {"reason": reason, "message": message}}}


def test_a_crash_looping_init_container_is_stuck_and_quotes_its_termination_message() -> None:
    trouble = troubles.pod_trouble([pod("iris-3-7d9c5b6f4-x2kqp", init=crash_looping(2, "20s"), server=WAITING_POD)])
    assert trouble == troubles.Trouble(
        f"Pod iris-3-7d9c5b6f4-x2kqp: init container fetch-artifact keeps failing: exited 4: {MISMATCH}",
        stuck=True,
    )


def test_the_message_holds_while_the_trouble_does() -> None:
    """Restart counts and back-off delays change every few seconds: they are left out,
    or every reconcile would rewrite status."""
    later = troubles.pod_trouble([pod("iris-3-7d9c5b6f4-x2kqp", init=crash_looping(5, "2m40s"), server=WAITING_POD)])
    early = troubles.pod_trouble([pod("iris-3-7d9c5b6f4-x2kqp", init=crash_looping(1, "10s"), server=WAITING_POD)])
    assert later == early
    assert troubles.pod_trouble([pod("p", server=pull("ErrImagePull"))]) == troubles.pod_trouble(
        [pod("p", server=pull("ImagePullBackOff"))]
    )


def test_a_first_exit_is_reported_but_not_stuck() -> None:
    trouble = troubles.pod_trouble([pod("iris-3-a", init=FIRST_EXIT, server=WAITING_POD)])
    assert trouble == troubles.Trouble(
        "Pod iris-3-a: init container fetch-artifact exited 3: fetch-artifact: "
        "ArtifactNotFound: s3://models/iris/3/model.onnx does not exist",
        stuck=False,
    )


def test_a_crash_loop_reads_the_same_between_its_back_offs() -> None:
    """Between two back-offs the container runs its next attempt (for a failed start,
    the kubelet says RunContainerError): still the same loop, the same message."""
    looping = troubles.pod_trouble([pod("iris-3-a", init=crash_looping(3, "40s"), server=WAITING_POD)])
    next_attempt = RETRYING | {"lastState": crash_looping(3, "40s")["lastState"]}
    retrying = troubles.pod_trouble([pod("iris-3-a", init=next_attempt, server=WAITING_POD)])
    assert retrying == looping
    start_failed = {"terminated": {"exitCode": 128, "reason": "StartError", "message": 'exec: "serve": not found'}}
    loop: Obj = {"restartCount": 2, "lastState": start_failed}
    states: list[Obj] = [
        {"waiting": {"reason": "RunContainerError", "message": "failed to create task for container abc123"}},
        {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container"}},
        {"running": {}},
    ]
    said = {troubles.pod_trouble([pod("iris-3-b", server=loop | {"state": state})]) for state in states}
    assert said == {troubles.Trouble('Pod iris-3-b: container server keeps failing: exited 128 (StartError): exec: '
                                     '"serve": not found', stuck=True)}  # fmt: skip


@pytest.mark.parametrize(
    ("server", "message"),
    [
        (pull("ImagePullBackOff"), "container server cannot pull image 'registry.local/iris-server:9' "
                                   "(ErrImagePull, ImagePullBackOff)"),
        ({"state": {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "s3-creds" not found'}}},
         'container server cannot start (CreateContainerConfigError): secret "s3-creds" not found'),
        ({"state": {"waiting": {"reason": "InvalidImageName", "message": 'couldn\'t parse image name "Srv:1"'}}},
         'container server cannot start (InvalidImageName): couldn\'t parse image name "Srv:1"'),
        ({"state": {"waiting": {"reason": "RunContainerError"}}}, "container server cannot start (RunContainerError)"),
        ({"restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
          "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}},
         "container server keeps failing: exited 137 (OOMKilled)"),
        ({"restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
          "lastState": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
         "container server keeps failing (CrashLoopBackOff)"),
    ],
)  # fmt: skip
def test_stuck_containers(server: Obj, message: str) -> None:
    assert troubles.pod_trouble([pod("iris-3-b", server=server)]) == troubles.Trouble(
        f"Pod iris-3-b: {message}", stuck=True
    )


def test_an_unschedulable_pod_says_why_and_may_still_be_placed() -> None:
    trouble = troubles.pod_trouble([pod("iris-3-c", scheduled=UNSCHEDULABLE, init={"state": {}}, server={"state": {}})])
    assert trouble == troubles.Trouble(f"Pod iris-3-c cannot be scheduled: {UNSCHEDULABLE['message']}", stuck=False)


def test_healthy_starting_leaving_and_ready_pods_are_no_trouble() -> None:
    once_crashed = {"restartCount": 1, "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                    "state": {"running": {}}, "ready": True}  # fmt: skip
    leaving = {"state": {"terminated": {"exitCode": 143, "reason": "Error"}}}
    pods = [
        pod("iris-3-ok", ready=True),
        pod("iris-3-starting"),  # running, not ready yet
        pod("iris-3-pulling", server={"state": {"waiting": {"reason": "ContainerCreating"}}}),
        pod("iris-3-init", init={"state": {"running": {}}}, server=WAITING_POD),
        pod("iris-3-was-sick", server=once_crashed, ready=True),  # Ready now: its past is not the trouble
        pod("iris-3-leaving", server=leaving, deletionTimestamp="2026-11-30T15:00:00Z"),  # scaled down: 143
    ]
    assert troubles.pod_trouble(pods) is None
    assert troubles.pod_trouble([]) is None


def test_the_choice_is_stable_and_prefers_what_is_stuck() -> None:
    a_first_exit = pod("iris-3-a", init=FIRST_EXIT, server=WAITING_POD)
    b_stuck = pod("iris-3-b", server=pull("ErrImagePull"))
    c_stuck = pod("iris-3-c", init=crash_looping(1, "10s"), server=WAITING_POD)
    for order in ([a_first_exit, b_stuck, c_stuck], [c_stuck, b_stuck, a_first_exit]):
        trouble = troubles.pod_trouble(order)
        assert trouble is not None
        assert trouble.message.startswith("Pod iris-3-b: container server cannot pull image")
    # Within a Pod, the init container's failure comes first: it is why the server waits.
    both = pod("iris-3-d", init=crash_looping(1, "10s"), server=pull("ImagePullBackOff"))
    assert "init container fetch-artifact" in (troubles.pod_trouble([both]) or troubles.Trouble("", False)).message
    assert troubles.pod_trouble([pod("iris-3-e", init=RETRYING, server=WAITING_POD)]) == troubles.Trouble(
        "Pod iris-3-e: init container fetch-artifact keeps failing: exited 3: fetch-artifact: ArtifactNotFound: "
        "s3://models/iris/3/model.onnx does not exist",
        stuck=True,
    )


def test_long_messages_are_cut_to_one_line() -> None:
    init = crash_looping(1, "10s")
    init["lastState"]["terminated"]["message"] = "line one\nline two " + "x" * 1000
    trouble = troubles.pod_trouble([pod("iris-3-e", init=init, server=WAITING_POD)])
    assert trouble is not None
    detail = trouble.message.split("exited 4: ", 1)[1]
    assert detail.startswith("line one line two x")
    assert len(detail) == troubles.MAX_DETAIL
    assert "\n" not in trouble.message


# --- whose Pods ---------------------------------------------------------------------


def deployment(*, replicas: int = 2, available: int = 1, generation: int = 2, observed: int = 2,
               revision: str = "2", progressing: tuple[str, str] = ("True", "ReplicaSetUpdated")) -> Obj:  # fmt: skip
    return {
        "metadata": {"name": "iris-3", "uid": "dep-uid", "generation": generation,
                     "annotations": {troubles.REVISION: revision}},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": observed, "replicas": replicas + 1, "updatedReplicas": available,
                   "availableReplicas": available, "unavailableReplicas": replicas - available,
                   "conditions": [
                       {"type": "Available", "status": "True" if available >= replicas else "False"},
                       {"type": "Progressing", "status": progressing[0], "reason": progressing[1],
                        "message": 'ReplicaSet "iris-3-7d9c5b6f4" has timed out progressing.'}]},
    }  # fmt: skip


def replica_set(template_hash: str, revision: str, owner: str = "dep-uid") -> Obj:
    return {"metadata": {"name": f"iris-3-{template_hash}", "labels": {"pod-template-hash": template_hash},
                         "annotations": {troubles.REVISION: revision},
                         "ownerReferences": [{"kind": "Deployment", "name": "iris-3", "uid": owner,
                                              "controller": True}]}}  # fmt: skip


def test_only_the_current_replica_sets_pods_count() -> None:
    """A fixed template rolls out while the broken one's Pods are still there
    (maxUnavailable 0): their trouble is not the new template's."""
    old = pod("iris-3-5f6d7c8b9-aaaaa", init=crash_looping(4, "1m20s"), server=WAITING_POD, template_hash="5f6d7c8b9")
    new = pod("iris-3-7d9c5b6f4-bbbbb", template_hash=HASH)
    sets = [replica_set("5f6d7c8b9", "1"), replica_set(HASH, "2"), replica_set("other", "2", owner="someone-else")]
    assert troubles.current_pods(deployment(), sets, [old, new]) == [new]
    assert troubles.current_pods(deployment(revision="1"), sets, [old, new]) == [old]
    # The controller has not seen the latest spec: its revision still names the old template.
    assert troubles.current_pods(deployment(generation=3), sets, [old, new]) == []
    assert troubles.current_pods(deployment(), [], [old, new]) == []


# --- what rollout_of makes of it ----------------------------------------------------------


STUCK = troubles.Trouble(f"Pod iris-3-x: init container fetch-artifact keeps failing: exited 4: {MISMATCH}", stuck=True)
FIRST = troubles.Trouble("Pod iris-3-x: init container fetch-artifact exited 3: not found", stuck=False)


def test_stuck_pods_are_said_at_once() -> None:
    rollout = serving.rollout_of(deployment(), want_replicas=2, trouble=STUCK)
    assert (rollout.state, rollout.stuck) == (RolloutState.PROGRESSING, True)
    assert rollout.message == f"Deployment iris-3: 1/2 Pods available; {STUCK.message}"
    assert not serving.rollout_of(deployment(), want_replicas=2).stuck  # no trouble read


def test_a_first_failure_keeps_progressing_and_says_so() -> None:
    rollout = serving.rollout_of(deployment(available=0), want_replicas=2, trouble=FIRST)
    assert (rollout.state, rollout.stuck) == (RolloutState.PROGRESSING, False)
    assert rollout.message == f"Deployment iris-3: 0/2 Pods available; {FIRST.message}"
    assert rollout.available == 0


def test_the_missed_deadline_says_why_too() -> None:
    missed = deployment(available=0, progressing=("False", "ProgressDeadlineExceeded"))
    rollout = serving.rollout_of(missed, want_replicas=2, trouble=FIRST)
    assert rollout.state is RolloutState.FAILED
    assert rollout.message == (f'Deployment iris-3: ReplicaSet "iris-3-7d9c5b6f4" has timed out progressing.; '
                               f"{FIRST.message}")  # fmt: skip


def test_stuck_is_not_sticky_pods_that_recover_make_it_available() -> None:
    assert serving.rollout_of(deployment(), want_replicas=2, trouble=STUCK).stuck
    recovered = deployment(available=2)
    assert serving.fully_available(recovered)  # so its Pods are not even read
    assert serving.rollout_of(recovered, want_replicas=2).state is RolloutState.AVAILABLE
    assert serving.rollout_of(recovered, want_replicas=2, trouble=STUCK).state is RolloutState.AVAILABLE


def test_which_deployments_get_their_pods_read() -> None:
    assert not serving.fully_available(deployment(available=1))
    assert not serving.fully_available(deployment(available=2, observed=1))  # our change not seen yet
    assert serving.fully_available(deployment(available=2))
    assert serving.fully_available(deployment(replicas=0, available=0))  # archived, scaled down


# --- what status makes of it ----------------------------------------------------------


def test_a_stuck_serving_deployment_is_reported_once_and_recovers() -> None:
    """The serving version's new Pods crash-loop: Degraded at once, one Warning Event,
    no status change on the next reconciles while the trouble holds; Ready again
    once the Pods recover."""
    served = model(serving={"image": "server:1", "replicas": 2})
    v1 = version("1", Stage.PRODUCTION, effective=Stage.PRODUCTION, requested_at=EARLIER)
    stuck = {"iris-1": serving.rollout_of(deployment(), want_replicas=2, trouble=STUCK)}
    first = lifecycle.plan(served, [v1], now=NOW, rollouts=stuck)
    assert condition(first, "iris-1", "RolledOut") == ("False", "ServingRolloutFailed")
    assert first.versions["iris-1"].phase == "Degraded"
    rolled_out = next(c for c in first.versions["iris-1"].conditions if c.type == "RolledOut")
    assert MISMATCH in rolled_out.message
    assert [e.reason for e in first.events if e.warning] == ["ServingRolloutFailed"]

    # The kubelet retries: more restarts, a longer back-off, the same trouble.
    again = replan(first, served, [v1], rollouts=copy.deepcopy(stuck))
    assert again.versions == first.versions
    assert not [e for e in again.events if e.warning]

    recovered = {"iris-1": serving.rollout_of(deployment(available=2), want_replicas=2)}
    healed = replan(again, served, [v1], rollouts=recovered)
    assert condition(healed, "iris-1", "RolledOut") == ("True", "Available")
    assert condition(healed, "iris-1", "Ready") == ("True", "Ready")


def test_a_stuck_serving_deployment_with_nothing_ready_does_not_claim_to_serve() -> None:
    served = model(serving={"image": "server:1", "replicas": 1})
    v1 = version("1", Stage.PRODUCTION, effective=Stage.PRODUCTION, requested_at=EARLIER)
    for available, says in ((0, "no Pod is ready to serve"), (1, "the Pods that were serving keep serving")):
        rollouts = {"iris-1": serving.rollout_of(deployment(available=available), want_replicas=2, trouble=STUCK)}
        plan = lifecycle.plan(served, [v1], now=NOW, rollouts=rollouts)
        rolled_out = next(c for c in plan.versions["iris-1"].conditions if c.type == "RolledOut")
        assert rolled_out.message.endswith(says)
        assert plan.versions["iris-1"].phase == "Degraded"


def test_a_stuck_promotion_says_so_at_once_keeps_trying_and_switches_once_fixed() -> None:
    """A promotion whose new Pods are stuck (the tampered artifact met by the init
    container) warns at once but is not failed: a failed promotion is final for its
    generation. Once the cause is fixed and the Pods are Available, it switches; only
    the progress deadline fails it."""
    served = model(serving={"image": "server:1", "replicas": 2})
    # As `modelreg stage` leaves them: v1 asked to step down, serving until v2 takes over.
    v1 = version("1", Stage.ARCHIVED, effective=Stage.PRODUCTION, requested_at=EARLIER)
    v2 = version("2", Stage.PRODUCTION, effective=Stage.STAGING)
    stuck = {"iris-2": serving.rollout_of(deployment(), want_replicas=2, trouble=STUCK)}
    first = lifecycle.plan(served, [v1, v2], now=NOW, rollouts=stuck)
    assert (first.production, first.rolling_out) == ("iris-1", "iris-2")  # still scaled up, still trying
    assert first.versions["iris-2"].phase == "Promoting"
    assert condition(first, "iris-2", "RolledOut") == ("False", "RolloutStuck")
    assert condition(first, "iris-2", "Stalled") == ("False", "NotStalled")
    assert MISMATCH in next(c for c in first.versions["iris-2"].conditions if c.type == "RolledOut").message
    assert [e.reason for e in first.events if e.warning] == ["RolloutStuck"]

    again = replan(first, served, [v1, v2], rollouts=copy.deepcopy(stuck))
    assert again.versions == first.versions
    assert not [e for e in again.events if e.warning]

    fixed = {"iris-2": serving.rollout_of(deployment(available=2), want_replicas=2)}
    switched = replan(again, served, [v1, v2], rollouts=fixed)
    assert switched.production == "iris-2"
    assert condition(switched, "iris-2", "RolledOut") == ("True", "Available")

    missed = deployment(available=1, progressing=("False", "ProgressDeadlineExceeded"))
    deadline = {"iris-2": serving.rollout_of(missed, want_replicas=2, trouble=STUCK)}
    failed = replan(again, served, [v1, v2], rollouts=deadline)
    assert (failed.production, failed.rolling_out) == ("iris-1", None)
    assert condition(failed, "iris-2", "RolledOut") == ("False", "RolloutFailed")
    assert MISMATCH in next(c for c in failed.versions["iris-2"].conditions if c.type == "RolledOut").message
