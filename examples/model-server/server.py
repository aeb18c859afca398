#!/usr/bin/env python3
"""A tiny model server for the examples, on the Python standard library alone.

It is the serving container of the example RegisteredModel (the image built
from the Containerfile beside this file). The operator's init container has
put the verified artifact at $MODEL_PATH: a file, or a directory when the
version's artifact is an S3 prefix (then `model.json` in it, or its only
`.json` file). The server listens at once, loads the model, and answers

    GET  /healthz  200 once the model is loaded, 503 before: the readiness probe
    POST /predict  {"instances": [[5.1, 3.5, 1.4, 0.2], ...]}
                   -> {"predictions": [{"label": ..., "probabilities": {...}}], "model": {"sha256": ...}}

with one JSON log line per request on stdout. A model that cannot be loaded
exits with status 1 (the Pod restarts and says why in its log). It runs as
PID 1 in its container, where SIGTERM without a handler is ignored: it handles
SIGTERM (and SIGINT), finishes the requests in flight and exits 0, so deleting
the Pod does not wait out the grace period.

Model format: a linear model in JSON, trained anywhere.

    {"weights": [[...], ...], "bias": [...], "labels": [...], "features": [...]}

- One row of weights per class, with `labels` naming each: softmax over the scores.
- One flat row (`weights: [...]`, `bias: 0.5`) with two labels: logistic regression,
  the second label when its probability is at least 0.5.
- Without labels: linear regression; each prediction is {"value": ...} (or
  {"values": [...]} for several rows).
- `features` (optional) names the inputs, so an instance may also be an object
  such as {"petal_length": 1.4, ...}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

MAX_BODY = 1024 * 1024  # bytes of one request
MAX_INSTANCES = 1000  # per request
DEFAULT_MODEL_PATH = "/models/artifact"


class ModelError(ValueError):
    """The artifact is not a model this server can load."""


class RequestError(ValueError):
    """The request cannot be answered; the message says why."""


def _numbers(value: Any, what: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ModelError(f"{what} must be a non-empty list of numbers")
    return tuple(_number(v, what) for v in value)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ModelError(f"{what} must hold finite numbers, not {value!r}")
    return float(value)


def _names(value: Any, what: str, count: int) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) != count or not all(isinstance(v, str) and v for v in value):
        raise ModelError(f"{what} must be a list of {count} non-empty strings")
    if len(set(value)) != count:
        raise ModelError(f"{what} must not repeat a name")
    return tuple(value)


@dataclass(frozen=True)
class LinearModel:
    """Scores are weights · x + bias, one per row; labels turn them into classes."""

    weights: tuple[tuple[float, ...], ...]
    bias: tuple[float, ...]
    labels: tuple[str, ...] = ()
    features: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, doc: Any) -> LinearModel:
        if not isinstance(doc, dict) or "weights" not in doc:
            raise ModelError('a model is a JSON object with "weights" (and "bias", "labels", "features")')
        raw = doc["weights"]
        if not isinstance(raw, list) or not raw:
            raise ModelError("weights must be a non-empty list (of numbers, or of rows of numbers)")
        flat = not isinstance(raw[0], list)
        rows = (_numbers(raw, "weights"),) if flat else tuple(_numbers(r, "each row of weights") for r in raw)
        if len({len(r) for r in rows}) != 1:
            raise ModelError("every row of weights must have one weight per feature")
        bias_raw = doc.get("bias", 0.0 if flat else [0.0] * len(rows))
        bias = (_number(bias_raw, "bias"),) if flat else _numbers(bias_raw, "bias")
        if len(bias) != len(rows):
            raise ModelError(f"bias must have one number per row of weights ({len(rows)})")
        labels = doc.get("labels")
        if labels is not None:
            labels = _names(labels, "labels", 2 if len(rows) == 1 else len(rows))
        features = _names(doc.get("features"), "features", len(rows[0]))
        return cls(weights=rows, bias=bias, labels=labels or (), features=features)

    def predict(self, instance: Any) -> dict[str, Any]:
        x = self._inputs(instance)
        rows = zip(self.weights, self.bias, strict=True)
        scores = [sum(w * v for w, v in zip(row, x, strict=True)) + b for row, b in rows]
        if not self.labels:
            return {"value": scores[0]} if len(scores) == 1 else {"values": scores}
        if len(scores) == 1:
            p = _sigmoid(scores[0])
            probabilities = [1.0 - p, p]
        else:
            top = max(scores)  # shifted, so exp never overflows
            exps = [math.exp(s - top) for s in scores]
            probabilities = [e / sum(exps) for e in exps]
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        return {"label": self.labels[best],
                "probabilities": {k: round(p, 6) for k, p in zip(self.labels, probabilities, strict=True)}}  # fmt: skip

    def _inputs(self, instance: Any) -> list[float]:
        n = len(self.weights[0])
        if isinstance(instance, dict) and self.features:
            missing = [f for f in self.features if f not in instance]
            if missing:
                raise RequestError(f"instance lacks features {missing}")
            instance = [instance[f] for f in self.features]
        if not isinstance(instance, list) or len(instance) != n:
            named = f" or an object with {list(self.features)}" if self.features else ""
            raise RequestError(f"each instance must be a list of {n} numbers{named}")
        try:
            return [_number(v, "an instance") for v in instance]
        except ModelError as exc:
            raise RequestError(str(exc)) from None


def _sigmoid(score: float) -> float:
    if score >= 0:
        return 1.0 / (1.0 + math.exp(-score))
    e = math.exp(score)
    return e / (1.0 + e)


def model_file(path: Path) -> Path:
    """The model's file: `path` itself, or, for a prefix artifact, the JSON file in it."""
    if not path.is_dir():
        return path
    if (path / "model.json").is_file():
        return path / "model.json"
    found = sorted(p for p in path.rglob("*.json") if p.is_file())
    if len(found) != 1:
        raise ModelError(f"{path} is a directory: it needs model.json or exactly one .json file ({len(found)} found)")
    return found[0]


