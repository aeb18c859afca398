"""Artifact verification apart from reconciles: the schedule (from status, so a
restart re-verifies nothing at once), one check per version at a time on the
verifier's own threads, one S3 client per key, and the storage policy that
keeps a model's author from using the operator's reach (confused deputy).

The S3 calls are replaced by plain functions here; `tests/e2e` runs the real ones."""

from __future__ import annotations

import dataclasses
import datetime
import random
import threading
import time
from typing import Any

import pytest

from modelreg import artifacts, kube, lifecycle
from modelreg.api.common import Stage
from modelreg.api.modelversion import ModelVersionStatus
from modelreg.facts import ArtifactCheck, ArtifactReason
from modelreg.verifying import STORAGE_CREDENTIALS_LABEL, Settings, Verifier, credentials, endpoint_refusal
from tests.unit.lifecycle_builders import NOW, OK, model, version


class FakeStore:
    """Stands in for `artifacts.verify`: counts calls, and can hold them until released."""

    def __init__(self, result: ArtifactCheck = OK, *, hold: bool = False) -> None:
        self.result = result
        self.calls: list[str] = []
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self._lock = threading.Lock()

    def verify(self, client: Any, uri: str, **_: Any) -> ArtifactCheck:
        with self._lock:
            self.calls.append(uri)
        assert self.release.wait(10)
        return self.result


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verified_status(*, generation: int = 1, verified_at: datetime.datetime) -> ModelVersionStatus:
    return ModelVersionStatus.model_validate(
        {
            "observedGeneration": generation,
            "stage": "Development",
            "artifact": {"digest": "sha256:" + "a" * 64, "etag": '"e"', "verifiedAt": verified_at.isoformat()},
            "conditions": [
                {
                    "type": "ArtifactVerified",
                    "status": "True",
                    "reason": "Verified",
                    "message": "ok",
                    "observedGeneration": generation,
                }
            ],
        }
    )


def fresh(number: str, **kwargs: Any) -> lifecycle.VersionInput:
    return version(number, artifact=None, **kwargs)


def verifier(store: FakeStore, *, clock: Clock | None = None, **settings: Any) -> tuple[Verifier, list[Any]]:
    notified: list[Any] = []
    v = Verifier(
        # Due checks are found by popping the schedule by hand here (the thread would read the fake clock).
        # One period for every stage, unless a test asks otherwise (the period by stage has its own test).
        Settings(**({"wait_seconds": 0.0, "wake_rechecks": False, "recheck_undeployed_seconds": 0.0} | settings)),
        notify=notified.append,
        verify=store.verify,
        new_client=lambda **_: object(),
        clock=clock or Clock(),
        rng=random.Random(7),
    )
    return v, notified


def wait_until(predicate: Any) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --- the schedule and the threads -------------------------------------------------------


def test_a_new_version_is_verifying_until_its_check_ends_then_the_model_is_queued() -> None:
    store = FakeStore(hold=True)
    v, notified = verifier(store, wait_seconds=0.2)
    new = fresh("1")
    began = time.monotonic()
    first = v.checks(None, namespace="ns", model=model(), versions=[new], now=NOW)
    assert time.monotonic() - began < 2, "a reconcile waits for a long check only briefly"
    assert first["iris-1"] is not None
    assert first["iris-1"].reason is ArtifactReason.VERIFYING
    assert first["iris-1"].transient  # the engine waits: nothing is promoted on no verdict
    again = v.checks(None, namespace="ns", model=model(), versions=[new], now=NOW)
    assert again["iris-1"] is not None
    assert again["iris-1"].reason is ArtifactReason.VERIFYING
    assert len(store.calls) == 1, "one check per version and generation at a time"
    store.release.set()
    wait_until(lambda: notified == [("ns", "iris")])
    done = v.checks(None, namespace="ns", model=model(), versions=[new], now=NOW)
    assert done["iris-1"] == OK
    assert len(store.calls) == 1, "a verified artifact is not checked again before its period"
    v.close()


