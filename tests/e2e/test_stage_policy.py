"""Who may request which stage: the roles aggregated into view/edit/admin
(manifests/base/roles.yaml) and the optional modelreg-stage-requests policies
(manifests/policies/stage-requests.yaml), bound as the shipped example binds them.
Every request is made as someone else (`kubectl --as`/`--as-group`), as the API
server sees a person, a group member or the GitOps controller's ServiceAccount.

No operator runs: admission and RBAC decide alone, and the operator writes only
status, which the policy does not match."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import wait_for
from tests.e2e.conftest import REPO, Cluster
from tests.e2e.registry import version_manifest

ROLES = REPO / "manifests" / "base" / "roles.yaml"
POLICIES = REPO / "manifests" / "policies"
PARAMETER = "modelreg-stage-requests"
URI = "s3://bucket/model.bin"

ALICE = ("alice", "release")  # a release manager: user alice in group release
BOB = ("bob",)  # an ML engineer: may stage, may not put a version in Production
CAROL = ("carol",)  # a viewer


def who(*identity: str) -> list[str]:
    user, *groups = identity
    return [f"--as={user}", *(f"--as-group={g}" for g in groups)]


def account(namespace: str, name: str) -> tuple[str]:
    return (f"system:serviceaccount:{namespace}:{name}",)


def create(
    kube: Cluster, namespace: str, name: str, stage: str, *identity: str, dry_run: bool = False
) -> tuple[bool, str]:
    dry = ["--dry-run=server"] if dry_run else []
    manifest = version_manifest(name, model="m", version=name, uri=URI, stage=stage)
    out = kube.run("create", *dry, "-n", namespace, "-f", "-", *who(*identity), input=manifest)
    return out.returncode == 0, out.stderr


def patch(kube: Cluster, namespace: str, name: str, spec: dict[str, Any], *identity: str) -> tuple[bool, str]:
    body = json.dumps({"spec": spec})
    out = kube.run("patch", "modelversion", name, "-n", namespace, "--type=merge", "-p", body, *who(*identity))
    return out.returncode == 0, out.stderr


def stage_of(kube: Cluster, namespace: str, name: str) -> str:
    return str(kube.get_json("modelversion", name, "-n", namespace)["spec"]["stage"])


def can(kube: Cluster, verb: str, resource: str, namespace: str, *identity: str) -> bool:
    """`resource` as RBAC names it (modelversions/status); can-i takes a subresource apart."""
    kind, _, subresource = resource.partition("/")
    sub = [f"--subresource={subresource}"] if subresource else []
    out = kube.run("auth", "can-i", verb, f"{kind}.modelreg.dev", *sub, "-n", namespace, *who(*identity))
    return out.stdout.strip() == "yes"


def refused_by_policy(outcome: tuple[bool, str]) -> bool:
    ok, err = outcome
    return not ok and "ValidatingAdmissionPolicy modelreg-stage-requests" in err


@pytest.fixture(scope="module")
def roles(kube: Cluster, crds: Path) -> None:
    """The user roles, as both installs apply them, once the aggregation controller
    has folded them into the built-in roles."""
    kube.kubectl("apply", "--server-side", "-f", str(ROLES))

    def aggregated() -> bool:
        rules = {role: kube.get_json("clusterrole", role).get("rules") or [] for role in ("view", "edit", "admin")}
        return all(any("modelreg.dev" in r.get("apiGroups", []) for r in rules[role]) for role in rules)

    wait_for(aggregated, timeout=30, what="modelreg-view/-edit to be aggregated into view, edit and admin")


@pytest.fixture(scope="module")
def stage_policy(kube: Cluster, roles: None) -> dict[str, Any]:
    """The policies and both example bindings, as shipped; returns the example
    ConfigMap. The bindings are never deleted (kubernetes/kubernetes#133827, see
    test_policies.py); without a ConfigMap of its own, a namespace is unaffected."""
    kube.kubectl("apply", "--server-side", "-f", str(POLICIES / "stage-requests.yaml"))
    example = list(yaml.safe_load_all((POLICIES / "stage-requests-binding.example.yaml").read_text()))
    bindings = [d for d in example if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert {b["spec"]["policyName"] for b in bindings} == {PARAMETER, "modelreg-stage-request-parameters"}
    kube.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(bindings))
    return next(d for d in example if d["kind"] == "ConfigMap")


@pytest.fixture
def team(kube: Cluster, namespace: str, roles: None) -> str:
    """The test's namespace with its people: alice, bob and the GitOps account
    `gitops` are bound the built-in `edit`, carol `view`, dave `admin`."""
    kube.kubectl("create", "serviceaccount", "gitops", "-n", namespace)
    accounts = [f"--serviceaccount={namespace}:gitops", "--serviceaccount=kube-system:other"]
    kube.kubectl("create", "rolebinding", "editors", "-n", namespace, "--clusterrole=edit", "--user=alice",
                 "--user=bob", *accounts)  # fmt: skip
    kube.kubectl("create", "rolebinding", "viewers", "-n", namespace, "--clusterrole=view", "--user=carol")
    kube.kubectl("create", "rolebinding", "admins", "-n", namespace, "--clusterrole=admin", "--user=dave")
    return namespace


@pytest.fixture
def guarded(kube: Cluster, team: str, stage_policy: dict[str, Any]) -> str:
    """The team's namespace with a rule of its own, written as the example's is:
    Production only by group `release` and the ServiceAccount gitops (namespace/name);
    Staging by alice, bob, and gitops (a bare name: this namespace)."""
    namespace = team
    parameter = stage_policy | {
        "metadata": {"name": PARAMETER, "namespace": namespace},
        "data": {
            "Production.groups": "release\n",
            "Production.serviceAccounts": f"{namespace}/gitops\n",
            "Staging.users": "alice\nbob\n",
            "Staging.serviceAccounts": "gitops\n",
        },
    }
    kube.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(parameter))
    # The API server reads parameters through an informer: a moment after the write.
    wait_for(lambda: refused_by_policy(create(kube, namespace, "probe", "Production", *BOB, dry_run=True)),
             timeout=30, what="the stage-requests rule to apply in the namespace")  # fmt: skip
    return namespace


def test_the_aggregated_roles_let_viewers_read_and_editors_write_but_not_status(kube: Cluster, team: str) -> None:
    namespace = team
    ok, err = create(kube, namespace, "v1", "Development", *BOB)
    assert ok, err
    for resource in ("modelversions", "registeredmodels", "modelversions/status"):
        assert can(kube, "get", resource, namespace, *CAROL), resource
        assert can(kube, "list", resource, namespace, *CAROL), resource
    assert kube.run("get", "modelversion", "v1", "-n", namespace, *who(*CAROL)).returncode == 0

    # A viewer cannot write, whatever the stage.
    ok, err = patch(kube, namespace, "v1", {"description": "viewer"}, *CAROL)
    assert not ok
    assert 'User "carol" cannot patch resource "modelversions"' in err
    ok, err = create(kube, namespace, "v2", "Development", *CAROL)
    assert not ok
    assert 'User "carol" cannot create resource "modelversions"' in err

    # An editor (and an admin) writes the objects...
    ok, err = patch(kube, namespace, "v1", {"description": "edited"}, *BOB)
    assert ok, err
    for verb in ("create", "update", "patch", "delete", "deletecollection"):
        for resource in ("modelversions", "registeredmodels"):
            assert can(kube, verb, resource, namespace, *BOB), (verb, resource)
            assert can(kube, verb, resource, namespace, "dave"), (verb, resource)
    # ...but nobody but the operator writes status: not an editor, not an admin.
    for identity in (BOB, ("dave",)):
        out = kube.run("patch", "modelversion", "v1", "-n", namespace, "--subresource=status", "--type=merge",
                       "-p", json.dumps({"status": {"stage": "Production"}}), *who(*identity))  # fmt: skip
        assert out.returncode != 0
        assert f'User "{identity[0]}" cannot patch resource "modelversions/status"' in out.stderr
        for resource in ("modelversions/status", "registeredmodels/status"):
            for verb in ("update", "patch"):
                assert not can(kube, verb, resource, namespace, *identity), (verb, resource)
    assert "status" not in kube.get_json("modelversion", "v1", "-n", namespace)


def test_only_those_the_namespace_lists_may_request_production(kube: Cluster, guarded: str) -> None:
    namespace = guarded
    ok, err = create(kube, namespace, "v1", "Development", *BOB)  # Development is not guarded
    assert ok, err
    ok, err = patch(kube, namespace, "v1", {"stage": "Staging"}, *BOB)  # bob is listed for Staging
    assert ok, err

    ok, err = patch(kube, namespace, "v1", {"stage": "Production"}, *BOB)
    assert not ok
    assert (
        f"spec.stage Production may be requested only by groups release; serviceAccounts {namespace}/gitops"
        f" (ValidatingAdmissionPolicy modelreg-stage-requests, ConfigMap {namespace}/{PARAMETER},"
        " keys Production.*); you are bob (groups system:authenticated)"
    ) in err
    assert stage_of(kube, namespace, "v1") == "Staging"
    # alice alone is not listed for Production; alice in group release is.
    assert refused_by_policy(patch(kube, namespace, "v1", {"stage": "Production"}, "alice"))
    ok, err = patch(kube, namespace, "v1", {"stage": "Production"}, *ALICE)
    assert ok, err
    assert stage_of(kube, namespace, "v1") == "Production"

    # Only a change of stage is checked: bob still edits the Production version...
    ok, err = patch(kube, namespace, "v1", {"description": "fixed a typo"}, *BOB)
    assert ok, err
    # ...and may move it out of Production (Archived is not guarded here).
    ok, err = patch(kube, namespace, "v1", {"stage": "Archived"}, *BOB)
    assert ok, err
    # Rollback is a request for Production like any other.
    assert refused_by_policy(patch(kube, namespace, "v1", {"stage": "Production"}, *BOB))
    # Creating a version at Production is requesting it.
    assert refused_by_policy(create(kube, namespace, "v2", "Production", *BOB))
    ok, err = create(kube, namespace, "v2", "Production", *ALICE)
    assert ok, err
    # Staging is guarded too: a user listed nowhere may not request it.
    ok, err = create(kube, namespace, "v3", "Development", "erin")
    assert not ok  # erin has no role at all: RBAC says no first
    assert 'User "erin" cannot create' in err
    kube.kubectl("create", "rolebinding", "erin", "-n", namespace, "--clusterrole=edit", "--user=erin")
    ok, err = create(kube, namespace, "v3", "Staging", "erin")
    assert not ok
    assert "spec.stage Staging may be requested only by users alice, bob; serviceAccounts gitops" in err


def test_the_gitops_service_account_may_request_production(kube: Cluster, guarded: str) -> None:
    """The GitOps path: the controller's ServiceAccount syncs Git, including a
    disaster recovery that re-creates a Production version, and a promotion."""
    namespace = guarded
    gitops = account(namespace, "gitops")
    ok, err = create(kube, namespace, "v1", "Production", *gitops)  # re-created from Git
    assert ok, err
    ok, err = create(kube, namespace, "v2", "Staging", *gitops)  # listed by bare name for Staging
    assert ok, err
    ok, err = patch(kube, namespace, "v2", {"stage": "Production"}, *gitops)
    assert ok, err
    assert stage_of(kube, namespace, "v2") == "Production"

    # Another ServiceAccount with the same role is not the GitOps controller.
    other = account("kube-system", "other")
    ok, err = create(kube, namespace, "v3", "Production", *other)
    assert not ok
    assert "you are system:serviceaccount:kube-system:other (groups system:serviceaccounts" in err


def test_a_namespace_without_the_parameter_keeps_rbacs_answer(
    kube: Cluster, team: str, stage_policy: dict[str, Any]
) -> None:
    """The bindings apply everywhere; a namespace opts in by holding the ConfigMap."""
    namespace = team
    ok, err = create(kube, namespace, "v1", "Production", *BOB)
    assert ok, err
    ok, err = create(kube, namespace, "v2", "Staging", "dave")
    assert ok, err
    ok, err = patch(kube, namespace, "v2", {"stage": "Production"}, "dave")
    assert ok, err

    parameter = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": PARAMETER, "namespace": namespace},
                 "data": {"Production.groups": "release\n", "Staging.users": ""}}  # fmt: skip
    kube.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(parameter))
    wait_for(lambda: refused_by_policy(create(kube, namespace, "v3", "Production", *BOB, dry_run=True)),
             timeout=30, what="the rule to apply once the namespace holds it")  # fmt: skip
    # A stage whose key is present but empty may be requested by nobody, not even an admin.
    ok, err = create(kube, namespace, "v3", "Staging", "dave")
    assert not ok
    assert "spec.stage Staging may be requested only by nobody" in err
    # An administrator of the cluster takes the rule away again; RBAC alone answers.
    kube.kubectl("delete", "configmap", PARAMETER, "-n", namespace)
    wait_for(lambda: create(kube, namespace, "v3", "Production", *BOB, dry_run=True)[0],
             timeout=30, what="the rule to lift once its ConfigMap is gone")  # fmt: skip


def test_only_a_stage_request_admin_changes_the_rule(kube: Cluster, guarded: str) -> None:
    """Whoever may edit the rule may give themselves any stage: the `edit` and
    `admin` roles write ConfigMaps, but not this one."""
    namespace = guarded
    edit = ["patch", "configmap", PARAMETER, "-n", namespace, "--type=merge",
            "-p", json.dumps({"data": {"Production.users": "bob\n"}})]  # fmt: skip
    for identity in (BOB, ("dave",)):
        out = kube.run(*edit, *who(*identity))
        assert out.returncode != 0
        assert "changing it needs update on stagerequestpolicies.modelreg.dev in namespace" in out.stderr
        assert f"you are {identity[0]}" in out.stderr
        out = kube.run("delete", "configmap", PARAMETER, "-n", namespace, *who(*identity))
        assert out.returncode != 0
        assert "modelreg-stage-request-parameters" in out.stderr
    # Deleting the whole collection (one request, admitted item by item) does not
    # take the rule away either.
    out = kube.run("delete", "--raw", f"/api/v1/namespaces/{namespace}/configmaps", *who(*BOB))
    assert out.returncode != 0
    assert "modelreg-stage-request-parameters" in out.stderr
    assert kube.run("get", "configmap", PARAMETER, "-n", namespace).returncode == 0
    # Other ConfigMaps are the editors' as before.
    assert kube.run("create", "configmap", "other", "-n", namespace, *who(*BOB)).returncode == 0

    # A cluster administrator grants dave the rule of this one namespace.
    kube.kubectl("create", "rolebinding", "stage-request-admin", "-n", namespace,
                 "--clusterrole=modelreg-stage-request-admin", "--user=dave")  # fmt: skip
    out = kube.run(*edit, *who("dave"))
    assert out.returncode == 0, out.stderr
    wait_for(lambda: create(kube, namespace, "v1", "Production", *BOB)[0],
             timeout=30, what="bob to be allowed Production once the rule lists him")  # fmt: skip

    # Deleting the namespace takes the rule with it: the namespace controller is not refused.
    kube.kubectl("delete", "namespace", namespace, "--timeout=90s", timeout=120)
    assert kube.run("get", "namespace", namespace).returncode != 0
