"""Why a Deployment's Pods do not become available, in one line a person can act on.

Pure: Pod and ReplicaSet dicts (as the API returns them) in, a `Trouble` out.
Called by `reconciling`, which reads the Pods only while a version's Deployment
is not fully available; `serving.rollout_of` puts the trouble into the
rollout's message and `stuck` flag.

Messages stay the same while the trouble does (no restart counts, no back-off
delays, no flip between ErrImagePull and ImagePullBackOff): status is rewritten
only when its text changes, so a message that moved on every reconcile would
be a status write on every reconcile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

REVISION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH = "pod-template-hash"
MAX_DETAIL = 300  # characters of a termination or waiting message that reach status

# Waiting reasons that do not go away by waiting: the kubelet keeps retrying, but
# the rollout will not progress until something changes.
STUCK = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
_PULL = frozenset({"ImagePullBackOff", "ErrImagePull"})


@dataclass(frozen=True)
class Trouble:
    """What is wrong with one Pod. `stuck`: waiting longer will not help, fixing
    the cause will (said at once, `Rollout.stuck`); otherwise the Pod may still
    recover by itself (a first failed attempt, no node free yet)."""

    message: str
    stuck: bool


def current_pods(deployment: Obj, replica_sets: Sequence[Obj], pods: Sequence[Obj]) -> list[Obj]:
    """The Pods of the Deployment's current ReplicaSet (the one with its revision).

    Pods of an older template stay while a fixed one rolls out (maxUnavailable 0):
    their trouble is not the new template's. None while the Deployment controller
    has not seen the latest spec, as its revision then still names the old one."""
    meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
    if int(status.get("observedGeneration", 0)) < int(meta.get("generation", 0)):
        return []
    revision = (meta.get("annotations") or {}).get(REVISION)
    hashes = set()
    for rs in replica_sets:
        rs_meta = rs.get("metadata") or {}
        refs = rs_meta.get("ownerReferences") or []
        ours = any(r.get("controller") and r.get("uid") == meta.get("uid") for r in refs)
        if ours and revision is not None and (rs_meta.get("annotations") or {}).get(REVISION) == revision:
            hashes.add((rs_meta.get("labels") or {}).get(TEMPLATE_HASH))
    hashes.discard(None)
    return [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(TEMPLATE_HASH) in hashes]


def pod_trouble(pods: Sequence[Obj]) -> Trouble | None:
    """The trouble to report: a stuck one before one that may pass, then by Pod
    name and container order (init containers first), so the choice is stable."""
    found: list[tuple[bool, str, int, Trouble]] = []
    for pod in pods:
        if not _counts(pod):
            continue
        name = str((pod.get("metadata") or {}).get("name", ""))
        found += [(not t.stuck, name, index, t) for index, t in enumerate(_troubles(pod, name))]
    return min(found, key=lambda t: t[:3])[3] if found else None


def _counts(pod: Obj) -> bool:
    """Pods leaving (scaled down: their containers exit 143 as asked), finished
    (replaced by the ReplicaSet) or Ready say nothing about why a rollout stalls."""
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
        return False
    return not any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _troubles(pod: Obj, name: str) -> list[Trouble]:
    status = pod.get("status") or {}
    out = []
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            out.append(Trouble(f"Pod {name} cannot be scheduled: {_trim(c.get('message', ''))}", stuck=False))
    for kind, key in (("init container", "initContainerStatuses"), ("container", "containerStatuses")):
        for cs in status.get(key) or []:
            if (said := _container_trouble(cs)) is not None:
                text, stuck = said
                out.append(Trouble(f"Pod {name}: {kind} {cs.get('name')} {text}", stuck=stuck))
    return out


def _container_trouble(cs: Obj) -> tuple[str, bool] | None:
    state, last = cs.get("state") or {}, cs.get("lastState") or {}
    waiting = state.get("waiting") or {}
    reason = waiting.get("reason", "")
    if reason in _PULL:
        # The two reasons alternate while the kubelet retries; the image is what to check.
        return f"cannot pull image {cs.get('image', '')!r} (ErrImagePull, ImagePullBackOff)", True
    last_exit = _exited(last.get("terminated") or {})
    # A crash loop passes through CrashLoopBackOff, the next attempt running (and,
    # for a start that fails, RunContainerError): one message for all of them.
    if reason == "CrashLoopBackOff" or (last_exit and int(cs.get("restartCount", 0)) > 0 and not cs.get("ready")):
        return f"keeps failing: {last_exit}" if last_exit else "keeps failing (CrashLoopBackOff)", True
    if reason in STUCK:
        return f"cannot start ({reason}): {_trim(waiting.get('message', ''))}".rstrip(": "), True
    if (exited := _exited(state.get("terminated") or {}) or last_exit) is not None:
        return exited, False
    return None


def _exited(terminated: Obj) -> str | None:
    """ "exited 4: <its termination message>" for a non-zero exit, else None."""
    code = int(terminated.get("exitCode", 0))
    if code == 0:
        return None
    reason = terminated.get("reason", "")
    text = f"exited {code}" + (f" ({reason})" if reason and reason != "Error" else "")
    message = _trim(terminated.get("message", ""))
    return f"{text}: {message}" if message else text


def _trim(text: str) -> str:
    """One line, at most MAX_DETAIL characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_DETAIL else line[: MAX_DETAIL - 1] + "…"
