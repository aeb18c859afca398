"""Rendering of serving objects and the choice of what to deploy (pure)."""

from __future__ import annotations

import copy
import datetime
import re

import pytest

from modelreg import serving
from modelreg.api.common import Stage
from modelreg.api.registeredmodel import Serving
from modelreg.drift import find_drift
from modelreg.facts import RolloutState

SERVE = Serving.model_validate({"image": "srv:1", "port": 9000, "replicas": 3, "stagingReplicas": 1,
                                "args": ["--workers", "2"], "env": [{"name": "A", "value": "b"}],
                                "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}},
                                "readinessProbe": {"path": "/ready"}})  # fmt: skip
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def ref(version: str = "1", name: str | None = None) -> serving.VersionRef:
    return serving.VersionRef(name=name or f"m-{version}", uid=f"uid-{version}", version=version,
                              uri=f"s3://b/{version}.bin", digest="f" * 64)  # fmt: skip


@pytest.mark.parametrize("version", ["1", "1.4.0", "2.0.0-rc.1", "RC1", "1.0+build.5", "a_b", "x" * 63, "1.", "Z"])
def test_deployment_names_are_valid_and_distinct(version: str) -> None:
    name = serving.deployment_name("fraud-detector", version)
    assert len(name) <= 63
    assert DNS_SUBDOMAIN.match(name), name
    assert name.startswith("fraud-detector-")
    label = serving.version_label(version)
    assert len(label) <= 63
    assert LABEL_VALUE.match(label), label


def test_plain_versions_keep_plain_names() -> None:
    assert serving.deployment_name("iris", "1.4.0") == "iris-1.4.0"
    assert serving.deployment_name("iris", "3") == "iris-3"
    assert serving.deployment_name("iris", "RC1") != serving.deployment_name("iris", "rc1")


def test_names_never_collide_across_models() -> None:
    # A hyphen in the version would make `<model>-<version>` ambiguous.
    assert serving.deployment_name("iris-a", "1") != serving.deployment_name("iris", "a-1")
    assert serving.deployment_name("iris-2", "x") != serving.deployment_name("iris", "2-x")
    assert re.fullmatch(r"iris-a-1-[0-9a-f]{8}", serving.deployment_name("iris", "a-1"))


@pytest.mark.parametrize("model_len", [1, 40, 52, 53, 55, 60, 63])
def test_a_long_name_keeps_its_hash_and_the_readable_part_is_cut(model_len: int) -> None:
    model = "m" * model_len
    versions = ["x" * 63, "x" * 62 + "y", "RC1", "rc1", "1_0", "1-0"]
    names = [serving.deployment_name(model, v) for v in versions]
    assert len(set(names)) == len(names), names
    for version, name in zip(versions, names, strict=True):
        assert len(name) <= 63
        assert DNS_SUBDOMAIN.match(name), name
        assert name == f"{model}-{version}" or re.search(r"-[0-9a-f]{8}$", name), f"{name} lost its hash"
        assert name.startswith(model[:50])
    # Two long models that differ only past what fits still get distinct names.
    assert serving.deployment_name("a" * 60 + "b", "RC1") != serving.deployment_name("a" * 60 + "c", "RC1")


def test_names_that_fit_are_unchanged_by_the_cut() -> None:
    # Names of existing Deployments must not change (a rename would redeploy).
    digest = "5fe4a9b5"  # sha256("RC1")[:8]
    assert serving.deployment_name("iris", "RC1") == f"iris-rc1-{digest}"
    assert serving.deployment_name("m" * 52, "RC1") == f"{'m' * 52}-r-{digest}"


