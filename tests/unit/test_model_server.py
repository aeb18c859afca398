"""The example model server (examples/model-server/server.py): its model format,
its HTTP answers before and after the model is loaded, and its life as PID 1
of a serving container (environment, one log line per request, SIGTERM)."""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modelreg.devcluster import processes
from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
SERVER_PY = REPO / "examples" / "model-server" / "server.py"
IRIS = REPO / "examples" / "artifacts" / "iris"
SETOSA = [5.1, 3.5, 1.4, 0.2]
BORDERLINE = [6.7, 3.0, 5.0, 1.7]  # a versicolor that version 1 takes for a virginica


def _load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_model_server", SERVER_PY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


srv = _load_module()


def call(url: str, body: Any = None, *, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


# --- the model ---------------------------------------------------------------------------


def test_the_example_versions_load_and_answer_differently() -> None:
    v1, v2 = srv.load(IRIS / "1" / "model.json"), srv.load(IRIS / "2" / "model.json")
    assert v1.sha256 != v2.sha256
    assert v1.model.predict(SETOSA)["label"] == v2.model.predict(SETOSA)["label"] == "setosa"
    assert v1.model.predict(BORDERLINE)["label"] == "virginica"
    assert v2.model.predict(BORDERLINE)["label"] == "versicolor"
    probabilities = v1.model.predict(SETOSA)["probabilities"]
    assert set(probabilities) == {"setosa", "versicolor", "virginica"}
    assert sum(probabilities.values()) == pytest.approx(1, abs=1e-5)
    named = dict(zip(v1.model.features, BORDERLINE, strict=True))
    assert v1.model.predict(named) == v1.model.predict(BORDERLINE)


def test_the_example_versions_name_their_artifacts_by_digest() -> None:
    import yaml

    for n in ("1", "2"):
        spec = yaml.safe_load((REPO / "examples" / f"modelversion-iris-{n}.yaml").read_text())["spec"]
        assert spec["artifact"]["uri"] == f"s3://modelreg-examples/iris/{n}/model.json"
        assert spec["artifact"]["sha256"] == srv.load(IRIS / n / "model.json").sha256


def test_logistic_and_regression_models() -> None:
    logistic = srv.LinearModel.from_json({"weights": [2.0, -1.0], "bias": 0.5, "labels": ["no", "yes"]})
    assert logistic.predict([1.0, 0.0])["label"] == "yes"  # 2.5 → p 0.92
    assert logistic.predict([-1.0, 0.0])["label"] == "no"
    assert logistic.predict([0.0, 0.5])["probabilities"] == {"no": 0.5, "yes": 0.5}  # a tie goes to the first
    regression = srv.LinearModel.from_json({"weights": [2.0, 3.0], "bias": 1})
    assert regression.predict([1, 2]) == {"value": 9.0}
    several = srv.LinearModel.from_json({"weights": [[1, 0], [0, 1]], "bias": [0, 10]})
    assert several.predict([1, 2]) == {"values": [1.0, 12.0]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([1, 2], "JSON object"),
        ({"bias": 1}, "JSON object"),
        ({"weights": []}, "non-empty list"),
        ({"weights": [[1, 2], [3]], "bias": [0, 0]}, "one weight per feature"),
        ({"weights": [[1, 2], [3, 4]], "bias": [0]}, "one number per row"),
        ({"weights": [[1, 2], [3, 4]], "bias": [0, 0], "labels": ["a"]}, "list of 2"),
        ({"weights": [1, 2], "labels": ["a", "b", "c"]}, "list of 2"),
        ({"weights": [1, "x"]}, "finite numbers"),
        ({"weights": [1, float("nan")]}, "finite numbers"),
        ({"weights": [1, True]}, "finite numbers"),
        ({"weights": [1, 2], "features": ["a", "a"]}, "must not repeat"),
    ],
)
def test_models_that_cannot_load_say_why(doc: Any, message: str) -> None:
    with pytest.raises(srv.ModelError, match=message):
        srv.LinearModel.from_json(doc)


@pytest.mark.parametrize(
    ("instance", "message"),
    [([1.0], "list of 4 numbers"), ([1, 2, 3, "x"], "finite numbers"), ({"sepal_length_cm": 1}, "lacks features")],
)
def test_instances_that_cannot_be_answered_say_why(instance: Any, message: str) -> None:
    model = srv.load(IRIS / "1" / "model.json").model
    with pytest.raises(srv.RequestError, match=message):
        model.predict(instance)


