"""`modelreg stage VERSION STAGE`: change a version's requested stage the way a
person means it. Promoting to Production also sets every other version of the
model that asks for Production to Archived in the same command, so the desired
state (and the Git repo it is copied into) holds one Production request. The
old version keeps serving until the new one is Available (see `lifecycle`).

Called by the CLI; the decision is `stage_changes` (pure), the writes go through `kube`.
"""

from __future__ import annotations

from typing import Any

from modelreg import kube
from modelreg.api.common import Stage


class StageChangeError(ValueError):
    """The change cannot be made as asked; the message says what to do instead."""


def held_now(version: dict[str, Any], *, stage: Stage) -> tuple[str, str] | None:
    """(reason, message) when a gate holds the version now and Production is asked: the
    gates that hold it where it is hold it from Production too, so asking would only
    archive the serving version's request (it keeps serving, but Git no longer says so).
    Only toward Production: asking Staging may be what releases a hold."""
    st = version.get("status") or {}
    current = (st.get("observedGeneration") or 0) >= version["metadata"].get("generation", 0)
    if stage is not Stage.PRODUCTION or not current or st.get("phase") != "Blocked":
        return None
    stalled: dict[str, Any] = next((c for c in st.get("conditions") or [] if c.get("type") == "Stalled"), {})
    return stalled.get("reason") or "Blocked", stalled.get("message") or "held by a gate"


def stage_changes(versions: list[dict[str, Any]], *, target: str, stage: Stage) -> dict[str, str]:
    """Object name → new spec.stage, the target first, given all versions of its model."""
    by_name = {v["metadata"]["name"]: v for v in versions}
    if target not in by_name:
        raise StageChangeError(f"no ModelVersion {target!r} of this model")
    current = by_name[target].get("spec", {}).get("stage", Stage.DEVELOPMENT.value)
    if current == Stage.DEVELOPMENT.value and stage is Stage.PRODUCTION:
        raise StageChangeError(f"{target} is in Development: move it to Staging first (its gates run there)")
    if held := held_now(by_name[target], stage=stage):
        raise StageChangeError(f"{target} is held, nothing was changed: {held[0]}: {held[1]}")
    changes = {target: stage.value}
    if stage is Stage.PRODUCTION:
        for name, v in sorted(by_name.items()):
            if name != target and v.get("spec", {}).get("stage") == Stage.PRODUCTION.value:
                changes[name] = Stage.ARCHIVED.value
    return changes


def run(*, namespace: str, name: str, stage: Stage, kubeconfig: str | None) -> int:
    client = kube.new_client(kubeconfig)
    obj = kube.read_version(client, namespace=namespace, name=name)
    if obj is None:
        print(f"error: ModelVersion {name!r} not found in namespace {namespace!r}")
        return 1
    versions = kube.list_versions(client, namespace=namespace, model=obj["spec"]["model"])
    try:
        changes = stage_changes(versions, target=name, stage=stage)
    except StageChangeError as exc:
        print(f"error: {exc}")
        return 1
    kube.set_stages(client, namespace=namespace, stages=changes)
    for changed, new in changes.items():
        print(f"modelversion/{changed}: spec.stage = {new}")
    return 0
