"""Artifact storage: the only module that talks to S3 (boto3).

Called by `reconciling` to verify artifacts, by `modelreg fetch-artifact` in
serving Pods, and by the dev cluster to seed its buckets.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any


def new_s3_client(
    *,
    endpoint: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
) -> S3Client:
    """A client with bounded timeouts and retries; None means the ambient chain."""
    config = Config(
        connect_timeout=3,
        read_timeout=10,
        retries={"max_attempts": 2, "mode": "standard"},
        # Send and check checksums only when the API requires them: S3-compatible
        # stores differ in which of the newer checksum headers they accept.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


def ensure_bucket(client: S3Client, bucket: str) -> None:
    try:
        client.head_bucket(Bucket=bucket)
    except client.exceptions.ClientError:
        client.create_bucket(Bucket=bucket)


def upload_tree(client: S3Client, *, root: Path, bucket: str) -> list[str]:
    """Upload every file under `root`, keyed by its path relative to `root`, with a SHA-256 checksum."""
    keys = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = path.relative_to(root).as_posix()
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), ChecksumAlgorithm="SHA256")
        keys.append(key)
    return keys
