"""Log lines: JSON ones parse and carry the reconcile's context, in threads too;
text ones show it in brackets; outside a reconcile there is none."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from modelreg import logs


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            import sys

            exc_info = sys.exc_info()
    rec = logging.LogRecord("modelreg.test", logging.INFO, __file__, 1, message, args, exc_info)
    logs.ContextFilter().filter(rec)
    return rec


def test_a_json_line_is_one_object_with_the_context() -> None:
    with logs.context(namespace="ns", model="m", reconcile_id="abc"), logs.context(version="m-1"):
        line = logs.JsonFormatter().format(record("reconciled %s with %d writes", "ns/m", 2))
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == "reconciled ns/m with 2 writes"
    assert out["level"] == "info"
    assert out["logger"] == "modelreg.test"
    assert (out["namespace"], out["model"], out["version"], out["reconcile_id"]) == ("ns", "m", "m-1", "abc")


def test_a_traceback_stays_inside_its_json_line() -> None:
    line = logs.JsonFormatter().format(record("failed", exc=True))
    assert "\n" not in line
    out = json.loads(line)
    assert "RuntimeError: boom" in out["error"]
    assert "model" not in out  # outside a reconcile: no context


def test_the_context_ends_with_its_block() -> None:
    with logs.context(model="m"):
        assert logs.current() == {"model": "m"}
    assert logs.current() == {}


def test_the_context_reaches_a_reconcile_thread_and_stays_per_task() -> None:
    async def reconcile(model: str) -> dict[str, str]:
        with logs.context(model=model, reconcile_id=logs.new_reconcile_id()):
            await asyncio.sleep(0)  # the other task runs meanwhile
            return await asyncio.to_thread(logs.current)

    async def both() -> list[dict[str, str]]:
        return list(await asyncio.gather(reconcile("a"), reconcile("b")))

    a, b = asyncio.run(both())
    assert (a["model"], b["model"]) == ("a", "b")
    assert a["reconcile_id"] != b["reconcile_id"]


def test_a_text_line_shows_the_context_in_brackets() -> None:
    with logs.context(namespace="ns", model="m", reconcile_id="abc"):
        line = logs.TextFormatter().format(record("reconciled"))
    assert line.endswith(" INFO modelreg.test [namespace=ns model=m reconcile_id=abc]: reconciled")
    assert logs.TextFormatter().format(record("plain")).endswith(" INFO modelreg.test: plain")


def test_configure_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="text, json"):
        logs.configure("xml")


def test_configure_json_routes_every_logger_through_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        logs.configure("json")
        with logs.context(model="m"):
            logging.getLogger("kubernetes.client.rest").warning("from a library")
        err = capsys.readouterr().err.strip().splitlines()
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
        root.setLevel(level)
        logging.captureWarnings(False)
    assert [json.loads(line)["model"] for line in err] == ["m"]
