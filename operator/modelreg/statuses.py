"""Pure helpers for status stanzas: Kubernetes-style times and conditions
whose transition time holds while their status does. Used by `lifecycle`."""

from __future__ import annotations

import datetime
from typing import Any

Obj = dict[str, Any]


def format_time(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC to the second, as Kubernetes writes times."""
    return moment.astimezone(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def condition(
    previous: list[Obj], *, type_: str, status: str, reason: str, message: str, generation: int | None, at: str
) -> Obj:
    """A condition that keeps its lastTransitionTime while its status holds."""
    old = next((c for c in previous if c.get("type") == type_), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") else at
    cond: Obj = {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": since}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond
