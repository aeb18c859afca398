"""Log output: human-readable lines by default, one JSON object a line on request.

Configured once by `running` (`modelreg run --log-format json|text`). Whatever
runs during a reconcile logs with the reconcile's context (namespace, model, a
reconcile id; the version where one is concerned) without passing it around:
`handlers` opens `context(...)` around each reconcile, and a `contextvars`
variable carries it into the reconcile's thread (`asyncio.to_thread` copies the
context) and into every logger, the Kubernetes client's and Kopf's included.
Threads of other pools (artifact checks) open their own `context`.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

FORMATS = ("text", "json")
FIELDS = ("namespace", "model", "version", "reconcile_id")

_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("modelreg_log_context", default={})  # noqa: B039 (never mutated)


@contextlib.contextmanager
def context(**fields: str | None) -> Iterator[dict[str, str]]:
    """Add fields to every line logged inside, on top of those already set."""
    merged = _context.get() | {k: v for k, v in fields.items() if v is not None}
    token = _context.set(merged)
    try:
        yield merged
    finally:
        _context.reset(token)


def new_reconcile_id() -> str:
    return uuid.uuid4().hex[:16]


def current() -> dict[str, str]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the current context onto each record (as `record.context`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.context = _context.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the context's fields,
    and the traceback (as one string) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out |= getattr(record, "context", None) or _context.get()
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with the context in brackets when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "context", None) or {}
        if not fields:
            return line
        head, sep, rest = line.partition(": ")
        said = " ".join(f"{k}={fields[k]}" for k in FIELDS if k in fields)
        return f"{head} [{said}]{sep}{rest}"


def configure(log_format: str = "text", level: int = logging.INFO) -> None:
    """Route every logger through one stderr handler with the chosen format."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings become log lines too (JSON when asked)