def test_a_long_first_check_shows_its_progress() -> None:
    release = threading.Event()

    def streaming(client: Any, uri: str, *, budget: artifacts.Budget, **_: Any) -> ArtifactCheck:
        budget.spend(artifacts.S3Location("models", "big"), 5 * 1024 * 1024)
        assert release.wait(10)
        return OK

    v = Verifier(Settings(wait_seconds=0.0), verify=streaming, new_client=lambda **_: object())
    new = fresh("1")
    v.checks(None, namespace="ns", model=model(), versions=[new], now=NOW)

    def progress() -> str:
        answer = v.checks(None, namespace="ns", model=model(), versions=[new], now=NOW)["iris-1"]
        assert answer is not None
        return answer.message

    wait_until(lambda: progress().endswith(": 5 MiB read"))
    release.set()
    v.close()


def test_records_of_models_no_longer_reconciled_are_forgotten() -> None:
    clock = Clock()
    v, _ = verifier(FakeStore(), clock=clock, wait_seconds=5.0, recheck_seconds=300)
    v.checks(None, namespace="ns", model=model(), versions=[fresh("1")], now=NOW)
    assert ("ns", "iris") in v._records
    clock.now += 3 * 600 + 1
    other = lifecycle.ModelInput(name="other", generation=1, spec=model().spec, status=model().status)
    v.checks(None, namespace="ns", model=other, versions=[], now=NOW)
    assert ("ns", "iris") not in v._records
    v.close()


def test_a_fast_check_is_answered_within_the_same_reconcile() -> None:
    store = FakeStore()
    v, _ = verifier(store, wait_seconds=5.0)
    assert v.checks(None, namespace="ns", model=model(), versions=[fresh("1")], now=NOW)["iris-1"] == OK
    v.close()


