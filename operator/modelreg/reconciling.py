"""One reconcile of one RegisteredModel: read → compute → apply → status.

Called by the workers in `handlers`. This is the only module that combines
I/O (`kube`) with decisions; the decisions themselves are pure functions.
"""

from __future__ import annotations

import logging

from kubernetes.client import ApiClient

from modelreg import kube, statuses

log = logging.getLogger(__name__)


def reconcile_model(client: ApiClient, *, namespace: str, model: str) -> int:
    """Bring one model and its versions to their desired state; returns the writes made."""
    state = kube.read_model_state(client, namespace=namespace, model=model)
    writes = 0
    for obj in ([state.model] if state.model else []) + state.versions:
        desired = statuses.ready_status(obj)
        if statuses.differs(obj.get("status") or {}, desired):
            kube.apply_status(client, obj, desired)
            writes += 1
    return writes