def test_the_deployment_carries_only_the_serving_fields_and_a_restricted_context() -> None:
    dep = serving.render_deployment(model="m", serving=SERVE, version=ref(), stage=Stage.PRODUCTION, replicas=3,
                                    storage=serving.StorageEnv(endpoint="http://s3", region="r", secret_name="s"),
                                    operator_image="op:1")  # fmt: skip
    assert dep["metadata"]["name"] == "m-1"
    assert dep["metadata"]["labels"]["modelreg.dev/stage"] == "Production"
    assert "modelreg.dev/stage" not in dep["spec"]["template"]["metadata"]["labels"]
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "ModelVersion"
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    init, server = pod["initContainers"][0], pod["containers"][0]
    assert init["image"] == "op:1"
    assert init["args"] == ["fetch-artifact", "--uri", "s3://b/1.bin", "--sha256", "f" * 64,
                            "--dest", serving.ARTIFACT_PATH]  # fmt: skip
    env = {e["name"]: e for e in init["env"]}
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://s3"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "s", "key": "AWS_ACCESS_KEY_ID"}
    assert server["image"] == "srv:1"
    assert server["args"] == ["--workers", "2"]
    assert server["ports"][0]["containerPort"] == 9000
    assert server["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 9000}
    assert server["resources"] == {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}
    assert {"name": "A", "value": "b"} in server["env"]
    assert server["volumeMounts"][0]["readOnly"] is True
    # Still serving while kube-proxy catches up with a switch away from it.
    assert server["lifecycle"] == {"preStop": {"sleep": {"seconds": serving.DRAIN_SECONDS}}}
    assert "lifecycle" not in init
    for c in (init, server):
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert set(pod) == {"automountServiceAccountToken", "securityContext", "initContainers", "containers", "volumes"}


def render_pod(**fields: object) -> dict:  # type: ignore[type-arg]
    spec = Serving.model_validate({"image": "srv:1", "port": 9000, **fields})
    dep = serving.render_deployment(model="m", serving=spec, version=ref(), stage=Stage.PRODUCTION, replicas=1,
                                    storage=serving.StorageEnv())  # fmt: skip
    return dict(dep["spec"]["template"]["spec"])


def test_without_a_probe_a_pod_is_ready_once_the_serving_port_accepts_connections() -> None:
    probe = render_pod()["containers"][0]["readinessProbe"]
    assert probe == {"tcpSocket": {"port": 9000}, "periodSeconds": 5, "failureThreshold": 3}
    given = render_pod(readinessProbe={"path": "/healthz", "periodSeconds": 2})["containers"][0]["readinessProbe"]
    assert given == {"httpGet": {"path": "/healthz", "port": 9000}, "periodSeconds": 2, "failureThreshold": 3,
                     "timeoutSeconds": 1}  # fmt: skip
    delayed = render_pod(readinessProbe={"initialDelaySeconds": 4})["containers"][0]["readinessProbe"]
    assert delayed["initialDelaySeconds"] == 4
    patient = render_pod(readinessProbe={"timeoutSeconds": 5})["containers"][0]["readinessProbe"]
    assert patient["timeoutSeconds"] == 5


def test_placement_reaches_the_pod_spec_exactly_as_given() -> None:
    pod = render_pod(
        nodeSelector={"nvidia.com/gpu.present": "true", "pool": "inference"},
        tolerations=[
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "pool", "value": "inference"},
            {"operator": "Exists"},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 0},
        ],
    )  # fmt: skip
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true", "pool": "inference"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "pool", "value": "inference"},  # no operator given: the API server's Equal is not written
        {"operator": "Exists"},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0},
    ]
    assert all(type(v) in (str, int) for t in pod["tolerations"] for v in t.values())  # plain JSON, no enums
    # An empty value is what the API server stores as absent: rendering it would be drift forever.
    assert render_pod(tolerations=[{"key": "k", "operator": "Equal", "value": ""}])["tolerations"] == [
        {"key": "k", "operator": "Equal"}
    ]
    assert "nodeSelector" not in render_pod()
    assert "tolerations" not in render_pod()


