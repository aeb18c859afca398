"""Pure helpers for status stanzas: conditions with stable transition times,
and the comparison that keeps a no-op reconcile at zero writes."""

from __future__ import annotations

import datetime
from typing import Any

Obj = dict[str, Any]


def format_time(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC to the second, as Kubernetes writes times."""
    return moment.astimezone(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def now() -> str:
    return format_time(datetime.datetime.now(datetime.UTC))


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


def ready_status(obj: Obj) -> Obj:
    """The foundation's status: the object was observed and is Ready."""
    meta = obj["metadata"]
    previous = (obj.get("status") or {}).get("conditions") or []
    gen = meta.get("generation")
    return {
        "observedGeneration": gen,
        "conditions": [
            condition(
                previous,
                type_="Ready",
                status="True",
                reason="Observed",
                message="the operator observed this object",
                generation=gen,
                at=now(),
            ),
        ],
    }


def differs(current: Obj, desired: Obj) -> bool:
    """True when applying `desired` would change any field of `current` it names."""
    return any(current.get(k) != v for k, v in desired.items())
