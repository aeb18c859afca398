"""Artifact storage: the only module that talks to S3 (boto3).

Called by `reconciling` to verify artifacts, by `modelreg fetch-artifact` in
serving Pods, and by the dev cluster to seed its buckets.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from modelreg import prefetching
from modelreg.api.modelversion import ArtifactStatus
from modelreg.facts import ArtifactCheck, ArtifactReason

if TYPE_CHECKING:
    from boto3.session import Session
    from mypy_boto3_s3 import S3Client as S3Client  # re-exported for callers' annotations
else:
    S3Client = Any

# boto3 itself (~12 MiB of modules and data) is imported when the first client is
# built, not with this module: an operator with nothing to verify never loads it.
# botocore.exceptions, needed to catch its errors, is small.


def new_session() -> Session:
    """A boto3 Session to build several clients from: each client after the first
    then shares its loaded service model (about 0.3 MiB a client instead of 15).
    A Session is not thread-safe: build clients from it under one lock."""
    import boto3.session

    return boto3.session.Session()


def new_s3_client(
    *,
    endpoint: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    session: Session | None = None,
) -> S3Client:
    """A client with bounded timeouts and retries; None means the ambient chain.
    Without `session`, from a Session of its own."""
    from botocore.config import Config

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
    return (session or new_session()).client(
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


# --- verification -----------------------------------------------------------------------

_CHUNK = 1024 * 1024
# Streaming an object to hash it: 4 MiB reads (measured on a 1 GiB object against
# versitygw: larger reads cost less per byte, 8 MiB gained nothing more), at most
# two queued ahead of the hash, so one stream holds at most 16 MiB.
_STREAM_CHUNK = 4 * 1024 * 1024
_STREAM_DEPTH = 2
_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}


class ArtifactError(Exception):
    """Verification failed for a reason a person can act on (or the store was away)."""

    def __init__(self, reason: ArtifactReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def is_prefix(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass
class Budget:
    """What one verification may stream, and how far it got.

    Objects the store has no SHA-256 for are downloaded to hash them; a budget
    bounds that by bytes and by time, so one huge or slow artifact cannot hold a
    verification thread for ever. `read` is written only by the thread doing the
    check; others may read it to report progress.
    """

    max_bytes: int | None = None
    max_seconds: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)  # set: give up (the operator stops)
    on_progress: Callable[[], None] | None = None  # called at most every `progress_seconds` while streaming
    progress_seconds: float = 10.0
    read: int = 0
    started: float = field(default_factory=time.monotonic)
    _reported: float = field(default_factory=time.monotonic)

    def admit(self, location: S3Location, size: int) -> None:
        """Refuse, before any download, to stream more than the budget allows."""
        if self.max_bytes is not None and self.read + size > self.max_bytes:
            raise ArtifactError(
                ArtifactReason.LIMIT_EXCEEDED,
                f"{location} would need {_mib(self.read + size)} MiB downloaded to hash it, more than the operator's "
                f"limit of {_mib(self.max_bytes)} MiB (--verify-max-bytes): store a SHA-256 checksum with the object "
                "(upload it with ChecksumAlgorithm=SHA256) so no download is needed, or raise the limit",
            )

    def spend(self, location: S3Location, n: int) -> None:
        self.read += n
        now = time.monotonic()
        if self.stop.is_set():
            raise ArtifactError(ArtifactReason.STORAGE_UNAVAILABLE, f"hashing {location} stopped: the operator stops")
        self.admit(location, 0)  # an object that grew while we read it
        if self.max_seconds is not None and now - self.started > self.max_seconds:
            raise ArtifactError(
                ArtifactReason.LIMIT_EXCEEDED,
                f"hashing {location} took longer than the operator's limit of {self.max_seconds:.0f}s "
                f"(--verify-timeout-seconds) after {_mib(self.read)} MiB: store a SHA-256 checksum with the "
                "object (upload it with ChecksumAlgorithm=SHA256) so no download is needed, or raise the limit",
            )
        if self.on_progress is not None and now - self._reported >= self.progress_seconds:
            self._reported = now
            self.on_progress()


def _mib(n: int) -> int:
    return -(-n // (1024 * 1024))  # rounded up: 1 byte over a 1 MiB limit reads as 2 MiB


def parse_uri(uri: str) -> S3Location:
    if not uri.startswith("s3://"):
        raise ArtifactError(ArtifactReason.INVALID, f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ArtifactError(ArtifactReason.INVALID, f"{uri!r} names no bucket")
    return S3Location(bucket, key)


def verify(
    client: S3Client,
    uri: str,
    *,
    expected_sha256: str | None,
    previous: ArtifactStatus | None,
    now: datetime.datetime,
    budget: Budget | None = None,
) -> ArtifactCheck:
    """Check that the artifact exists and hashes to what is expected.

    The store's own SHA-256 is used when it has one; otherwise the object is
    streamed and hashed, within `budget`. When ETag and VersionId match
    `previous`, its digest is reused, so an unchanged artifact costs one HEAD
    (or one listing) and gives back `previous` as it was: nothing to write.
    """
    budget = budget or Budget()
    try:
        location = parse_uri(uri)
        facts = (
            _prefix_facts(client, location, previous, budget)
            if location.is_prefix
            else _object_facts(client, location, previous, budget)
        )
    except ArtifactError as exc:
        return ArtifactCheck(exc.reason, str(exc))
    if facts.verified_at is None:
        facts = facts.model_copy(update={"verified_at": now.replace(microsecond=0)})
    digest = (facts.digest or "").removeprefix("sha256:")
    if expected_sha256 and digest != expected_sha256:
        return ArtifactCheck(
            ArtifactReason.CHECKSUM_MISMATCH,
            f"{uri} has SHA-256 {digest}, but spec.artifact.sha256 is {expected_sha256}: "
            "upload the right file or register a new version with the right checksum",
        )
    what = f"{facts.files} files" if facts.files is not None else f"{facts.size} bytes"
    how = "the store's checksum" if facts.checksum_source == "Store" else "hashing its content"
    return ArtifactCheck(ArtifactReason.VERIFIED, f"{uri}: {what}, sha256 {digest[:12]}… (by {how})", facts)


def _object_facts(
    client: S3Client, location: S3Location, previous: ArtifactStatus | None, budget: Budget
) -> ArtifactStatus:
    head = _call(client, location, lambda: client.head_object(
        Bucket=location.bucket, Key=location.key, ChecksumMode="ENABLED"))  # fmt: skip
    etag, version_id, size = head.get("ETag"), head.get("VersionId"), int(head.get("ContentLength", 0))
    if previous and previous.digest and previous.etag == etag and previous.version_id == version_id:
        return previous
    digest, source = _store_sha256(head), "Store"
    if digest is None:
        budget.admit(location, size)
        digest, source = _read_object(client, location, version_id=version_id, budget=budget), "Streamed"
    return _facts(digest=digest, size=size, etag=etag, version_id=version_id, source=source)


def relative_key(location: S3Location, key: str) -> str:
    """The path of `key` under the prefix `location`, refused when it is absolute or
    could climb out of the directory it is downloaded to (`..`), or name one file two
    ways (`.`, empty segments): what verify hashes must be what the Pod gets."""
    rel = key[len(location.key) :]
    if any(part in ("", ".", "..") for part in rel.split("/")):
        raise ArtifactError(
            ArtifactReason.INVALID,
            f"{location} holds an unsafe key {key!r}: keys under a prefix must be relative paths without "
            "'..', '.' or empty segments; remove that object or register another prefix",
        )
    return rel


def _prefix_objects(client: S3Client, location: S3Location) -> list[tuple[str, dict[str, Any]]]:
    """(relative path, listing entry) of every object under a prefix; directory markers skipped."""
    objects = [(relative_key(location, o["Key"]), o) for o in _list(client, location) if not o["Key"].endswith("/")]
    if not objects:
        raise ArtifactError(ArtifactReason.NOT_FOUND, f"{location} holds no objects")
    return objects


def _prefix_facts(
    client: S3Client, location: S3Location, previous: ArtifactStatus | None, budget: Budget
) -> ArtifactStatus:
    listed = _prefix_objects(client, location)
    objects = [o for _, o in listed]
    combined_etag = hashlib.sha256("\n".join(f"{o['Key']} {o['ETag']}" for o in objects).encode()).hexdigest()
    if previous and previous.digest and previous.etag == combined_etag:
        return previous
    digests = {}
    sources = set()
    for rel, o in listed:
        file = S3Location(location.bucket, o["Key"])
        head = _call(
            client, file, lambda f=file: client.head_object(Bucket=f.bucket, Key=f.key, ChecksumMode="ENABLED")
        )
        digest = _store_sha256(head)
        sources.add("Store" if digest else "Streamed")
        if digest is None:
            budget.admit(file, int(o["Size"]))
            digest = _read_object(client, file, version_id=head.get("VersionId"), budget=budget)
        digests[rel] = digest
    return _facts(
        digest=_manifest_digest(digests),
        size=sum(int(o["Size"]) for o in objects),
        etag=combined_etag,
        version_id=None,
        source="Store" if sources == {"Store"} else "Streamed",
        files=len(objects),
    )


def manifest_digest(files: dict[str, bytes]) -> str:
    """The digest of a prefix artifact, from its files' contents (relative path → bytes)."""
    return _manifest_digest({rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()})


