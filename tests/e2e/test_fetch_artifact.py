"""`modelreg fetch-artifact` as the init container runs it: a real subprocess
against the real S3 server, with its exit codes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

from modelreg import artifacts
from modelreg.fetching import EXIT_CHECKSUM_MISMATCH, EXIT_NOT_FOUND, EXIT_STORAGE_UNAVAILABLE
from tests.e2e.conftest import S3
from tests.e2e.registry import BUCKET, upload


def fetch(
    s3: S3, uri: str, sha256: str, dest: Path, *, endpoint: str | None = None, termination_log: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = os.environ | s3.env()
    if endpoint:
        env["AWS_ENDPOINT_URL_S3"] = endpoint
    argv = [sys.executable, "-m", "modelreg", "fetch-artifact", "--uri", uri, "--sha256", sha256, "--dest", str(dest)]
    if termination_log is not None:
        argv += ["--termination-log", str(termination_log)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_a_file_is_fetched_and_verified(s3: S3, tmp_path: Path) -> None:
    art = upload(s3, data=b"weights" * 1000)
    dest = tmp_path / "models" / "artifact"
    out = fetch(s3, art.uri, art.sha256, dest)
    assert out.returncode == 0, out.stderr
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == art.sha256
    assert sorted(p.name for p in dest.parent.iterdir()) == ["artifact"]  # no temporary left


def test_a_prefix_is_fetched_as_a_directory(s3: S3, tmp_path: Path) -> None:
    client = s3.client()
    artifacts.ensure_bucket(client, BUCKET)
    prefix = f"dirs/{uuid.uuid4().hex}/"
    files = {"config.json": b"{}", "weights/a.bin": b"aaa", "weights/b.bin": b"bbb"}
    for rel, data in files.items():
        client.put_object(Bucket=BUCKET, Key=prefix + rel, Body=data)
    dest = tmp_path / "artifact"
    out = fetch(s3, f"s3://{BUCKET}/{prefix}", artifacts.manifest_digest(files), dest)
    assert out.returncode == 0, out.stderr
    assert {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()} == files


def test_a_corrupted_object_is_refused_and_nothing_is_written(s3: S3, tmp_path: Path) -> None:
    art = upload(s3)
    bucket, key = art.uri[len("s3://") :].split("/", 1)
    s3.client().put_object(Bucket=bucket, Key=key, Body=b"corrupted bytes")
    dest = tmp_path / "artifact"
    log = tmp_path / "termination-log"
    log.touch()  # as the kubelet creates it in a Pod
    out = fetch(s3, art.uri, art.sha256, dest, termination_log=log)
    assert out.returncode == EXIT_CHECKSUM_MISMATCH
    assert "ChecksumMismatch" in out.stderr
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == [log]
    # What the Pod's status will quote: the line printed, no traceback.
    assert log.read_text() == out.stderr.strip()
    assert log.read_text().startswith(f"fetch-artifact: ChecksumMismatch: {art.uri} has SHA-256 ")


def test_a_missing_object_has_its_own_exit_code(s3: S3, tmp_path: Path) -> None:
    upload(s3)
    out = fetch(s3, f"s3://{BUCKET}/missing/{uuid.uuid4().hex}", "0" * 64, tmp_path / "artifact")
    assert out.returncode == EXIT_NOT_FOUND, out.stderr


def test_an_unreachable_store_has_its_own_exit_code(s3: S3, tmp_path: Path) -> None:
    from modelreg.devcluster import processes

    closed = f"http://127.0.0.1:{processes.free_port()}"
    out = fetch(s3, f"s3://{BUCKET}/m.bin", "0" * 64, tmp_path / "artifact", endpoint=closed)
    assert out.returncode == EXIT_STORAGE_UNAVAILABLE, out.stderr


def test_a_second_run_replaces_the_first(s3: S3, tmp_path: Path) -> None:
    art = upload(s3)
    dest = tmp_path / "artifact"
    dest.write_bytes(b"left by an earlier run")
    out = fetch(s3, art.uri, art.sha256, dest)
    assert out.returncode == 0, out.stderr
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == art.sha256
