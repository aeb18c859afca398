"""The checked-in CRDs are exactly what the API types generate, and structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modelreg.api.crds import custom_resource_definitions, kustomization, render

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


@pytest.mark.parametrize("name", sorted(custom_resource_definitions()))
def test_checked_in_crd_is_up_to_date(name: str) -> None:
    expected = render(custom_resource_definitions()[name])
    path = CRD_DIR / name
    assert path.exists(), f"{path} is missing: run `make crds`"
    assert path.read_text() == expected, f"{path} is stale: run `make crds` and commit the result"


def test_no_stray_files_in_crd_dir() -> None:
    assert sorted(p.name for p in CRD_DIR.iterdir()) == sorted([*custom_resource_definitions(), "Kustomization"])
    assert (CRD_DIR / "Kustomization").read_text() == kustomization()


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for key, sub in node.get("properties", {}).items():
        found += _walk(sub, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            found += _walk(node[key], f"{path}[{key}]")
    return found


@pytest.mark.parametrize("name", sorted(custom_resource_definitions()))
def test_schema_is_structural_and_described(name: str) -> None:
    crd = yaml.safe_load((CRD_DIR / name).read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        for keyword in ("$ref", "anyOf", "allOf"):
            assert keyword not in node, f"{path} has {keyword}"
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        if path.startswith((".spec", ".status")) and not path.endswith("]"):
            assert node.get("description"), f"{path} has no description"


def test_versions_have_cel_rules_and_list_maps() -> None:
    crd = custom_resource_definitions()["modelreg.dev_modelversions.yaml"]
    version = crd["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert any("Development" in r["rule"] for r in spec["x-kubernetes-validations"])
    for immutable in ("model", "version", "artifact"):
        assert spec["properties"][immutable]["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["shortNames"] == ["mv"]
    assert crd["spec"]["names"]["categories"] == ["modelreg"]


def test_model_names_are_checked_on_the_root_schema_and_on_spec_model() -> None:
    crds = custom_resource_definitions()
    root = crds["modelreg.dev_registeredmodels.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    on_create = "oldSelf.hasValue() || "
    assert [r["rule"] for r in root["x-kubernetes-validations"]] == [
        on_create + "(self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$'))",
        on_create + "(size(self.metadata.name) <= 52)",
        on_create + "(!self.metadata.name.endsWith('-staging'))",
    ]
    assert all(r["optionalOldSelf"] for r in root["x-kubernetes-validations"])
    mv_root = crds["modelreg.dev_modelversions.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    model_rules = mv_root["properties"]["spec"]["properties"]["model"]["x-kubernetes-validations"]
    assert [r["rule"] for r in model_rules[1:]] == [
        r["rule"].removeprefix(on_create)[1:-1].replace("self.metadata.name", "self")
        for r in root["x-kubernetes-validations"]
    ]


def test_objects_stored_before_the_admission_rules_still_parse() -> None:
    # The operator must keep reading (and serving) what the API server stored before
    # these limits existed; only admission enforces them.
    from modelreg.api import ModelVersionSpec, RegisteredModelSpec

    version = ModelVersionSpec.model_validate({
        "model": "iris-staging", "version": "1", "artifact": {"uri": "s3://bucket/"},
        "metrics": {"m" * 500: 1.0}, "lineage": {"labels": {f"l{i}": "x" * 300 for i in range(40)}},
    })  # fmt: skip
    assert version.model == "iris-staging"
    model = RegisteredModelSpec.model_validate({"serving": {
        "image": "a b", "replicas": 0, "stagingReplicas": 0, "args": ["x" * 3000],
        "env": [{"name": "MODEL_PATH", "value": "x" * 3000}, {"name": "MODEL_PATH"}],
        "resources": {"requests": {"cpu": "lots"}},
    }})  # fmt: skip
    assert model.serving is not None
    assert model.serving.replicas == 0
