"""The work queue deduplicates keys and never runs one key twice at once; adds
from many threads at once (as the artifact verifier's pool makes them) never
strand a key."""

from __future__ import annotations

import asyncio
import inspect
import random
import threading
import time

from modelreg import handlers, reconciling
from modelreg.workqueue import WorkQueue


def test_adding_a_queued_key_again_is_a_no_op() -> None:
    async def scenario() -> None:
        q: WorkQueue[str] = WorkQueue()
        q.add("a")
        q.add("a")
        q.add("b")
        assert len(q) == 2
        assert await q.get() == "a"
        assert await q.get() == "b"

    asyncio.run(scenario())


def test_a_key_added_while_active_runs_again_after_done() -> None:
    async def scenario() -> None:
        q: WorkQueue[str] = WorkQueue()
        q.add("a")
        key = await q.get()
        q.add("a")  # an event arrives mid-reconcile
        assert q._ready.empty()  # not handed to a second worker
        q.done(key)
        assert await asyncio.wait_for(q.get(), 1) == "a"
        q.done("a")
        assert len(q) == 0

    asyncio.run(scenario())


def test_a_key_says_how_long_it_waited_while_it_is_worked_on() -> None:
    async def scenario() -> None:
        q: WorkQueue[str] = WorkQueue()
        q.add("a")
        await asyncio.sleep(0.05)
        key = await q.get()
        assert 0.04 < q.waited(key) < 1
        q.done(key)
        assert q.waited(key) == 0

    asyncio.run(scenario())


def test_laps_add_up_per_step_in_order() -> None:
    laps = reconciling.Laps()
    for step in ("read", "verify", "read"):
        time.sleep(0.01)
        laps.lap(step)
    assert list(laps.steps) == ["read", "verify"]
    assert laps.steps["read"] >= 0.02 > laps.steps["verify"] >= 0.01


KEYS = 40
THREADS = 12
ADDS_PER_THREAD = 400
WORKERS = 4


async def _hammer() -> tuple[dict[int, float], dict[int, float], list[int], list[BaseException]]:
    # Debug mode makes asyncio refuse loop calls from a foreign thread, so an
    # add that touched the queue in place from a thread would fail loudly here.
    asyncio.get_running_loop().set_debug(True)
    queue: WorkQueue[int] = WorkQueue()
    active: set[int] = set()
    overlaps: list[int] = []
    last_start: dict[int, float] = {}

    async def worker() -> None:
        while True:
            key = await queue.get()
            if key in active:
                overlaps.append(key)
            active.add(key)
            last_start[key] = time.monotonic()
            await asyncio.sleep(0)  # "processing": other workers and hops run meanwhile
            active.discard(key)
            queue.done(key)

    tasks = [asyncio.create_task(worker()) for _ in range(WORKERS)]
    await asyncio.sleep(0)  # the workers wait in get(): the queue knows its loop

    last_add: dict[int, float] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def burst(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(ADDS_PER_THREAD):
                key = rnd.randrange(KEYS)
                with lock:
                    last_add[key] = time.monotonic()
                queue.add(key)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=burst, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        await asyncio.to_thread(t.join)

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        caught_up = all(last_start.get(k, 0.0) > added for k, added in last_add.items())
        if caught_up and not active and len(queue) == 0:
            break
        await asyncio.sleep(0.01)
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=5)
    return last_add, last_start, overlaps, errors


def test_adds_from_many_threads_strand_no_key_and_never_overlap() -> None:
    # Bounded, and on a loop closed without cancelling what is left: a queue that
    # loses wake-ups leaves workers that never finish, and must fail, not hang.
    loop = asyncio.new_event_loop()
    try:
        last_add, last_start, overlaps, errors = loop.run_until_complete(asyncio.wait_for(_hammer(), timeout=60))
    finally:
        loop.close()
    assert errors == []
    assert overlaps == [], "a key was processed by two workers at once"
    assert len(last_add) == KEYS
    stranded = [k for k, added in last_add.items() if last_start.get(k, 0.0) <= added]
    assert stranded == [], "keys added but never processed after their last add"


def test_event_handlers_run_on_the_loop() -> None:
    """Kopf runs plain `def` handlers in executor threads; ours must be coroutines
    so their adds happen on the loop, not from Kopf's threads."""
    for handler in (handlers.on_model_event, handlers.on_version_event, handlers.on_owned_event):
        assert inspect.iscoroutinefunction(handler), getattr(handler, "__name__", handler)