def _facts(
    *, digest: str, size: int, etag: str | None, version_id: str | None, source: str, files: int | None = None
) -> ArtifactStatus:
    return ArtifactStatus.model_validate(
        {
            "digest": f"sha256:{digest}",
            "shortDigest": digest[:12],
            "size": size,
            "etag": etag,
            "versionId": version_id,
            "checksumSource": source,
            "files": files,
        }
    )


def _store_sha256(head: dict[str, Any]) -> str | None:
    """The store's full-object SHA-256, hex; None when it has none (or only a composite one)."""
    value = head.get("ChecksumSHA256")
    if not value or "-" in value or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    try:
        return base64.b64decode(value).hex()
    except (binascii.Error, ValueError):
        return None


def _read_object(
    client: S3Client,
    location: S3Location,
    *,
    version_id: str | None = None,
    sink: BinaryIO | None = None,
    budget: Budget | None = None,
) -> str:
    """Stream an object (into `sink`, if given) and return its SHA-256, hex."""

    def get() -> Any:
        if version_id:
            return client.get_object(Bucket=location.bucket, Key=location.key, VersionId=version_id)
        return client.get_object(Bucket=location.bucket, Key=location.key)

    response = _call(client, location, get)
    body = response["Body"]
    sha = hashlib.sha256()
    # Larger than one chunk: the next chunk is downloaded while this one is hashed
    # (`prefetching`), so a check costs about max(GET, hash), not their sum.
    depth = _STREAM_DEPTH if int(response.get("ContentLength") or 0) > _STREAM_CHUNK else 0
    chunks = prefetching.read_ahead(body.read, chunk=_STREAM_CHUNK, depth=depth)
    try:
        for chunk in chunks:
            sha.update(chunk)
            if budget is not None:
                budget.spend(location, len(chunk))
            if sink is not None:
                sink.write(chunk)
    except (BotoCoreError, OSError) as exc:
        raise ArtifactError(ArtifactReason.STORAGE_UNAVAILABLE, f"reading {location} failed midway: {exc}") from exc
    finally:
        chunks.close()  # stops and joins the reader before the body is closed under it
        body.close()
    return sha.hexdigest()


