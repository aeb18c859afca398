"""Streamed SHA-256 verification of a large object the store has no checksum for,
against the real S3 server (versitygw on loopback, started as the e2e fixtures do),
next to its floor measured on the same object in the same run:

  floor = max(raw GET of the object, SHA-256 of its bytes already in memory)

With download and hashing overlapped (artifacts → prefetching) a check should cost
about the floor (target <= 1.2x); read and hashed in turns, it costs their sum
(printed too, as "in turns"). Rounds interleave the measurements, so load from
elsewhere on the machine falls on all of them alike; medians are printed. Also
shows that an object with the store's SHA-256 is verified with zero GETs.

Run: make bench   (or .venv/bin/python bench/verify_speed.py [MiB], default 1024)
"""

from __future__ import annotations

import datetime
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelreg import artifacts
from modelreg.devcluster import building, processes, s3server

BUCKET = "modelreg-bench-verify"
ROUNDS = 5
READ = 4 * 1024 * 1024  # the size of the verifier's own reads
NOW = datetime.datetime.now(datetime.UTC)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    size = mib * 1024 * 1024
    bins = building.ensure_binaries()
    with tempfile.TemporaryDirectory(prefix="modelreg-bench-verify-") as tmp:
        config = s3server.new_config(Path(tmp))
        server = s3server.start(config, binary=bins.s3_server, tie_to_parent=True)
        try:
            run(config, size)
        finally:
            processes.stop(server)


def run(config: s3server.S3Config, size: int) -> None:
    client: Any = artifacts.new_s3_client(endpoint=config.endpoint, region=config.region,
                                          access_key=config.access_key, secret_key=config.secret_key)  # fmt: skip
    artifacts.ensure_bucket(client, BUCKET)
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    client.put_object(Bucket=BUCKET, Key="plain.bin", Body=data)  # no checksum: verify must download it
    uri = f"s3://{BUCKET}/plain.bin"
    gets: list[str] = []
    client.meta.events.register("before-parameter-build.s3.GetObject", lambda params, **_: gets.append(params["Key"]))

    def raw_get() -> None:
        body = client.get_object(Bucket=BUCKET, Key="plain.bin")["Body"]
        while body.read(READ):
            pass

    def hash_alone() -> None:
        view, h = memoryview(data), hashlib.sha256()
        for at in range(0, size, READ):
            h.update(view[at : at + READ])
        if h.hexdigest() != sha:
            raise RuntimeError("hashing in memory gave another digest")

    def in_turns() -> None:  # how verification streamed before: read a chunk, hash it, read the next
        body, h = client.get_object(Bucket=BUCKET, Key="plain.bin")["Body"], hashlib.sha256()
        while chunk := body.read(READ):
            h.update(chunk)
        if h.hexdigest() != sha:
            raise RuntimeError("hashing in turns gave another digest")

    def verify() -> None:
        check = artifacts.verify(client, uri, expected_sha256=sha, previous=None, now=NOW)
        if not check.ok or check.facts is None or check.facts.checksum_source != "Streamed":
            raise RuntimeError(f"not verified by streaming: {check.message}")

    samples: dict[str, list[float]] = {"raw GET": [], "hash alone": [], "in turns": [], "verify": []}
    cpu: dict[str, list[float]] = {name: [] for name in samples}  # this process's CPU time, all its threads
    raw_get()  # warm the server's page cache and the connection pool
    for _ in range(ROUNDS):
        for name, fn in (("raw GET", raw_get), ("hash alone", hash_alone), ("verify", verify),
                         ("in turns", in_turns)):  # fmt: skip
            cpu_started = time.process_time()
            samples[name].append(timed(fn))
            cpu[name].append(time.process_time() - cpu_started)
    ms = {name: statistics.median(s) * 1000 for name, s in samples.items()}
    floor = max(ms["raw GET"], ms["hash alone"])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"streamed SHA-256 verify of {size // 2**20} MiB without a store checksum (medians of {ROUNDS}, ms; "
        f"{os.cpu_count()} cores, load average {load}: overlap needs a free core):"
    )
    print(f"  raw GET {ms['raw GET']:.0f}   hash alone {ms['hash alone']:.0f}   floor max(GET, hash) {floor:.0f}")
    print(f"  verify {ms['verify']:.0f}   ratio {ms['verify'] / floor:.2f}x the floor (target <= 1.2x)")
    print(f"  in turns (read, then hash, as before) {ms['in turns']:.0f}   ratio {ms['in turns'] / floor:.2f}x")
    print("  CPU of this process (all threads; the server's apart), medians, ms: "
          + "   ".join(f"{n} {statistics.median(c) * 1000:.0f}" for n, c in cpu.items()))  # fmt: skip
    print("  every round, ms: " + "; ".join(f"{n} {', '.join(f'{s * 1000:.0f}' for s in v)}"
                                             for n, v in samples.items()))  # fmt: skip

    client.put_object(Bucket=BUCKET, Key="stored.bin", Body=data[: 64 * 1024 * 1024], ChecksumAlgorithm="SHA256")
    gets.clear()
    stored_sha = hashlib.sha256(data[: 64 * 1024 * 1024]).hexdigest()
    started = time.perf_counter()
    check = artifacts.verify(client, f"s3://{BUCKET}/stored.bin", expected_sha256=stored_sha, previous=None, now=NOW)
    took = time.perf_counter() - started
    if not check.ok or check.facts is None or check.facts.checksum_source != "Store":
        raise RuntimeError(f"not verified by the store's checksum: {check.message}")
    print(f"  with the store's SHA-256 (64 MiB object): {took * 1000:.0f} ms, {len(gets)} GETs (target 0)")


if __name__ == "__main__":
    main()
