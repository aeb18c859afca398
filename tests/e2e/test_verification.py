"""Verification in the operator, against the real API server and S3 server:
the storage a model's author may make the operator use (confused deputy), the
bounds on streaming, and periodic re-checks. Every refusal must be a condition
a person can act on, never a crash."""

from __future__ import annotations

import base64
import time

from tests.conftest import local_cluster_only, wait_for
from tests.e2e.conftest import S3, Cluster, Operator
from tests.e2e.registry import (
    apply,
    condition,
    model_manifest,
    operator_writes,
    secret_manifest,
    status,
    upload,
    version_manifest,
    wait_condition,
)

LABEL = "modelreg.dev/storage-credentials"


def _keys(s3: S3, secret_key: bytes | None = None) -> dict[str, bytes]:
    secret = secret_key if secret_key is not None else s3.config.secret_key.encode()
    return {"AWS_ACCESS_KEY_ID": s3.config.access_key.encode(), "AWS_SECRET_ACCESS_KEY": secret}


def _model_with_secret(s3: S3, endpoint: str | None = None) -> str:
    storage = {"endpoint": endpoint or s3.config.endpoint, "region": s3.config.region,
               "credentialsSecret": {"name": "s3-creds"}}  # fmt: skip
    return model_manifest("m", storage=storage)


def test_an_unlabelled_secret_is_refused_until_it_opts_in(
    kube: Cluster, s3: S3, namespace: str, operator: Operator
) -> None:
    art = upload(s3)
    apply(kube, namespace, secret_manifest("s3-creds", _keys(s3), opted_in=False))  # right keys, no label
    apply(kube, namespace, _model_with_secret(s3))
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=art.uri))
    st = wait_condition(kube, namespace, "m-1", "ArtifactVerified", status_="False", reason="StorageMisconfigured")
    message = condition(st, "ArtifactVerified")["message"]
    assert "has not opted in" in message
    assert f"kubectl label secret s3-creds -n {namespace} {LABEL}=true" in message
    assert "digest" not in st.get("artifact", {}), "nothing may be verified with a Secret that did not opt in"

    kube.kubectl("label", "secret", "s3-creds", "-n", namespace, f"{LABEL}=true")
    wait_condition(kube, namespace, "m-1", "ArtifactVerified", status_="True", reason="Verified")


def test_an_endpoint_off_the_allow_list_is_refused(kube: Cluster, s3: S3, namespace: str, operator: Operator) -> None:
    art = upload(s3)
    apply(kube, namespace, secret_manifest("s3-creds", _keys(s3)))
    apply(kube, namespace, _model_with_secret(s3, endpoint="https://s3.attacker.example.net"))
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=art.uri))
    st = wait_condition(kube, namespace, "m-1", "ArtifactVerified", status_="False", reason="StorageMisconfigured")
    message = condition(st, "ArtifactVerified")["message"]
    assert "https://s3.attacker.example.net is not one this operator may use" in message
    assert s3.config.endpoint in message  # says what is allowed
    assert condition(st, "Ready")["status"] == "False"


def test_a_binary_secret_value_is_a_condition_not_a_crash(
    kube: Cluster, s3: S3, namespace: str, operator: Operator
) -> None:
    art = upload(s3)
    apply(kube, namespace, secret_manifest("s3-creds", _keys(s3, secret_key=b"\xff\xfe\x00\x81 not text")))
    apply(kube, namespace, _model_with_secret(s3))
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=art.uri))
    st = wait_condition(kube, namespace, "m-1", "ArtifactVerified", status_="False", reason="StorageMisconfigured")
    assert (
        "'AWS_SECRET_ACCESS_KEY' in Secret 's3-creds' is not UTF-8 text" in condition(st, "ArtifactVerified")["message"]
    )
    # The operator is alive and goes on reconciling: fixing the Secret is picked up.
    apply(kube, namespace, secret_manifest("s3-creds", _keys(s3)))
    wait_condition(kube, namespace, "m-1", "ArtifactVerified", status_="True", reason="Verified")
    assert "Traceback" not in operator.log()
    encoded = kube.get_json("-n", namespace, "secret/s3-creds")["data"]["AWS_SECRET_ACCESS_KEY"]
    assert base64.b64decode(encoded) == s3.config.secret_key.encode()