def _manifest_digest(file_digests: dict[str, str]) -> str:
    """A prefix's digest: SHA-256 of "<sha256>  <relative path>" lines sorted by path."""
    manifest = "".join(f"{file_digests[rel]}  {rel}\n" for rel in sorted(file_digests))
    return hashlib.sha256(manifest.encode()).hexdigest()


def _list(client: S3Client, location: S3Location) -> Iterator[dict[str, Any]]:
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"Bucket": location.bucket, "Prefix": location.key}
        if token:
            kwargs["ContinuationToken"] = token
        page = _call(client, location, lambda kw=kwargs: client.list_objects_v2(**kw))
        yield from page.get("Contents", [])
        if not page.get("IsTruncated"):
            return
        token = page.get("NextContinuationToken")


def _call(client: S3Client, location: S3Location, fn: Any) -> Any:
    """Run one S3 call, turning its failures into an `ArtifactError` with a precise reason."""
    try:
        return fn()
    except ClientError as exc:
        raise _classify(client, location, exc) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise ArtifactError(
            ArtifactReason.STORAGE_MISCONFIGURED,
            f"no S3 credentials for {location}: set spec.storage.credentialsSecret or give the operator credentials",
        ) from exc
    except (BotoCoreError, OSError) as exc:
        raise ArtifactError(
            ArtifactReason.STORAGE_UNAVAILABLE,
            f"the store did not answer for {location} ({exc}); retrying with backoff",
        ) from exc


def _classify(client: S3Client, location: S3Location, exc: ClientError) -> ArtifactError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    if code in _NOT_FOUND or status == 404:
        if code == "NoSuchBucket" or not _bucket_exists(client, location.bucket):
            return ArtifactError(
                ArtifactReason.NOT_FOUND, f"bucket {location.bucket!r} does not exist (for {location})"
            )
        return ArtifactError(
            ArtifactReason.NOT_FOUND, f"{location} does not exist: upload it, or fix spec.artifact.uri"
        )
    if code in _DENIED or status == 403:
        return ArtifactError(
            ArtifactReason.ACCESS_DENIED,
            f"access to {location} was denied ({code or status}): check the credentials and the bucket policy",
        )
    if status >= 500 or code in {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}:
        return ArtifactError(ArtifactReason.STORAGE_UNAVAILABLE, f"the store failed for {location} ({code or status})")
    return ArtifactError(ArtifactReason.INVALID, f"{location}: {code or status} {error.get('Message', '')}".strip())


