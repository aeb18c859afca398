"""`modelreg fetch-artifact`: the serving Pod's init container.

Downloads the artifact, re-verifies the SHA-256 the operator recorded, and only
then moves it into place with one rename, so the model server never sees a
partial or unverified file. Each failure has its own exit code:

  0  verified and in place
  1  any other failure (an invalid URI, an unexpected error)
  3  the artifact does not exist
  4  its SHA-256 is not the one recorded (nothing was written)
  5  the store did not answer
  6  the store refused access

On failure the one line it prints also goes to the container's termination
message file (Kubernetes' default `/dev/termination-log`), so the Pod's status
quotes it and the operator's status can say why a rollout is stuck.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

from modelreg import artifacts
from modelreg.facts import ArtifactReason

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_FOUND = 3
EXIT_CHECKSUM_MISMATCH = 4
EXIT_STORAGE_UNAVAILABLE = 5
EXIT_ACCESS_DENIED = 6
TERMINATION_LOG = Path("/dev/termination-log")  # the kubelet's default terminationMessagePath
MAX_TERMINATION_MESSAGE = 1024  # bytes; the kubelet keeps at most 4096 per container

_EXIT_CODES = {
    ArtifactReason.NOT_FOUND: EXIT_NOT_FOUND,
    ArtifactReason.CHECKSUM_MISMATCH: EXIT_CHECKSUM_MISMATCH,
    ArtifactReason.STORAGE_UNAVAILABLE: EXIT_STORAGE_UNAVAILABLE,
    ArtifactReason.ACCESS_DENIED: EXIT_ACCESS_DENIED,
}


def fetch_artifact(client: artifacts.S3Client, *, uri: str, sha256: str, dest: Path) -> None:
    """Put the verified artifact at `dest` (a file, or a directory for a prefix)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest.parent))
    try:
        landed = staging / "artifact"
        if artifacts.parse_uri(uri).is_prefix:
            landed.mkdir()
        digest = artifacts.download(client, uri, into=landed)
        if digest != sha256:
            raise artifacts.ArtifactError(
                ArtifactReason.CHECKSUM_MISMATCH, f"{uri} has SHA-256 {digest}, expected {sha256}; nothing was written"
            )
        if dest.exists():  # a restarted init container: replace what an earlier run left
            old = staging / "previous"
            os.rename(dest, old)
        os.rename(landed, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(*, uri: str, sha256: str, dest: Path, termination_log: Path = TERMINATION_LOG) -> int:
    try:
        client = artifacts.new_s3_client()  # endpoint, region and keys from the Pod's environment
        fetch_artifact(client, uri=uri, sha256=sha256, dest=dest)
    except artifacts.ArtifactError as exc:
        return _fail(f"fetch-artifact: {exc.reason.value}: {exc}", _EXIT_CODES.get(exc.reason, EXIT_FAILED),
                     termination_log)  # fmt: skip
    except Exception as exc:  # the traceback for the log, one line for the Pod's status
        traceback.print_exc()
        return _fail(f"fetch-artifact: {type(exc).__name__}: {exc}", EXIT_FAILED, termination_log)
    print(f"fetch-artifact: {uri} verified (sha256 {sha256[:12]}…) at {dest}")
    return EXIT_OK


def _fail(line: str, code: int, termination_log: Path) -> int:
    line = " ".join(line.split())
    print(line, file=sys.stderr)
    write_termination_message(line, termination_log)
    return code


def write_termination_message(line: str, path: Path = TERMINATION_LOG) -> None:
    """Leave `line` (cut to MAX_TERMINATION_MESSAGE bytes) where the kubelet reads a
    terminated container's message. Only where that file exists and is writable
    (in a Pod; not when run by hand); never a reason to fail differently."""
    if not path.is_file() or not os.access(path, os.W_OK):
        return
    data = line.encode()[:MAX_TERMINATION_MESSAGE].decode(errors="ignore")
    with contextlib.suppress(OSError):
        path.write_text(data)
