"""Promotion gates as pure functions: each returns a verdict a condition is made of.

Called by `lifecycle`. A gate never does I/O; the artifact gate's verdict comes
from `artifacts` through `facts.ArtifactCheck`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from modelreg.api.common import Stage
from modelreg.api.registeredmodel import BestBy, CompareToProduction, Direction, MetricThreshold
from modelreg.versionorder import version_key

METRIC_THRESHOLDS = "MetricThresholds"
COMPARED_TO_PRODUCTION = "ComparedToProduction"
STAGE_ORDER = "StageOrder"
STAGE_ORDER_EXEMPT = ("DigestServed", "NothingServedYet")  # Production without Staging, as a restore
RELEASE_MARK = "; to release: "  # between a failing gate's message and what releases it
VALIDATION_PASSED = "ValidationPassed"


@dataclass(frozen=True)
class Verdict:
    gate: str  # the condition type
    passed: bool
    reason: str
    message: str
    # What would release a failing gate, for a person: status alone must say both
    # which gate holds a version and what to do about it.
    release: str = ""
    pending: bool = False  # not known yet (a validation Job runs): Unknown, and waited for, not blocked on

    def explained(self) -> str:
        """The message, and for a failing gate what releases it."""
        if self.passed or not self.release:
            return self.message
        return f"{self.message}{RELEASE_MARK}{self.release}"


def artifact_release(reason: str, *, model: str) -> str:
    """What releases a failing ArtifactVerified gate, by its reason (facts.ArtifactReason,
    or Pending before the first check). A failed check is retried with backoff, so
    fixing the store is enough; spec.artifact itself is immutable."""
    new_version = "or register a new ModelVersion (spec.artifact is immutable)"
    storage = f"spec.storage of RegisteredModel {model}"
    return {
        "Pending": "wait: the first check runs now",
        "Verifying": "wait: a check is running",
        "StorageUnavailable": f"wait for the store to answer (retried with backoff), or fix {storage}",
        "ArtifactNotFound": f"upload the artifact at spec.artifact.uri (retried with backoff), {new_version}",
        "AccessDenied": f"let the credentials of {storage} (or the operator's own) read spec.artifact.uri",
        "ChecksumMismatch": f"put back the object whose SHA-256 is spec.artifact.sha256, {new_version}",
        "StorageMisconfigured": f"fix {storage} as the message says",
        "InvalidArtifact": f"fix what the message names at spec.artifact.uri, {new_version}",
        "VerificationLimitExceeded": "store the artifact with a SHA-256 checksum (then nothing is downloaded), or "
        "raise the operator's --verify-max-bytes / --verify-timeout-seconds",
    }.get(reason, f"fix what the message names, {new_version}")


def check_thresholds(metrics: Mapping[str, float], thresholds: list[MetricThreshold], *, model: str = "") -> Verdict:
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
        # Metrics are add-only (admission): a missing one can be added, a set one never changes.
        release = (
            "add the missing metrics to spec.metrics; a metric once set cannot change, so for a value "
            "out of bounds register a new ModelVersion"
            if any("missing" in f for f in failures)
            else "a metric once set cannot change: register a new ModelVersion whose metrics meet the bounds"
        )
        release += f", or change spec.promotion.thresholds of RegisteredModel {model}" if model else ""
        return Verdict(METRIC_THRESHOLDS, False, "ThresholdNotMet", "; ".join(failures), release)  # fmt: skip
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
    model: str = "",
) -> Verdict:
    if rule is None:
        return Verdict(COMPARED_TO_PRODUCTION, True, "NoComparison", "the model sets no compare-to-production rule")
    if is_rollback:
        return Verdict(COMPARED_TO_PRODUCTION, True, "Rollback",
                       "this version served Production before; a rollback is not compared")  # fmt: skip
    if production_version is None or production_metrics is None:
        return Verdict(COMPARED_TO_PRODUCTION, True, "NoProduction", "no version serves Production to compare with")
    relax = f", or change spec.promotion.compareToProduction of RegisteredModel {model}" if model else ""
    candidate = metrics.get(rule.metric)
    if candidate is None:
        missing = f"metric {rule.metric!r} is missing from spec.metrics; Production is compared on it"
        return Verdict(COMPARED_TO_PRODUCTION, False, "MetricMissing", missing,
                       f"add {rule.metric} to spec.metrics{relax}")  # fmt: skip
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
    release = f"register a new ModelVersion that does at least as well (a metric once set cannot change){relax}"
    return Verdict(COMPARED_TO_PRODUCTION, False, "WorseThanProduction", detail, release)


def check_stage_order(
    history: Iterable[Stage],
    *,
    requested: Stage,
    digest_served_as: str | None,
    model_has_served: bool,
    model: str,
) -> Verdict:
    """The Strict stage order: Production only after Staging, as status.history
    records it. Exempt, because Git alone must be able to restore what served:
    a rollback (this version served Production before), a version whose artifact
    digest served Production for this model under another object
    (`digest_served_as` names that version), and any version while no version of
    the model has a Production record at all: on a cluster re-created from Git
    there is no history to read, and a restore cannot be told from a first
    release (who may create a version at Production is admission's business)."""
    if requested is not Stage.PRODUCTION:
        return Verdict(STAGE_ORDER, True, "NotRequested", "the stage order (Strict) applies to Production requests")
    stages = set(history)
    if Stage.STAGING in stages:
        return Verdict(STAGE_ORDER, True, "PassedStaging", "status.history shows this version was in Staging")
    if Stage.PRODUCTION in stages:
        return Verdict(STAGE_ORDER, True, "ServedBefore", "this version served Production before: a rollback")
    if digest_served_as is not None:
        return Verdict(STAGE_ORDER, True, "DigestServed",
                       f"its artifact digest served Production as version {digest_served_as}: a restore")  # fmt: skip
    if not model_has_served:
        return Verdict(STAGE_ORDER, True, "NothingServedYet",
                       f"no version of model {model} has a Production record here: taken as a restore from Git "
                       "(a first release cannot be told from one)")  # fmt: skip
    return Verdict(
        STAGE_ORDER,
        False,
        "StagingRequired",
        f"model {model} has stageOrder Strict: Production needs a Staging entry in status.history, this version "
        "has none, and its artifact never served Production for the model",
        f"move it to Staging first (spec.stage: Staging), then to Production once status.stage is Staging; or set "
        f"spec.promotion.stageOrder of RegisteredModel {model} to Free",
    )


def best_version(candidates: Iterable[tuple[str, Mapping[str, float]]], rule: BestBy) -> tuple[str, float] | None:
    """The version (and its value) with the best value of `rule.metric` among
    `candidates` (version, metrics); versions without the metric do not take
    part. A tie goes to the higher version, as everywhere else."""
    sign = 1.0 if rule.direction is Direction.HIGHER_IS_BETTER else -1.0
    scored = [(sign * m[rule.metric], version_key(v), v, m[rule.metric]) for v, m in candidates if rule.metric in m]
    if not scored:
        return None
    best = max(scored, key=lambda s: (s[0], s[1]))
    return best[2], best[3]