def test_plain_http_is_refused_unless_the_operator_allows_it(
    kube: Cluster, s3: S3, namespace: str, operator: Operator
) -> None:
    operator.argv = [a for a in operator.argv if a != "--allow-insecure-storage"]
    operator.restart()
    art = upload(s3)
    apply(kube, namespace, secret_manifest("s3-creds", _keys(s3)))
    apply(kube, namespace, _model_with_secret(s3))
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=art.uri))
    st = wait_condition(kube, namespace, "m-1", "ArtifactVerified", status_="False", reason="StorageMisconfigured")
    message = condition(st, "ArtifactVerified")["message"]
    assert "plain http" in message
    assert "--allow-insecure-storage" in message


def test_an_artifact_too_big_to_stream_says_how_to_fix_it(
    kube: Cluster, s3: S3, namespace: str, operator: Operator
) -> None:
    operator.argv = [*operator.argv, "--verify-max-bytes", str(1024 * 1024)]
    operator.restart()
    big = upload(s3, data=b"x" * (3 * 1024 * 1024), store_checksum=False)
    small = upload(s3, data=b"y" * 1024, store_checksum=False)
    apply(kube, namespace, model_manifest("m"))
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=big.uri))
    apply(kube, namespace, version_manifest("m-2", model="m", version="2", uri=small.uri))
    st = wait_condition(kube, namespace, "m-1", "ArtifactVerified", status_="False", reason="VerificationLimitExceeded")
    message = condition(st, "ArtifactVerified")["message"]
    assert "--verify-max-bytes" in message
    assert "ChecksumAlgorithm=SHA256" in message
    wait_condition(kube, namespace, "m-2", "ArtifactVerified", status_="True", reason="Verified")


def test_rechecks_of_an_unchanged_artifact_write_nothing_and_catch_a_replaced_one(
    kube: Cluster, s3: S3, namespace: str, operator: Operator
) -> None:
    local_cluster_only(kube.audit_log is not None, "counting writes in the API server's audit log")
    operator.argv = [*operator.argv, "--recheck-seconds", "1", "--recheck-undeployed-seconds", "1"]
    operator.restart()
    art = upload(s3, store_checksum=False)
    apply(kube, namespace, model_manifest("m"))
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=art.uri, sha256=art.sha256))
    first = wait_condition(kube, namespace, "m-1", "Ready", status_="True")

    def settled() -> int | None:
        before = len(operator_writes(kube.audit_log or "", namespace))
        time.sleep(2.5)  # longer than the audit log's batch wait
        return before if len(operator_writes(kube.audit_log or "", namespace)) == before else None

    baseline = wait_for(settled, timeout=30, what="the operator's writes to stop")
    time.sleep(7)  # several re-check periods and resyncs: each re-check finds the same ETag
    writes = operator_writes(kube.audit_log or "", namespace)
    assert len(writes) == baseline, "a re-check of an unchanged artifact wrote"
    assert status(kube, namespace, "m-1")["artifact"] == first["artifact"]

    bucket, key = art.uri.removeprefix("s3://").split("/", 1)
    s3.client().put_object(Bucket=bucket, Key=key, Body=b"replaced behind the registry's back")
    st = wait_condition(kube, namespace, "m-1", "ArtifactVerified", status_="False", reason="ChecksumMismatch",
                        timeout=30)  # fmt: skip
    assert art.sha256 in condition(st, "ArtifactVerified")["message"]


def test_a_recheck_runs_when_it_comes_due_not_at_the_next_resync(
    kube: Cluster, s3: S3, namespace: str, operator: Operator
) -> None:
    """With the resync ten minutes away, a replaced artifact is still caught within a
    few re-check periods: the verifier queues a model when its re-check comes due
    (one model at a time, instead of a burst of them at each resync)."""
    operator.argv = [*operator.argv, "--resync-seconds", "600", "--recheck-seconds", "2",
                     "--recheck-undeployed-seconds", "2"]  # fmt: skip
    operator.restart()
    art = upload(s3)
    apply(kube, namespace, model_manifest("m"))
    apply(kube, namespace, version_manifest("m-1", model="m", version="1", uri=art.uri, sha256=art.sha256))
    wait_condition(kube, namespace, "m-1", "Ready", status_="True")
    bucket, key = art.uri.removeprefix("s3://").split("/", 1)
    s3.client().put_object(Bucket=bucket, Key=key, Body=b"replaced behind the registry's back",
                           ChecksumAlgorithm="SHA256")  # fmt: skip
    st = wait_condition(kube, namespace, "m-1", "ArtifactVerified", status_="False", reason="ChecksumMismatch",
                        timeout=30)  # fmt: skip
    assert art.sha256 in condition(st, "ArtifactVerified")["message"]
