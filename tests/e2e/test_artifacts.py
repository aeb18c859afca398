"""Artifact verification against the real S3 server: both hashing paths,
prefixes, the ETag cache and every failure reason."""

from __future__ import annotations

import datetime
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelreg import artifacts
from modelreg.facts import ArtifactReason
from tests.e2e.conftest import S3
from tests.e2e.registry import BUCKET, upload

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture
def client(s3: S3) -> Any:
    c = s3.client()
    artifacts.ensure_bucket(c, BUCKET)
    return c


@pytest.fixture
def downloads(client: Any) -> Iterator[list[str]]:
    """Keys of every GetObject the client makes (boto3's own event hooks; nothing is faked)."""
    seen: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(params["Key"])

    client.meta.events.register("before-parameter-build.s3.GetObject", record)
    yield seen
    client.meta.events.unregister("before-parameter-build.s3.GetObject", record)


def test_store_checksum_needs_no_download(s3: S3, client: Any, downloads: list[str]) -> None:
    art = upload(s3, store_checksum=True)
    check = artifacts.verify(client, art.uri, expected_sha256=art.sha256, previous=None, now=NOW)
    assert check.ok, check.message
    assert check.facts is not None
    assert check.facts.checksum_source == "Store"
    assert check.facts.digest == f"sha256:{art.sha256}"
    assert check.facts.verified_at == NOW
    assert downloads == []


def test_without_store_checksum_the_object_is_streamed_and_hashed(s3: S3, client: Any, downloads: list[str]) -> None:
    data = bytes(range(256)) * 20_000  # 5 MB: several chunks
    art = upload(s3, data=data, store_checksum=False)
    check = artifacts.verify(client, art.uri, expected_sha256=art.sha256, previous=None, now=NOW)
    assert check.ok, check.message
    assert check.facts is not None
    assert check.facts.checksum_source == "Streamed"
    assert check.facts.size == len(data)
    assert len(downloads) == 1


def test_an_unchanged_artifact_is_not_hashed_again(s3: S3, client: Any, downloads: list[str]) -> None:
    art = upload(s3, store_checksum=False)
    first = artifacts.verify(client, art.uri, expected_sha256=None, previous=None, now=NOW)
    later = NOW + datetime.timedelta(hours=1)
    second = artifacts.verify(client, art.uri, expected_sha256=art.sha256, previous=first.facts, now=later)
    assert second.ok
    assert second.facts == first.facts  # verifiedAt included: nothing to write
    assert len(downloads) == 1


def test_a_replaced_object_is_verified_again(s3: S3, client: Any) -> None:
    art = upload(s3)
    first = artifacts.verify(client, art.uri, expected_sha256=art.sha256, previous=None, now=NOW)
    bucket, key = art.uri[len("s3://") :].split("/", 1)
    client.put_object(Bucket=bucket, Key=key, Body=b"tampered", ChecksumAlgorithm="SHA256")
    second = artifacts.verify(client, art.uri, expected_sha256=art.sha256, previous=first.facts, now=NOW)
    assert second.reason is ArtifactReason.CHECKSUM_MISMATCH
    assert hashlib.sha256(b"tampered").hexdigest() in second.message


def test_a_prefix_is_hashed_over_its_sorted_manifest(client: Any) -> None:
    prefix = f"dirs/{uuid.uuid4().hex}/"
    files = {"weights/layer1.bin": b"one", "config.json": b"{}", "weights/layer0.bin": b"zero"}
    for i, (rel, data) in enumerate(files.items()):
        extra = {"ChecksumAlgorithm": "SHA256"} if i % 2 else {}
        client.put_object(Bucket=BUCKET, Key=prefix + rel, Body=data, **extra)
    expected = artifacts.manifest_digest(files)
    uri = f"s3://{BUCKET}/{prefix}"
    check = artifacts.verify(client, uri, expected_sha256=expected, previous=None, now=NOW)
    assert check.ok, check.message
    assert check.facts is not None
    assert check.facts.files == 3
    assert check.facts.size == sum(len(d) for d in files.values())
    again = artifacts.verify(client, uri, expected_sha256=expected, previous=check.facts, now=NOW)
    assert again.facts == check.facts


