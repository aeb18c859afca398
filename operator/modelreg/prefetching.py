"""Reading ahead: one thread reads a stream a few chunks ahead of whoever consumes it.

Called by `artifacts` to stream an object that the store has no SHA-256 for:
without it, download and hashing take turns (a 1 GiB artifact cost the GET's
time plus the hash's); with it, the next chunk arrives while this one is hashed,
so a check costs about the slower of the two. Both sides spend their time
outside the GIL (socket reads, OpenSSL's SHA-256 on buffers this large), so two
threads really do overlap.

Concurrency. The reader thread is the only caller of `read`; the consumer's
thread gets the chunks in order through a queue of at most `depth` chunks, so
memory stays bounded by (depth + 2) chunks: the queued ones, the one being read
and the one being consumed. A failure of `read` travels through the queue and is
raised in the consumer, where it would have been raised without the thread.
When the consumer stops early (a budget ran out, a hash failed, it raised), the
generator's `finally` tells the reader to stop, empties the queue so a blocked
put returns, and joins the reader: it is never left running after the call, and
the caller may close the stream the moment iteration ends. The join waits out at
most the one `read` in progress, which the caller bounds (the S3 client's read
timeout).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator

_END = object()


class _Failed:
    """A failure of the reader, carried to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def read_ahead(read: Callable[[int], bytes], *, chunk: int, depth: int) -> Generator[bytes]:
    """The chunks `read(chunk)` returns until it returns b"", read by a thread up to
    `depth` chunks ahead of the consumer; depth 0: read in the consumer's thread
    (a stream of one chunk has nothing to overlap). Close the generator (or
    exhaust it) before closing the stream."""
    if depth < 0:
        raise ValueError("depth must not be negative")
    if depth == 0:
        yield from iter(lambda: read(chunk), b"")
        return
    chunks: queue.Queue[object] = queue.Queue(maxsize=depth)
    stopped = threading.Event()  # set by the consumer: put nothing more

    def fill() -> None:
        try:
            while not stopped.is_set():
                data = read(chunk)
                if stopped.is_set():
                    return
                chunks.put(data if data else _END)
                if not data:
                    return
        except BaseException as exc:  # every failure belongs to the consumer, even a KeyboardInterrupt
            if not stopped.is_set():
                chunks.put(_Failed(exc))

    reader = threading.Thread(target=fill, name="read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            item = chunks.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            assert isinstance(item, bytes)
            yield item
    finally:
        stopped.set()
        # After `stopped` the reader puts at most one more item (it checks between its
        # read and its put): emptying the queue now leaves room for it, so it never blocks.
        while True:
            try:
                chunks.get_nowait()
            except queue.Empty:
                break
        reader.join()