def test_a_prefix_artifact_is_a_directory(tmp_path: Path) -> None:
    model = (IRIS / "2" / "model.json").read_text()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.json").write_text(model)
    (tmp_path / "a" / "notes.json").write_text("{}")
    assert srv.load(tmp_path / "a").source == str(tmp_path / "a" / "model.json")
    (tmp_path / "b" / "weights").mkdir(parents=True)
    (tmp_path / "b" / "weights" / "iris.json").write_text(model)
    (tmp_path / "b" / "README").write_text("trained on iris")
    assert srv.load(tmp_path / "b").model.predict(BORDERLINE)["label"] == "versicolor"
    (tmp_path / "b" / "other.json").write_text(model)
    with pytest.raises(srv.ModelError, match=r"exactly one \.json file"):
        srv.load(tmp_path / "b")


# --- HTTP ----------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[Any]:
    server = srv.ModelServer(("127.0.0.1", 0))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_not_ready_until_the_model_is_loaded(server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    base = f"http://127.0.0.1:{server.server_address[1]}"
    assert call(f"{base}/healthz") == (503, {"status": "loading"})
    assert call(f"{base}/predict", {"instances": [SETOSA]})[0] == 503
    loaded = server.load(IRIS / "1" / "model.json")
    status, body = call(f"{base}/healthz")
    assert (status, body["status"], body["model"]["sha256"]) == (200, "ready", loaded.sha256)
    status, body = call(f"{base}/predict", {"instances": [SETOSA, BORDERLINE]})
    assert status == 200
    assert [p["label"] for p in body["predictions"]] == ["setosa", "virginica"]
    assert body["model"]["sha256"] == loaded.sha256
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["method"], r["path"], r["status"]) for r in lines] == [
        ("GET", "/healthz", 503), ("POST", "/predict", 503), ("GET", "/healthz", 200), ("POST", "/predict", 200)
    ]  # fmt: skip
    assert lines[-1]["instances"] == 2


def test_bad_requests_are_refused_with_a_reason(server: Any) -> None:
    base = f"http://127.0.0.1:{server.server_address[1]}"
    server.load(IRIS / "1" / "model.json")
    assert call(f"{base}/predict", raw=b"{not json")[0] == 400
    assert call(f"{base}/predict", {"rows": [SETOSA]}) == (400, {"error": 'send {"instances": [...]} with 1 to 1000 '
                                                                          "instances"})  # fmt: skip
    status, body = call(f"{base}/predict", {"instances": [[1, 2]]})
    assert status == 400
    assert body["error"].startswith("each instance must be a list of 4 numbers or an object with ['sepal_length_cm'")
    # Refused on its Content-Length, before any of it is read (a client still sending
    # would see the connection close, so this one sends only the headers).
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as sock:
        sock.sendall(f"POST /predict HTTP/1.0\r\nContent-Length: {srv.MAX_BODY + 1}\r\n\r\n".encode())
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.0 413 "), answer
    assert call(f"{base}/models")[0] == 404


# --- as a container's PID 1 ---------------------------------------------------------------


def start(model_path: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = processes.free_port()
    env = {"MODEL_PATH": str(model_path), "PORT": str(port), "HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(SERVER_PY)], env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def log_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_serves_the_artifact_at_model_path_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    proc, base = start(IRIS / "2" / "model.json", log)
    try:

        def ready() -> bool:
            try:
                return call(f"{base}/healthz")[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout=20, what="the server to load its model")
        status, body = call(f"{base}/predict", {"instances": [BORDERLINE]})
        assert (status, body["predictions"][0]["label"]) == (200, "versicolor")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0  # well within a Pod's 30 s grace period
    finally:
        proc.kill()
        proc.wait()
    lines = log_lines(log)
    requests = [line for line in lines if "path" in line]
    assert [r["path"] for r in requests][-1] == "/predict"
    assert sum(r["path"] == "/predict" for r in requests) == 1
    assert any(line.get("message", "").startswith("SIGTERM") for line in lines)
    assert lines[-1]["message"] == "stopped"


def test_a_model_that_cannot_load_exits_with_the_reason(tmp_path: Path) -> None:
    broken = tmp_path / "artifact"
    broken.write_text('{"weights": [1, 2], "labels": ["only"]}')
    log = tmp_path / "server.log"
    proc, _ = start(broken, log)
    try:
        assert proc.wait(timeout=20) == 1
    finally:
        proc.kill()
        proc.wait()
    assert any("cannot load the model" in line.get("message", "") and "labels" in line["message"]
               for line in log_lines(log))  # fmt: skip
