"""The work queue deduplicates keys and never runs one key twice at once."""

from __future__ import annotations

import asyncio

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