def _bucket_exists(client: S3Client, bucket: str) -> bool:
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) != 404
    except (BotoCoreError, OSError):
        return True
    return True


# --- download (for `modelreg fetch-artifact`) --------------------------------------------


def download(client: S3Client, uri: str, *, into: Path) -> str:
    """Download an object to the file `into`, or a prefix to the directory `into`;
    returns the digest (hex) computed the same way `verify` does."""
    location = parse_uri(uri)
    if not location.is_prefix:
        return _download_file(client, location, into)
    digests = {}
    for rel, o in _prefix_objects(client, location):  # every key is checked before anything is written
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        digests[rel] = _download_file(client, S3Location(location.bucket, o["Key"]), target)
    return _manifest_digest(digests)


def _download_file(client: S3Client, location: S3Location, target: Path) -> str:
    with target.open("wb") as out:
        return _read_object(client, location, sink=out)


# --- upload (for `modelreg register`) -----------------------------------------------------

SHA256_METADATA = "sha256"
"""User metadata holding the whole file's SHA-256 (hex): a multipart upload leaves the
store only a composite checksum (of the parts' checksums), which cannot say whether a
local file is already there."""


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a local file, streamed: model files may not fit in memory."""
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            sha.update(chunk)
    return sha.hexdigest()


def local_files(root: Path) -> dict[str, Path]:
    """Every file under the directory `root`, by the relative path it gets under a prefix."""
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def local_digest(path: Path) -> str:
    """The digest `verify` computes once `path` is uploaded: a file's SHA-256, or a
    directory's manifest digest (the very function the operator uses for a prefix)."""
    if path.is_dir():
        return _manifest_digest({rel: file_sha256(p) for rel, p in local_files(path).items()})
    return file_sha256(path)


@dataclass(frozen=True)
class Stored:
    """What the store says about an object already at a key."""

    sha256: str | None
    """Its SHA-256 (hex): the store's full-object checksum, else the one recorded in its
    metadata at upload; None when it says neither."""


def stored_object(client: S3Client, location: S3Location) -> Stored | None:
    """The object at `location`, or None when there is none."""
    try:
        head: dict[str, Any] = _call(client, location, lambda: client.head_object(
            Bucket=location.bucket, Key=location.key, ChecksumMode="ENABLED"))  # fmt: skip
    except ArtifactError as exc:
        if exc.reason is ArtifactReason.NOT_FOUND:  # (a missing bucket too: the upload then says so)
            return None
        raise
    return Stored(_store_sha256(head) or head.get("Metadata", {}).get(SHA256_METADATA))


def keys_under(client: S3Client, location: S3Location) -> list[str]:
    """The relative paths of the objects already under a prefix (none: an empty list)."""
    return [relative_key(location, o["Key"]) for o in _list(client, location) if not o["Key"].endswith("/")]


def upload_file(
    client: S3Client,
    path: Path,
    location: S3Location,
    *,
    sha256: str,
    multipart_threshold: int,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Upload one file, multipart above `multipart_threshold` bytes, asking the store to
    keep its SHA-256 (a full-object one when it fits in one part, so verification needs
    no download) and recording `sha256` in its metadata for the next `stored_sha256`."""
    from boto3.exceptions import S3UploadFailedError
    from boto3.s3.transfer import TransferConfig

    # Parts of at least 5 MiB (the S3 minimum) and at most 64 MiB: s3transfer holds
    # a few parts in memory at once.
    chunk = min(max(multipart_threshold, 5 * 1024 * 1024), 64 * 1024 * 1024)
    config = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=chunk)
    extra = {"ChecksumAlgorithm": "SHA256", "Metadata": {SHA256_METADATA: sha256}}
    try:
        _call(client, location, lambda: client.upload_file(
            str(path), location.bucket, location.key, ExtraArgs=extra, Config=config, Callback=progress))  # fmt: skip
    except S3UploadFailedError as exc:  # s3transfer's wrapper around the ClientError of a part
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ClientError):
            raise _classify(client, location, cause) from exc
        raise ArtifactError(
            ArtifactReason.STORAGE_UNAVAILABLE, f"uploading {path} to {location} failed: {exc}"
        ) from exc
