"""Which keys under a prefix artifact are safe to verify and download (pure)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from modelreg import artifacts
from modelreg.facts import ArtifactReason

PREFIX = artifacts.S3Location("models", "iris/3/")


@pytest.mark.parametrize("rel", ["model.onnx", "weights/layer0.bin", "a..b", "..hidden", "dir.v2/x", "...", "a/b/c"])
def test_relative_paths_are_kept(rel: str) -> None:
    assert artifacts.relative_key(PREFIX, PREFIX.key + rel) == rel


@pytest.mark.parametrize(
    "rel", ["../escape.bin", "a/../../escape.bin", "a/..", "/etc/passwd", "weights//layer.bin", "./config.json",
            "a/./b", ".."],
)  # fmt: skip
def test_absolute_climbing_or_ambiguous_paths_are_invalid(rel: str) -> None:
    with pytest.raises(artifacts.ArtifactError) as caught:
        artifacts.relative_key(PREFIX, PREFIX.key + rel)
    assert caught.value.reason is ArtifactReason.INVALID
    assert repr(PREFIX.key + rel) in str(caught.value)
    assert "relative paths" in str(caught.value)


# The S3 server of the e2e tests (versitygw, POSIX backend) cleans such keys when they
# are written (`p/../x` is stored as `x`), so no listing of it can hold one. These tests
# give botocore's own Stubber the listing another store could return; any call past
# the listing has no stubbed answer and would fail the check differently.
NOW = datetime.datetime(2026, 11, 30, tzinfo=datetime.UTC)
UNSAFE_LISTINGS = ["iris/3/../../secrets.txt", "iris/3//etc/cron.d/x", "iris/3/./model.onnx"]


def _stubbed(keys: list[str]) -> tuple[Any, Stubber]:
    client = artifacts.new_s3_client(endpoint="http://127.0.0.1:9", region="us-east-1", access_key="a", secret_key="b")
    stub = Stubber(client)
    contents = [{"Key": k, "ETag": f'"{i}"', "Size": 1} for i, k in enumerate(keys)]
    stub.add_response("list_objects_v2", {"Contents": contents, "IsTruncated": False},
                      {"Bucket": "models", "Prefix": "iris/3/"})  # fmt: skip
    return client, stub


@pytest.mark.parametrize("unsafe", UNSAFE_LISTINGS)
def test_verifying_a_prefix_with_an_unsafe_key_is_invalid_before_any_read(unsafe: str) -> None:
    client, stub = _stubbed(["iris/3/model.onnx", unsafe])
    with stub:
        check = artifacts.verify(client, "s3://models/iris/3/", expected_sha256=None, previous=None, now=NOW)
        stub.assert_no_pending_responses()
    assert check.reason is ArtifactReason.INVALID
    assert check.reason.value == "InvalidArtifact"
    assert repr(unsafe) in check.message


@pytest.mark.parametrize("unsafe", UNSAFE_LISTINGS)
def test_downloading_a_prefix_with_an_unsafe_key_writes_nothing(unsafe: str, tmp_path: Path) -> None:
    client, stub = _stubbed(["iris/3/model.onnx", unsafe])
    into = tmp_path / "artifact"
    with stub, pytest.raises(artifacts.ArtifactError) as caught:
        artifacts.download(client, "s3://models/iris/3/", into=into)
    assert caught.value.reason is ArtifactReason.INVALID
    assert not into.exists()