@dataclass(frozen=True)
class Loaded:
    model: LinearModel
    source: str
    sha256: str


def load(path: Path) -> Loaded:
    file = model_file(path)
    raw = file.read_bytes()
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ModelError(f"{file} is not JSON: {exc}") from None
    return Loaded(model=LinearModel.from_json(doc), source=str(file), sha256=hashlib.sha256(raw).hexdigest())


def log(**fields: Any) -> None:
    line = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **fields}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


class ModelServer(ThreadingHTTPServer):
    """Serves one model; until `load` succeeds it is alive but not ready."""

    daemon_threads = False
    block_on_close = True  # server_close waits for the requests in flight

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, Handler)
        self.loaded: Loaded | None = None  # replaced in one assignment: readers see all of it or nothing

    def load(self, path: Path) -> Loaded:
        self.loaded = load(path)
        return self.loaded


class Handler(BaseHTTPRequestHandler):
    server: ModelServer
    timeout = 10  # a client that stalls mid-request holds neither a thread nor the exit on SIGTERM for long
    server_version = "modelreg-example-server/0.1"

    def do_GET(self) -> None:
        started = time.monotonic()
        if self.path != "/healthz":
            self._reply(404, {"error": f"no {self.path} here; GET /healthz or POST /predict"}, started)
            return
        loaded = self.server.loaded
        if loaded is None:
            self._reply(503, {"status": "loading"}, started)
        else:
            self._reply(200, {"status": "ready", "model": {"source": loaded.source, "sha256": loaded.sha256}}, started)

    def do_POST(self) -> None:
        started = time.monotonic()
        if self.path != "/predict":
            self._reply(404, {"error": f"no {self.path} here; POST /predict"}, started)
            return
        try:
            body = self._body()
            loaded = self.server.loaded
            if loaded is None:
                self._reply(503, {"error": "the model is still loading"}, started)
                return
            instances = body.get("instances") if isinstance(body, dict) else None
            if not isinstance(instances, list) or not 1 <= len(instances) <= MAX_INSTANCES:
                raise RequestError(f'send {{"instances": [...]}} with 1 to {MAX_INSTANCES} instances')
            predictions = [loaded.model.predict(i) for i in instances]
        except RequestError as exc:
            self._reply(400 if "too large" not in str(exc) else 413, {"error": str(exc)}, started)
            return
        answer = {"predictions": predictions, "model": {"sha256": loaded.sha256}}
        self._reply(200, answer, started, instances=len(instances))

    def _body(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError("a request body with Content-Length is required")
        if int(length) > MAX_BODY:
            raise RequestError(f"request body too large (at most {MAX_BODY} bytes)")
        try:
            return json.loads(self.rfile.read(int(length)))
        except ValueError as exc:
            raise RequestError(f"the body is not JSON: {exc}") from None

    def _reply(self, status: int, body: dict[str, Any], started: float, **extra: Any) -> None:
        data = json.dumps(body).encode()
        # Logged before the answer leaves: whoever got an answer can find its line.
        log(remote=self.client_address[0], method=self.command, path=self.path, status=status,
            ms=round((time.monotonic() - started) * 1000, 2), **extra)  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _reply writes the one line per request, with its duration

    def log_message(self, format: str, *args: Any) -> None:
        log(remote=self.client_address[0], message=format % args)  # malformed requests and the like


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--model-path", type=Path, default=Path(os.environ.get("MODEL_PATH", DEFAULT_MODEL_PATH)))
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log(message=f"{signal.Signals(signum).name}: finishing requests in flight and exiting")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = ModelServer((args.host, args.port))
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http")
    serving.start()  # listening before the model loads: probes get 503 meanwhile, not a refused connection
    log(message=f"listening on {args.host}:{server.server_address[1]}")
    status = 0
    try:
        loaded = server.load(args.model_path)
        log(message=f"loaded {loaded.source}", sha256=loaded.sha256, features=len(loaded.model.weights[0]),
            labels=list(loaded.model.labels))  # fmt: skip
        while not stop.wait(1.0):
            pass
    except (OSError, ModelError) as exc:
        log(message=f"cannot load the model at {args.model_path}: {exc}")
        status = 1
    server.shutdown()
    server.server_close()
    serving.join()
    log(message="stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
