"""Reading ahead (prefetching.read_ahead): the same bytes in the same order as a
plain read, memory bounded by its depth, failures raised to the consumer, and no
reader left behind when the consumer stops early."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelreg.prefetching import read_ahead


def wait_until(probe: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.001)


class Counted:
    """A stream that counts its reads (and can fail at one)."""

    def __init__(self, data: bytes, *, fail_at: int | None = None) -> None:
        self.stream = io.BytesIO(data)
        self.reads = 0
        self.fail_at = fail_at

    def read(self, n: int) -> bytes:
        self.reads += 1
        if self.fail_at is not None and self.reads == self.fail_at:
            raise OSError("connection reset midway")
        return self.stream.read(n)


def readers_alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "read-ahead"]


@given(data=st.binary(max_size=5000), chunk=st.integers(1, 700), depth=st.integers(0, 4))
def test_the_chunks_are_the_stream_in_order(data: bytes, chunk: int, depth: int) -> None:
    chunks = list(read_ahead(io.BytesIO(data).read, chunk=chunk, depth=depth))
    assert b"".join(chunks) == data
    assert all(len(c) == chunk for c in chunks[:-1])


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_it_reads_at_most_depth_plus_one_chunks_ahead(depth: int) -> None:
    stream = Counted(b"x" * 100)
    chunks = read_ahead(stream.read, chunk=1, depth=depth)
    assert next(chunks) == b"x"
    # `depth` chunks queued and one in the reader's hands, blocked on the full queue.
    bound = 1 + depth + 1
    wait_until(lambda: stream.reads >= bound, "the reader to fill the queue")
    assert stream.reads == bound
    chunks.close()
    assert not readers_alive()


def test_a_failure_of_the_reader_is_raised_to_the_consumer_after_the_chunks_before_it() -> None:
    stream = Counted(b"abcdef", fail_at=3)
    chunks = read_ahead(stream.read, chunk=2, depth=2)
    assert [next(chunks), next(chunks)] == [b"ab", b"cd"]
    with pytest.raises(OSError, match="connection reset midway"):
        next(chunks)
    assert not readers_alive()


def test_a_consumer_that_stops_early_leaves_no_reader_behind() -> None:
    stream = Counted(b"y" * 1000)
    for _ in read_ahead(stream.read, chunk=10, depth=2):
        break  # the loop's end closes the generator
    assert not readers_alive()
    assert stream.reads < 100, "it stopped reading"


def test_a_consumer_failure_stops_the_reader_blocked_on_a_full_queue() -> None:
    stream = Counted(b"z" * 1000)

    def consume() -> None:
        for _ in read_ahead(stream.read, chunk=1, depth=1):
            wait_until(lambda: stream.reads >= 3, "the reader to block")
            raise ValueError("the budget ran out")

    with pytest.raises(ValueError, match="budget"):
        consume()
    assert not readers_alive()


def test_depth_zero_reads_in_the_consumers_thread() -> None:
    seen: list[str] = []

    def read(n: int) -> bytes:
        seen.append(threading.current_thread().name)
        return b"" if len(seen) > 2 else b"q"

    assert list(read_ahead(read, chunk=1, depth=0)) == [b"q", b"q"]
    assert set(seen) == {threading.current_thread().name}


def test_many_streams_at_once_each_get_their_own_bytes() -> None:
    blobs = [bytes([i]) * (10_000 + 37 * i) for i in range(16)]

    def digest(data: bytes) -> str:
        sha = hashlib.sha256()
        for c in read_ahead(io.BytesIO(data).read, chunk=333, depth=2):
            sha.update(c)
        return sha.hexdigest()

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(digest, blobs)) == [hashlib.sha256(b).hexdigest() for b in blobs]
    assert not readers_alive()


def test_a_negative_depth_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        next(read_ahead(io.BytesIO(b"a").read, chunk=1, depth=-1))
