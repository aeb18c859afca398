"""The optional admission policies in manifests/policies/, installed the way the
example binding shows, with parameters and a binding of the test's own."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import wait_for
from tests.e2e.conftest import REPO, Cluster
from tests.e2e.registry import SERVING, model_manifest

POLICIES = REPO / "manifests" / "policies"
ALLOWED = ["registry.example.com/models/", "ghcr.io/example-org/"]


def create_model(kube: Cluster, namespace: str, name: str, *, dry_run: bool = False, **spec: Any) -> tuple[bool, str]:
    dry = ["--dry-run=server"] if dry_run else []
    out = kube.run("create", *dry, "-n", namespace, "-f", "-", input=model_manifest(name, **spec))
    return out.returncode == 0, out.stderr


def patch_model(kube: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> tuple[bool, str]:
    out = kube.run("patch", "registeredmodel", name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec}))
    return out.returncode == 0, out.stderr


def refused(outcome: tuple[bool, str]) -> bool:
    ok, err = outcome
    return not ok and "is not allowed by ValidatingAdmissionPolicy modelreg-serving-images" in err


def serving(image: str) -> dict[str, Any]:
    return SERVING | {"image": image}


PARAMS_NAMESPACE = "modelreg-e2e-policy-params"


@dataclass(frozen=True)
class ImagePolicy:
    params: dict[str, Any]  # the ConfigMap, as applied
    namespace_labels: dict[str, str]  # what puts a namespace under the binding


@pytest.fixture(scope="module")
def image_policy(kube: Cluster, crds: Path) -> ImagePolicy:
    """modelreg-serving-images as shipped, bound the way the shipped example binds
    it: a ConfigMap of allowed prefixes in a namespace of its own, namespaces
    selected by a label.

    Never deleted: kube-apiserver (seen on v1.35) stops resolving ConfigMap params
    for good once the last binding using them is gone (kubernetes/kubernetes#133827),
    so the binding stays, and applying it again is harmless. It selects only
    namespaces that carry its label, which only these tests' namespaces do."""
    kube.kubectl("apply", "--server-side", "-f", str(POLICIES / "serving-images.yaml"))
    example = list(yaml.safe_load_all((POLICIES / "serving-images-binding.example.yaml").read_text()))
    params = next(d for d in example if d["kind"] == "ConfigMap")
    binding = next(d for d in example if d["kind"] == "ValidatingAdmissionPolicyBinding")
    params["metadata"]["namespace"] = PARAMS_NAMESPACE
    params["data"]["allowedPrefixes"] = "".join(f"{p}\n" for p in ALLOWED)
    binding["metadata"]["name"] = "modelreg-serving-images-e2e"
    binding["spec"]["paramRef"]["namespace"] = PARAMS_NAMESPACE
    if kube.run("get", "namespace", PARAMS_NAMESPACE).returncode != 0:
        kube.kubectl("create", "namespace", PARAMS_NAMESPACE)
    kube.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all([params, binding]))
    labels = binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
    return ImagePolicy(params=params, namespace_labels=dict(labels))


@pytest.fixture
def restricted(kube: Cluster, namespace: str, image_policy: ImagePolicy) -> str:
    """The test's namespace, with a model from before the policy (its image is not
    allowed), then put under the policy."""
    ok, err = create_model(kube, namespace, "legacy", serving=serving("docker.io/someone/server:1"))
    assert ok, err
    kube.kubectl("label", "namespace", namespace, *(f"{k}={v}" for k, v in image_policy.namespace_labels.items()))
    # The API server enforces the binding on the namespace a moment after it is labelled.
    wait_for(lambda: refused(create_model(kube, namespace, "probe", dry_run=True, serving=serving("evil.io/x"))),
             timeout=30, what="the serving-images binding to apply to the namespace")  # fmt: skip
    return namespace


def test_serving_images_are_restricted_to_the_allowed_prefixes(kube: Cluster, restricted: str) -> None:
    namespace = restricted
    ok, err = create_model(kube, namespace, "allowed", serving=serving("registry.example.com/models/sklearn:1.0"))
    assert ok, err
    ok, err = create_model(
        kube, namespace, "other-prefix", serving=serving("ghcr.io/example-org/torch@sha256:" + "a" * 64)
    )
    assert ok, err
    ok, err = create_model(kube, namespace, "no-serving")
    assert ok, err

    ok, err = create_model(kube, namespace, "refused", serving=serving("docker.io/someone/server:1"))
    assert not ok
    assert "spec.serving.image docker.io/someone/server:1 is not allowed by ValidatingAdmissionPolicy" in err
    assert "modelreg-serving-images" in err
    assert f"ConfigMap {PARAMS_NAMESPACE}/modelreg-serving-images: {', '.join(ALLOWED)}" in err
    # A prefix is a prefix of the whole reference, hence the trailing "/" in the list.
    assert refused(create_model(kube, namespace, "look-alike", serving=serving("registry.example.com/models-evil/x:1")))

    # Changing an allowed model's image to a refused one is refused too.
    assert refused(patch_model(kube, namespace, "allowed", {"serving": {"image": "docker.io/someone/server:1"}}))
    # A model from before the policy can still be edited, as long as its image stays.
    ok, err = patch_model(kube, namespace, "legacy", {"description": "still editable"})
    assert ok, err
    assert refused(patch_model(kube, namespace, "legacy", {"serving": {"image": "docker.io/someone/server:2"}}))


def test_without_its_parameters_the_policy_refuses_every_image(
    kube: Cluster, restricted: str, image_policy: ImagePolicy
) -> None:
    image = serving("registry.example.com/models/sklearn:1.0")

    def accepted() -> bool:
        return create_model(kube, restricted, "allowed", dry_run=True, serving=image)[0]

    assert accepted()
    kube.kubectl("delete", "configmap", "modelreg-serving-images", "-n", PARAMS_NAMESPACE)
    try:
        wait_for(lambda: not accepted(), timeout=30, what="the allowed image to be refused once the ConfigMap is gone")
        ok, err = create_model(kube, restricted, "allowed", dry_run=True, serving=image)
        assert not ok
        assert "no params found" in err
    finally:
        kube.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(image_policy.params))
    wait_for(accepted, timeout=30, what="the allowed image to be accepted again with the ConfigMap back")
