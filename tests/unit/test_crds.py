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
