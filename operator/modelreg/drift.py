"""Find where a live object no longer says what the operator rendered. Pure.

Called by `reconciling` before applying an owned object: nothing differs → no
write (a steady state makes zero API calls that change anything); something
differs → apply, and say so in an Event. Fields the API server defaults (and
the desired object does not mention) are not drift; extra list items are.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

_SUFFIXES = {"m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
             "T": Decimal(10) ** 12, "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
             "Ti": Decimal(2) ** 40}  # fmt: skip


def find_drift(desired: Any, live: Any, path: str = "") -> list[str]:
    """Paths where `live` does not hold what `desired` says."""
    if live is None and desired in ({}, []):
        return []  # the API server does not keep empty lists and maps
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            found += find_drift(value, live.get(key), f"{path}.{key}")
        return found
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [path]
        found = []
        for i, (d, v) in enumerate(zip(desired, live, strict=True)):
            found += find_drift(d, v, f"{path}[{i}]")
        return found
    if isinstance(desired, bool) or isinstance(live, bool):
        return [] if desired is live else [path]
    if desired == live or _same_quantity(desired, live):
        return []
    return [path]


def _same_quantity(a: Any, b: Any) -> bool:
    qa, qb = _quantity(a), _quantity(b)
    return qa is not None and qa == qb


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    text = str(value)
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            try:
                return Decimal(text[: -len(suffix)]) * _SUFFIXES[suffix]
            except InvalidOperation:
                return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None
