"""Promotion gates as pure functions: each returns a verdict a condition is made of.

Called by `lifecycle`. A gate never does I/O; the artifact gate's verdict comes
from `artifacts` through `facts.ArtifactCheck`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modelreg.api.registeredmodel import CompareToProduction, Direction, MetricThreshold

METRIC_THRESHOLDS = "MetricThresholds"
COMPARED_TO_PRODUCTION = "ComparedToProduction"
VALIDATION_PASSED = "ValidationPassed"


@dataclass(frozen=True)
class Verdict:
    gate: str  # the condition type
    passed: bool
    reason: str
    message: str
    pending: bool = False  # not known yet (a validation Job runs): Unknown, and waited for, not blocked on


def check_thresholds(metrics: Mapping[str, float], thresholds: list[MetricThreshold]) -> Verdict:
    if not thresholds:
        return Verdict(METRIC_THRESHOLDS, True, "NoThresholds", "the model sets no metric thresholds")
    failures = []
    for t in thresholds:
        value = metrics.get(t.metric)
        if value is None:
            failures.append(f"metric {t.metric!r} is missing from spec.metrics")
        elif t.min is not None and value < t.min:
            failures.append(f"{t.metric} = {value:g} is below the minimum {t.min:g}")
        elif t.max is not None and value > t.max:
            failures.append(f"{t.metric} = {value:g} is above the maximum {t.max:g}")
    if failures:
        return Verdict(METRIC_THRESHOLDS, False, "ThresholdNotMet", "; ".join(failures))
    names = ", ".join(t.metric for t in thresholds)
    return Verdict(METRIC_THRESHOLDS, True, "ThresholdsMet", f"all thresholds hold ({names})")


def serving_itself() -> Verdict:
    return Verdict(COMPARED_TO_PRODUCTION, True, "IsProduction", "this version serves Production")


def check_against_production(
    metrics: Mapping[str, float],
    rule: CompareToProduction | None,
    *,
    production_version: str | None,
    production_metrics: Mapping[str, float] | None,
    is_rollback: bool,
) -> Verdict:
    if rule is None:
        return Verdict(COMPARED_TO_PRODUCTION, True, "NoComparison", "the model sets no compare-to-production rule")
    if is_rollback:
        return Verdict(COMPARED_TO_PRODUCTION, True, "Rollback",
                       "this version served Production before; a rollback is not compared")  # fmt: skip
    if production_version is None or production_metrics is None:
        return Verdict(COMPARED_TO_PRODUCTION, True, "NoProduction", "no version serves Production to compare with")
    candidate = metrics.get(rule.metric)
    if candidate is None:
        missing = f"metric {rule.metric!r} is missing from spec.metrics; Production is compared on it"
        return Verdict(COMPARED_TO_PRODUCTION, False, "MetricMissing", missing)
    serving = production_metrics.get(rule.metric)
    if serving is None:
        nothing = f"Production version {production_version} has no {rule.metric!r}; nothing to compare"
        return Verdict(COMPARED_TO_PRODUCTION, True, "ProductionMetricMissing", nothing)
    if rule.direction is Direction.HIGHER_IS_BETTER:
        ok, relation = candidate >= serving - rule.margin, "at least"
        bound = serving - rule.margin
    else:
        ok, relation = candidate <= serving + rule.margin, "at most"
        bound = serving + rule.margin
    detail = (f"{rule.metric} = {candidate:g}; Production version {production_version} has {serving:g}, "
              f"so it must be {relation} {bound:g}")  # fmt: skip
    if ok:
        return Verdict(COMPARED_TO_PRODUCTION, True, "AsGoodAsProduction", detail)
    return Verdict(COMPARED_TO_PRODUCTION, False, "WorseThanProduction", detail)
