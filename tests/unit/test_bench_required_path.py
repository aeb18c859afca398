"""The benchmarks' required path compares like with like: its CRD is the
operator's ModelVersion CRD under another group, nothing else changed (the API
server's cost of a write depends on the schema)."""

from __future__ import annotations

from bench import required_path

from modelreg.api.crds import custom_resource_definitions


def test_the_required_paths_crd_differs_from_the_operators_only_in_group_and_name() -> None:
    ours = custom_resource_definitions()["modelreg.dev_modelversions.yaml"]
    copied = required_path.crd()
    assert copied["spec"]["group"] == "bench.modelreg.dev" != ours["spec"]["group"]
    assert copied["metadata"] == {"name": "modelversions.bench.modelreg.dev"}
    assert {**copied["spec"], "group": ours["spec"]["group"]} == ours["spec"]
    assert {k: v for k, v in copied.items() if k not in ("spec", "metadata")} == {
        k: v for k, v in ours.items() if k not in ("spec", "metadata")
    }
    assert ours["spec"]["group"] == "modelreg.dev"  # the copy did not change the operator's