def test_many_reconciles_at_once_start_one_check() -> None:
    store = FakeStore(hold=True)
    v, _ = verifier(store)
    new = fresh("1")
    threads = [
        threading.Thread(
            target=v.checks, args=(None,), kwargs={"namespace": "ns", "model": model(), "versions": [new], "now": NOW}
        )
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.release.set()
    wait_until(lambda: v.checks(None, namespace="ns", model=model(), versions=[new], now=NOW)["iris-1"] == OK)
    assert len(store.calls) == 1
    v.close()


def test_a_spec_change_needs_a_fresh_verdict() -> None:
    store = FakeStore(hold=True)
    v, _ = verifier(store)
    changed = fresh("1", generation=2, status=verified_status(generation=1, verified_at=NOW))
    answer = v.checks(None, namespace="ns", model=model(), versions=[changed], now=NOW)["iris-1"]
    assert answer is not None
    assert answer.reason is ArtifactReason.VERIFYING
    store.release.set()
    v.close()


def test_after_a_restart_a_recently_verified_version_is_not_checked_again() -> None:
    store = FakeStore()
    clock = Clock()
    v, _ = verifier(store, clock=clock, recheck_seconds=300, jitter=0.2)
    known = fresh("1", status=verified_status(verified_at=NOW - datetime.timedelta(seconds=100)))
    assert v.checks(None, namespace="ns", model=model(), versions=[known], now=NOW) == {"iris-1": None}
    clock.now += 199  # 299 s after verifiedAt: not yet
    assert v.checks(None, namespace="ns", model=model(), versions=[known], now=NOW)["iris-1"] is None
    assert store.calls == []
    clock.now += 61  # beyond the period and its jitter
    wait_until(lambda: v.checks(None, namespace="ns", model=model(), versions=[known], now=NOW)["iris-1"] == OK)
    assert len(store.calls) == 1
    v.close()


def test_after_a_restart_overdue_rechecks_are_spread_over_a_period() -> None:
    store = FakeStore()
    clock = Clock()
    v, _ = verifier(store, clock=clock, recheck_seconds=300)
    old = NOW - datetime.timedelta(days=3)
    versions = [fresh(str(i), status=verified_status(verified_at=old)) for i in range(100)]
    for i, ver in enumerate(versions):  # distinct uids: each version its own record
        versions[i] = lifecycle.VersionInput(**{**ver.__dict__, "uid": f"uid-{i}"})
    started = []
    for _ in range(10):  # ten reconciles 30 s apart
        v.checks(None, namespace="ns", model=model(), versions=versions, now=NOW)
        wait_until(lambda: not any(r.running for r in v._records[("ns", "iris")].values()))
        started.append(len(store.calls))
        clock.now += 30
    assert started[0] < 25, "a restart must not re-verify everything at once"
    assert started[-1] > 75
    assert all(b - a < 25 for a, b in zip([0, *started], started, strict=False))
    v.close()


def test_rechecks_come_due_one_model_at_a_time_not_at_the_next_resync() -> None:
    """50 models verified together: their re-checks come due spread over the jitter's
    window (240 to 360 s), each model once, and none before it."""
    store = FakeStore()
    clock = Clock()
    v, _ = verifier(store, clock=clock, recheck_seconds=300)
    models = [dataclasses.replace(model(), name=f"m{i}") for i in range(50)]
    for m in models:
        v.checks(None, namespace="ns", model=m, versions=[fresh("1")], now=NOW)
    wait_until(lambda: len(store.calls) == 50 and not any(r.running for rs in v._records.values() for r in rs.values()))
    started = clock.now
    assert v._pop_due(started) == []
    due_at: dict[str, float] = {}
    while clock.now < started + 400:
        clock.now += 10
        with v._lock:
            for rec in v._pop_due(clock.now):
                name = rec.model[1]
                assert name not in due_at, "each model once"
                due_at[name] = clock.now - started
    assert sorted(due_at) == sorted(m.name for m in models)
    assert min(due_at.values()) >= 240
    assert max(due_at.values()) <= 370
    assert len(set(due_at.values())) >= 8, "spread over the window, not one burst"
    v.close()


def test_the_due_thread_runs_a_recheck_itself_and_queues_the_model_only_when_a_reconcile_must_start_it() -> None:
    """A re-check needs no reconcile once a check of the record has run: the due
    thread starts it with that check's client. A reconcile starts it (the model is
    queued) when there is none: the first re-check after a restart, and the retry
    of a failed check, which must read the storage settings and Secret again."""
    status = verified_status(verified_at=NOW - datetime.timedelta(days=1))
    store = FakeStore(ArtifactCheck(ArtifactReason.VERIFIED, "ok", status.artifact))
    notified: list[Any] = []
    v = Verifier(Settings(wait_seconds=0.0, recheck_seconds=0.2, recheck_undeployed_seconds=0.0, jitter=0.5),
                 notify=notified.append, verify=store.verify, new_client=lambda **_: object())  # fmt: skip
    known = fresh("1", status=status)
    v.checks(None, namespace="ns", model=model(), versions=[known], now=NOW)  # after a restart: no client yet
    wait_until(lambda: notified == [("ns", "iris")])
    assert store.calls == [], "the first re-check after a restart is started by a reconcile"
    v.checks(None, namespace="ns", model=model(), versions=[known], now=NOW)  # the reconcile that follows
    wait_until(lambda: len(store.calls) >= 4)  # that check, then re-checks the thread started
    assert notified == [("ns", "iris")], "a re-check that confirms status queues nothing"
    store.result = ArtifactCheck(ArtifactReason.CHECKSUM_MISMATCH, "the digest differs")
    wait_until(lambda: len(notified) >= 2)  # a re-check found a change: the model is queued
    calls = len(store.calls)
    wait_until(lambda: len(notified) >= 3)  # its retry is due (1 s): the model is queued again …
    assert len(store.calls) == calls, "… and the retry waits for the reconcile"
    v.close()


def test_a_recheck_with_credentials_from_a_secret_is_started_by_a_reconcile_that_reads_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client built from a Secret is not reused by the due thread: every re-check
    waits for a reconcile, which reads the Secret again (a withdrawn opt-in label
    or a rotated key takes effect within a period)."""
    reads: list[str] = []

    def read_secret(client: Any, *, namespace: str, name: str) -> kube.SecretData:
        reads.append(name)
        return _secret(AWS_ACCESS_KEY_ID=b"AKIA", AWS_SECRET_ACCESS_KEY=b"s3cr3t")

    monkeypatch.setattr(kube, "read_secret", read_secret)
    status = verified_status(verified_at=NOW - datetime.timedelta(days=1))
    store = FakeStore(ArtifactCheck(ArtifactReason.VERIFIED, "ok", status.artifact))
    notified: list[Any] = []
    v = Verifier(Settings(wait_seconds=0.0, recheck_seconds=0.2, recheck_undeployed_seconds=0.0, jitter=0.5),
                 notify=notified.append, verify=store.verify, new_client=lambda **_: object())  # fmt: skip
    with_secret = model(storage={"credentialsSecret": {"name": "s3"}})
    known = fresh("1", status=status)
    v.checks(None, namespace="ns", model=with_secret, versions=[known], now=NOW)  # after a restart: nothing due
    for round_ in range(1, 4):  # each re-check: the model is queued, its reconcile reads the Secret and checks
        wait_until(lambda round_=round_: len(notified) == round_)
        v.checks(None, namespace="ns", model=with_secret, versions=[known], now=NOW)
        wait_until(lambda round_=round_: len(store.calls) == round_)
    assert reads == ["s3", "s3", "s3"]
    v.close()


def test_a_version_not_deployed_is_rechecked_less_often() -> None:
    """Staging and Production versions serve (or are about to): their artifacts are
    re-checked every `recheck_seconds`. A Development version's re-check only keeps
    its status current, since a promotion verifies the new generation anyway."""
    store = FakeStore()
    clock = Clock()
    v, _ = verifier(store, clock=clock, recheck_seconds=300, recheck_undeployed_seconds=3600, jitter=0.0)
    versions = [fresh("1"), fresh("2", stage=Stage.STAGING), fresh("3", stage=Stage.PRODUCTION)]
    v.checks(None, namespace="ns", model=model(), versions=versions, now=NOW)
    v._pool.shutdown(wait=True)
    due = {rec.subject.name: rec.next_due - clock.now for rec in v._records[("ns", "iris")].values() if rec.subject}
    assert due == {"iris-1": 3600.0, "iris-2": 300.0, "iris-3": 300.0}
    v.close()


def test_a_failed_check_is_retried_with_backoff() -> None:
    store = FakeStore(ArtifactCheck(ArtifactReason.STORAGE_UNAVAILABLE, "down"))
    clock = Clock()
    v, _ = verifier(store, clock=clock, wait_seconds=5.0)
    new = fresh("1")
    for _ in range(3):
        v.checks(None, namespace="ns", model=model(), versions=[new], now=NOW)
    assert len(store.calls) == 1  # next due in 1 s
    clock.now += 1
    v.checks(None, namespace="ns", model=model(), versions=[new], now=NOW)
    assert len(store.calls) == 2
    clock.now += 1  # next due 2 s after the second failure
    v.checks(None, namespace="ns", model=model(), versions=[new], now=NOW)
    assert len(store.calls) == 2
    v.close()


def test_one_client_per_endpoint_and_credentials_built_once() -> None:
    built: list[dict[str, Any]] = []
    gate = threading.Barrier(8)

    def new_client(**kw: Any) -> object:
        built.append(kw)
        time.sleep(0.05)  # a slow build: the others must wait for it, not build their own
        return object()

    v = Verifier(Settings(), new_client=new_client)
    from modelreg.verifying import Target

    results: list[object] = []

    def ask() -> None:
        gate.wait()
        results.append(v._client(Target(endpoint="https://s3.example.com", access_key="a", secret_key="s")))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1
    assert len({id(r) for r in results}) == 1
    v._client(Target(endpoint="https://s3.example.com", access_key="a", secret_key="rotated"))
    assert len(built) == 2
    v.close()


# --- storage policy -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "settings", "refused"),
    [
        (None, Settings(), None),
        ("https://s3.example.com", Settings(), None),
        ("http://s3.example.com", Settings(), "--allow-insecure-storage"),
        ("http://127.0.0.1:9000", Settings(allow_insecure=True), None),
        ("https://s3.example.com", Settings(endpoints=("https://S3.example.com:443/",)), None),
        ("https://evil.example.net", Settings(endpoints=("https://s3.example.com",)), "not one this operator"),
        ("https://s3.example.com:8443", Settings(endpoints=("https://s3.example.com",)), "not one this operator"),
    ],
)
def test_endpoint_policy(endpoint: str | None, settings: Settings, refused: str | None) -> None:
    why = endpoint_refusal(endpoint, settings)
    assert (why is None) == (refused is None), why
    if refused:
        assert why is not None
        assert refused in why


def _secret(labelled: bool = True, **data: bytes) -> kube.SecretData:
    return kube.SecretData(labels={STORAGE_CREDENTIALS_LABEL: "true"} if labelled else {}, data=data)


def _credentials(secret: kube.SecretData | None) -> tuple[str, str]:
    return credentials(secret, name="s3", namespace="ns", access_key_key="id", secret_key_key="key")


def test_credentials_only_from_a_secret_that_opted_in() -> None:
    assert _credentials(_secret(id=b"AKIA", key=b"s3cr3t")) == ("AKIA", "s3cr3t")
    with pytest.raises(artifacts.ArtifactError) as refused:
        _credentials(_secret(labelled=False, id=b"AKIA", key=b"s3cr3t"))
    assert refused.value.reason is ArtifactReason.STORAGE_MISCONFIGURED
    assert f"kubectl label secret s3 -n ns {STORAGE_CREDENTIALS_LABEL}=true" in str(refused.value)


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        (None, "is missing"),
        (_secret(id=b"AKIA"), "lacks 'id' or 'key'"),
        (_secret(id=b"AKIA", key=b"\xff\xfe\x00binary"), "is not UTF-8 text"),
    ],
)
def test_unusable_secrets_are_explained(secret: kube.SecretData | None, says: str) -> None:
    with pytest.raises(artifacts.ArtifactError) as refused:
        _credentials(secret)
    assert refused.value.reason is ArtifactReason.STORAGE_MISCONFIGURED
    assert says in str(refused.value)


def test_a_refused_endpoint_is_a_verdict_not_a_crash() -> None:
    store = FakeStore()
    v, _ = verifier(store)
    evil = model(storage={"endpoint": "http://attacker.example.net"})
    answer = v.checks(None, namespace="ns", model=evil, versions=[fresh("1")], now=NOW)["iris-1"]
    assert answer is not None
    assert answer.reason is ArtifactReason.STORAGE_MISCONFIGURED
    assert "plain http" in answer.message
    assert store.calls == []
    v.close()


# --- bounds on streaming ------------------------------------------------------------------


def test_a_budget_refuses_before_downloading_too_much() -> None:
    budget = artifacts.Budget(max_bytes=1024 * 1024)
    where = artifacts.S3Location("b", "big.bin")
    budget.admit(where, 1024 * 1024)
    with pytest.raises(artifacts.ArtifactError) as refused:
        budget.admit(where, 1024 * 1024 + 1)
    assert refused.value.reason is ArtifactReason.LIMIT_EXCEEDED
    assert "ChecksumAlgorithm=SHA256" in str(refused.value)


def test_a_budget_stops_a_slow_stream() -> None:
    budget = artifacts.Budget(max_seconds=0.0)
    with pytest.raises(artifacts.ArtifactError) as refused:
        budget.spend(artifacts.S3Location("b", "slow.bin"), 10)
    assert refused.value.reason is ArtifactReason.LIMIT_EXCEEDED
    assert "took longer" in str(refused.value)


def test_a_recheck_that_finds_what_status_says_queues_nothing_one_that_finds_a_change_does() -> None:
    """A reconcile after a re-check that confirms status would write nothing: the
    model is queued only when the result differs (a replaced artifact, a failure)."""
    status = verified_status(verified_at=NOW - datetime.timedelta(seconds=1000))
    same = ArtifactCheck(ArtifactReason.VERIFIED, "ok", status.artifact)
    replaced = ArtifactCheck(ArtifactReason.CHECKSUM_MISMATCH, "the digest differs")
    for result, queued in ((same, False), (OK, True), (replaced, True)):
        store = FakeStore(result)
        clock = Clock()
        v, notified = verifier(store, clock=clock, recheck_seconds=300)
        known = fresh("1", status=status)
        v.checks(None, namespace="ns", model=model(), versions=[known], now=NOW)
        clock.now += 400  # overdue after a restart: due within one period
        v.checks(None, namespace="ns", model=model(), versions=[known], now=NOW)
        v._pool.shutdown(wait=True)  # the check has run to its end, notify included
        assert len(store.calls) == 1
        assert notified == ([("ns", "iris")] if queued else []), result
        v.close()