def test_extended_resources_reach_the_container_as_quantity_strings() -> None:
    resources = {"requests": {"cpu": 1, "nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}}
    assert render_pod(resources=resources)["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "nvidia.com/gpu": "1"},
        "limits": {"nvidia.com/gpu": "1", "memory": "4Gi"},
    }


def test_placement_and_probe_as_the_api_server_stores_them_are_not_drift() -> None:
    pod = render_pod(nodeSelector={"pool": "a"}, tolerations=[{"key": "pool", "value": "a", "effect": "NoSchedule"}],
                     readinessProbe={"path": "/healthz", "initialDelaySeconds": 0})  # fmt: skip
    live = copy.deepcopy(pod)
    live["containers"][0]["readinessProbe"] |= {"timeoutSeconds": 1, "successThreshold": 1}  # server defaults
    live["containers"][0]["readinessProbe"]["httpGet"]["scheme"] = "HTTP"
    if live["containers"][0]["readinessProbe"].get("initialDelaySeconds") == 0:
        del live["containers"][0]["readinessProbe"]["initialDelaySeconds"]  # omitempty: a 0 is not stored
    live |= {"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler"}
    assert find_drift(pod, live) == []
    live["tolerations"].append({"key": "extra", "operator": "Exists"})
    live["nodeSelector"]["pool"] = "b"
    assert find_drift(pod, live) == [".nodeSelector.pool", ".tolerations"]


def test_an_autoscaled_deployment_leaves_replicas_out() -> None:
    dep = serving.render_deployment(model="m", serving=SERVE, version=ref(), stage=Stage.PRODUCTION, replicas=None,
                                    storage=serving.StorageEnv())  # fmt: skip
    assert "replicas" not in dep["spec"]
    assert "env" not in dep["spec"]["template"]["spec"]["initContainers"][0]  # ambient credentials: nothing to set


def test_services_select_the_version_or_nothing() -> None:
    prod = serving.render_service(model="m", model_uid="u", serving=SERVE, staging=False, version="1.0+b")
    assert prod["metadata"]["name"] == "m"
    assert prod["spec"]["selector"] == {
        "modelreg.dev/model": "m",
        "modelreg.dev/version": serving.version_label("1.0+b"),
    }
    assert prod["spec"]["ports"][0]["targetPort"] == 9000
    empty = serving.render_service(model="m", model_uid="u", serving=SERVE, staging=True, version=None)
    assert empty["metadata"]["name"] == "m-staging"
    assert empty["spec"]["selector"]["modelreg.dev/version"] == ""


def place(stage: Stage, since: float = 0.0, version: str = "1") -> serving.Placement:
    return serving.Placement(ref=ref(version), stage=stage, since=since)


def test_plan_deploys_production_rollout_and_staging() -> None:
    versions = {"m-1": place(Stage.PRODUCTION, version="1"), "m-2": place(Stage.STAGING, version="2"),
                "m-3": place(Stage.DEVELOPMENT, version="3"), "m-4": place(Stage.STAGING, version="4")}  # fmt: skip
    plan = serving.plan_serving(model="m", model_uid="u", serving=SERVE, storage=serving.StorageEnv(),
                                versions=versions, production="m-1", rolling_out="m-2", existing=set(),
                                autoscaled=set(), retention=2, staging="m-4")  # fmt: skip
    replicas = {d["metadata"]["name"]: d["spec"]["replicas"] for d in plan.deployments}
    assert replicas == {"m-1": 3, "m-2": 3, "m-4": 1}
    assert plan.delete == []
    assert plan.services[0]["spec"]["selector"]["modelreg.dev/version"] == "1"
    assert plan.services[1]["spec"]["selector"]["modelreg.dev/version"] == "4"  # the lifecycle's answer


def test_plan_keeps_the_newest_archived_within_retention_and_deletes_the_rest() -> None:
    versions = {f"m-{i}": place(Stage.ARCHIVED, since=float(i), version=str(i)) for i in range(1, 5)}
    versions["m-5"] = place(Stage.PRODUCTION, version="5")
    plan = serving.plan_serving(model="m", model_uid="u", serving=SERVE, storage=serving.StorageEnv(),
                                versions=versions, production="m-5", rolling_out=None,
                                existing={f"m-{i}" for i in range(1, 6)}, autoscaled=set(), retention=2)  # fmt: skip
    replicas = {d["metadata"]["name"]: d["spec"]["replicas"] for d in plan.deployments}
    assert replicas == {"m-3": 0, "m-4": 0, "m-5": 3}
    assert sorted(plan.delete) == ["m-1", "m-2"]


def test_a_version_never_verified_is_not_deployed() -> None:
    versions = {"m-1": serving.Placement(ref=None, stage=Stage.STAGING)}
    plan = serving.plan_serving(model="m", model_uid="u", serving=SERVE, storage=serving.StorageEnv(),
                                versions=versions, production=None, rolling_out=None, existing=set(),
                                autoscaled=set(), retention=2)  # fmt: skip
    assert plan.deployments == []


def deployment(
    replicas: int,
    *,
    available: int,
    generation: int = 2,
    observed: int = 2,
    progressing: tuple[str, str] = ("True", "NewReplicaSetAvailable"),
) -> dict:  # type: ignore[type-arg]
    return {"metadata": {"name": "d", "generation": generation}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "updatedReplicas": available, "availableReplicas": available,
                       "conditions": [{"type": "Available", "status": "True" if available >= replicas else "False"},
                                      {"type": "Progressing", "status": progressing[0], "reason": progressing[1],
                                       "message": "m"}]}}  # fmt: skip


def replica_failure(dep: dict) -> dict:  # type: ignore[type-arg]
    failure = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "invalid image"}
    dep["status"]["conditions"].append(failure)
    return dep


