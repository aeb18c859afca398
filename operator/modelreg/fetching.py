"""`modelreg fetch-artifact`: the serving Pod's init container.

Downloads the artifact, re-verifies the SHA-256 the operator recorded, and only
then moves it into place with one rename, so the model server never sees a
partial or unverified file. Each failure has its own exit code.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from modelreg import artifacts
from modelreg.facts import ArtifactReason

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_FOUND = 3
EXIT_CHECKSUM_MISMATCH = 4
EXIT_STORAGE_UNAVAILABLE = 5
EXIT_ACCESS_DENIED = 6

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


def main(*, uri: str, sha256: str, dest: Path) -> int:
    client = artifacts.new_s3_client()  # endpoint, region and keys from the Pod's environment
    try:
        fetch_artifact(client, uri=uri, sha256=sha256, dest=dest)
    except artifacts.ArtifactError as exc:
        print(f"fetch-artifact: {exc.reason.value}: {exc}", file=sys.stderr)
        return _EXIT_CODES.get(exc.reason, EXIT_FAILED)
    print(f"fetch-artifact: {uri} verified (sha256 {sha256[:12]}…) at {dest}")
    return EXIT_OK