def test_an_empty_prefix_is_not_found(client: Any) -> None:
    check = artifacts.verify(client, f"s3://{BUCKET}/empty-{uuid.uuid4().hex}/", expected_sha256=None,
                             previous=None, now=NOW)  # fmt: skip
    assert check.reason is ArtifactReason.NOT_FOUND


def test_wrong_credentials_are_access_denied(s3: S3) -> None:
    art = upload(s3)
    c = s3.config
    bad = artifacts.new_s3_client(endpoint=c.endpoint, region=c.region, access_key=c.access_key, secret_key="wrong")
    check = artifacts.verify(bad, art.uri, expected_sha256=None, previous=None, now=NOW)
    assert check.reason is ArtifactReason.ACCESS_DENIED
    assert "denied" in check.message


def test_a_store_that_does_not_answer_is_unavailable(s3: S3) -> None:
    from modelreg.devcluster import processes

    c = s3.config
    closed = f"http://127.0.0.1:{processes.free_port()}"
    client = artifacts.new_s3_client(endpoint=closed, region=c.region, access_key=c.access_key, secret_key="x")
    check = artifacts.verify(client, f"s3://{BUCKET}/m.bin", expected_sha256=None, previous=None, now=NOW)
    assert check.reason is ArtifactReason.STORAGE_UNAVAILABLE
    assert check.transient


def test_a_budget_bounds_what_is_streamed(s3: S3, client: Any, downloads: list[str]) -> None:
    art = upload(s3, data=b"z" * (2 * 1024 * 1024), store_checksum=False)
    budget = artifacts.Budget(max_bytes=1024 * 1024)
    check = artifacts.verify(client, art.uri, expected_sha256=art.sha256, previous=None, now=NOW, budget=budget)
    assert check.reason is ArtifactReason.LIMIT_EXCEEDED
    assert "--verify-max-bytes" in check.message
    assert downloads == [], "refused from the object's size, before downloading it"
    # The store's own checksum needs no download, so the same budget is no obstacle.
    stored = upload(s3, data=b"z" * (2 * 1024 * 1024), store_checksum=True)
    ok = artifacts.verify(client, stored.uri, expected_sha256=stored.sha256, previous=None, now=NOW, budget=budget)
    assert ok.ok, ok.message


def test_a_large_object_streamed_with_read_ahead_has_the_same_digest_and_a_tampered_one_is_refused(
    s3: S3, client: Any, downloads: list[str], tmp_path: Path
) -> None:
    """Objects over one 4 MiB read are downloaded by a thread while the previous part is
    hashed: the digest must be the one a plain hash gives, and one changed byte deep
    inside (same size, so only the content tells) must be caught."""
    data = bytearray(hashlib.sha256(b"seed").digest() * (24 * 1024 * 1024 // 32 + 5))  # 24 MiB and a bit
    art = upload(s3, data=bytes(data), store_checksum=False)
    check = artifacts.verify(client, art.uri, expected_sha256=art.sha256, previous=None, now=NOW)
    assert check.ok, check.message
    assert check.facts is not None
    assert check.facts.checksum_source == "Streamed"
    assert check.facts.digest == f"sha256:{art.sha256}"
    assert check.facts.size == len(data)
    # The init container's download goes the same way, and writes exactly those bytes.
    into = tmp_path / "model.bin"
    assert artifacts.download(client, art.uri, into=into) == art.sha256
    assert into.read_bytes() == data
    data[13 * 1024 * 1024 + 7] ^= 0x01
    bucket, key = art.uri[len("s3://") :].split("/", 1)
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    tampered = artifacts.verify(client, art.uri, expected_sha256=art.sha256, previous=check.facts, now=NOW)
    assert tampered.reason is ArtifactReason.CHECKSUM_MISMATCH
    assert hashlib.sha256(bytes(data)).hexdigest() in tampered.message
    assert len(downloads) == 3
