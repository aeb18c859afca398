"""Order version strings the way people read them: numerically or by semver
where both sides parse, else lexically; and "the newest" of several versions,
one answer for every place that asks (the winning Production request, the
Staging version the staging Service selects, archived versions kept within
retention). Pure."""

from __future__ import annotations

import functools
import re
from typing import Any

_NUMERIC = re.compile(r"^v?(\d+(?:\.\d+)*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def _parse(version: str) -> tuple[tuple[int, ...], tuple[str, ...] | None] | None:
    m = _NUMERIC.match(version)
    if not m:
        return None
    release = tuple(int(p) for p in m.group(1).split("."))
    pre = tuple(m.group(2).split(".")) if m.group(2) else None
    return release, pre


def _pre_key(pre: tuple[str, ...] | None) -> tuple[int, tuple[tuple[int, int, str], ...]]:
    # semver: a release sorts after its pre-releases; numeric identifiers sort before alphanumeric ones.
    if pre is None:
        return (1, ())
    return (0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre))


def compare_versions(a: str, b: str) -> int:
    pa, pb = _parse(a), _parse(b)
    if pa is not None and pb is not None:
        width = max(len(pa[0]), len(pb[0]))
        ra = pa[0] + (0,) * (width - len(pa[0]))
        rb = pb[0] + (0,) * (width - len(pb[0]))
        ka, kb = (ra, _pre_key(pa[1])), (rb, _pre_key(pb[1]))
        if ka != kb:
            return -1 if ka < kb else 1
    return (a > b) - (a < b)


version_key = functools.cmp_to_key(compare_versions)


def newest_key(moment: float, version: str, name: str = "") -> tuple[float, Any, str]:
    """Sort key for "newest": by time (epoch seconds), a tie (as when everything is
    re-created from Git at once) to the higher version, then to the object name."""
    return moment, version_key(version), name