@pytest.mark.parametrize(
    ("dep", "want", "state"),
    [
        (deployment(3, available=3), 3, RolloutState.AVAILABLE),
        (deployment(3, available=2), 3, RolloutState.PROGRESSING),
        (deployment(1, available=1), 3, RolloutState.PROGRESSING),  # not scaled up yet
        (deployment(0, available=0), 3, RolloutState.PROGRESSING),  # archived, about to be scaled up
        (deployment(3, available=3, observed=1), 3, RolloutState.PROGRESSING),  # our change not seen yet
        (deployment(3, available=0, progressing=("False", "ProgressDeadlineExceeded")), 3, RolloutState.FAILED),
        (deployment(0, available=0, progressing=("False", "ProgressDeadlineExceeded")), 3, RolloutState.PROGRESSING),
        (replica_failure(deployment(2, available=0)), 2, RolloutState.FAILED),  # Pods cannot even be created
    ],
)
def test_rollout_state_of_a_deployment(dep: dict, want: int, state: RolloutState) -> None:  # type: ignore[type-arg]
    assert serving.rollout_of(dep, want_replicas=want).state is state


def test_a_scale_up_kubernetes_does_not_time_fails_at_the_deadline_after_the_request() -> None:
    """A kept Deployment scaled up again (a rollback) keeps NewReplicaSetAvailable: Kubernetes
    never marks it ProgressDeadlineExceeded, so the request's age decides."""
    now = datetime.datetime(2026, 11, 30, 12, tzinfo=datetime.UTC)

    def ago(seconds: float) -> datetime.datetime:
        return now - datetime.timedelta(seconds=seconds)

    kept = deployment(2, available=0) | {"spec": {"replicas": 2, "progressDeadlineSeconds": 60}}
    late = serving.rollout_of(kept, want_replicas=2, requested_at=ago(61), now=now)
    assert late.state is RolloutState.FAILED
    assert late.message.endswith("0/2 Pods available, 60s after the Production request (progressDeadlineSeconds)")
    assert serving.rollout_of(kept, want_replicas=2, requested_at=ago(59), now=now).state is RolloutState.PROGRESSING
    assert serving.rollout_of(kept, want_replicas=2).state is RolloutState.PROGRESSING  # the serving version's own
    rolling = deployment(2, available=0, progressing=("True", "ReplicaSetUpdated"))  # Kubernetes times this one
    timed = serving.rollout_of(rolling, want_replicas=2, requested_at=ago(900), now=now)
    assert timed.state is RolloutState.PROGRESSING


def test_replicas_per_stage() -> None:
    assert serving.replicas_for(Stage.PRODUCTION, SERVE, rolling_out=False) == 3
    assert serving.replicas_for(Stage.STAGING, SERVE, rolling_out=True) == 3
    assert serving.replicas_for(Stage.STAGING, SERVE, rolling_out=False) == 1
    assert serving.replicas_for(Stage.ARCHIVED, SERVE, rolling_out=False) == 0


def test_retention_breaks_same_second_ties_by_version() -> None:
    versions = {f"m-{i}": place(Stage.ARCHIVED, since=100.0, version=str(i)) for i in (1, 2, 10)}
    plan = serving.plan_serving(model="m", model_uid="u", serving=SERVE, storage=serving.StorageEnv(),
                                versions=versions, production=None, rolling_out=None,
                                existing={"m-1", "m-2", "m-10"}, autoscaled=set(), retention=1)  # fmt: skip
    assert [d["metadata"]["name"] for d in plan.deployments] == ["m-10"]
    assert sorted(plan.delete) == ["m-1", "m-2"]
