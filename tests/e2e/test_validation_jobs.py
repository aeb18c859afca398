"""Validation Jobs on the real node (issue 9, item 1): real containers, real exits.

The dev cluster with a real node, the operator in-cluster, the images in the
loopback registry and S3 on the node's address, as in test_real_traffic.py
(whose module fixture this module reuses: one real node per host). The
validation image is the example model server's: it has Python, and its
`server.py` loads an artifact as the server does.

In order, on one model: version 1 passes a trivial Job (the time from its
registration to the result is printed) and is promoted to Production through a
second Job; then version 2, asking for Staging, meets a failing Job, an image
that does not exist and a Job past its deadline (version 1 serving
throughout), and at last a Job that compares its predictions with Production's
through MODELREG_PRODUCTION_ENDPOINT and reports the agreement, which a
threshold then reads. `-s` shows the figures.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from modelreg.devcluster import node
from tests.conftest import wait_for
from tests.e2e.conftest import REPO
from tests.e2e.registry import (
    apply,
    condition,
    events,
    model_manifest,
    operator_writes,
    secret_manifest,
    serving_version,
    set_stage,
    status,
    version_manifest,
    wait_serving,
    wait_stage,
)
from tests.e2e.test_real_traffic import BORDERLINE, MODEL, NAMESPACE, V1, V2, Traffic, traffic

__all__ = ["traffic"]  # the module fixture of test_real_traffic, used here as its own module's

PLACEMENT = {
    "nodeSelector": {node.LABEL[0]: node.LABEL[1]},
    "tolerations": [{"key": node.LABEL[0], "operator": "Equal", "value": node.LABEL[1], "effect": "NoSchedule"}],
}
# Samples on which versions 1 and 2 agree but for the borderline one (computed below, not assumed).
SAMPLES = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.9, 3.1, 5.4, 2.1], [5.8, 2.7, 4.1, 1.0], BORDERLINE]

# Loads the artifact the Job got as the server would, checks it is the digest the
# operator verified, and writes a metric to the termination message.
CHECK = """
import hashlib, json, os, pathlib
data = pathlib.Path(os.environ["MODEL_PATH"]).read_bytes()
assert "sha256:" + hashlib.sha256(data).hexdigest() == os.environ["MODELREG_DIGEST"], "not the verified artifact"
pathlib.Path("/dev/termination-log").write_text(json.dumps({"artifact_bytes": len(data)}))
"""
# Predicts SAMPLES with the candidate (the server's own code on MODEL_PATH) and with
# Production (through its endpoint), and reports how often they agree.
AGREEMENT = """
import json, os, pathlib, sys, urllib.request
sys.path.insert(0, "/app")
import server
mine = server.load(pathlib.Path(os.environ["MODEL_PATH"])).model
samples = json.loads(os.environ["SAMPLES"])
request = urllib.request.Request(os.environ["MODELREG_PRODUCTION_ENDPOINT"] + "/predict",
                                 data=json.dumps({"instances": samples}).encode(),
                                 headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=10) as response:
    theirs = [p["label"] for p in json.loads(response.read())["predictions"]]
same = sum(mine.predict(s)["label"] == t for s, t in zip(samples, theirs))
print(f"production {os.environ['MODELREG_PRODUCTION_VERSION']} and {os.environ['MODELREG_VERSION']} agree on {same}")
pathlib.Path("/dev/termination-log").write_text(json.dumps({"agreement": same / len(samples)}))
"""


@pytest.fixture(scope="module", autouse=True)
def jobs_cleaned(traffic: Traffic) -> Iterator[None]:
    """The Jobs go before the cluster does (their controller would start Pods anew)."""
    yield
    traffic.kube.run("delete", "jobs", "--all", "-n", NAMESPACE, "--wait=false")


def _model(t: Traffic, validation: dict[str, Any], **promotion: Any) -> None:
    serving = {"image": t.server_image, "port": 8080, "replicas": 1, "stagingReplicas": 1,
               "progressDeadlineSeconds": 120, "readinessProbe": {"path": "/healthz", "periodSeconds": 1}}  # fmt: skip
    storage = {
        "endpoint": t.s3.config.endpoint,
        "region": t.s3.config.region,
        "credentialsSecret": {"name": "s3-creds"},
    }
    validation = {"image": t.server_image} | validation  # the model server's image, unless the test names another
    apply(t.kube, NAMESPACE, model_manifest(MODEL, serving=serving | PLACEMENT, storage=storage,
                                            promotion={"validation": validation} | promotion))  # fmt: skip


def _python(script: str, **fields: Any) -> dict[str, Any]:
    return {"command": ["python3", "-c", script], "activeDeadlineSeconds": 120} | fields


def _outcome(t: Traffic, name: str, *, other_than: str | None, timeout: float = 150) -> dict[str, Any]:
    """The version's status once a Job with a key other than `other_than` has an outcome."""

    def done() -> dict[str, Any] | None:
        st = status(t.kube, NAMESPACE, name)
        v = st.get("validation") or {}
        return st if v.get("key") not in (None, other_than) and v.get("result") in ("Passed", "Failed") else None

    return wait_for(done, timeout=timeout, what=f"the validation outcome of {name}")


def _job_seconds(st: dict[str, Any]) -> float:
    v = st["validation"]
    started = time.mktime(time.strptime(v["startedAt"], "%Y-%m-%dT%H:%M:%SZ"))
    return time.mktime(time.strptime(v["finishedAt"], "%Y-%m-%dT%H:%M:%SZ")) - started


def _key(t: Traffic, name: str) -> str | None:
    return (status(t.kube, NAMESPACE, name).get("validation") or {}).get("key")


def _assert_v1_serves(t: Traffic) -> None:
    assert serving_version(t.kube, NAMESPACE, MODEL) == V1.number
    st = status(t.kube, NAMESPACE, V1.name)
    assert st["stage"] == "Production"
    assert condition(st, "Ready")["status"] == "True", st


def _job_creates(t: Traffic) -> list[str]:
    assert t.kube.audit_log is not None
    return [w["objectRef"]["name"] for w in operator_writes(t.kube.audit_log, NAMESPACE)
            if w["objectRef"].get("resource") == "jobs" and w["verb"] == "create"]  # fmt: skip


def test_a_passing_job_lets_a_version_in_and_its_time_is_measured(traffic: Traffic) -> None:
    t = traffic
    creds = {"AWS_ACCESS_KEY_ID": t.s3.config.access_key.encode(),
             "AWS_SECRET_ACCESS_KEY": t.s3.config.secret_key.encode()}  # fmt: skip
    apply(t.kube, NAMESPACE, secret_manifest("s3-creds", creds))
    _model(t, _python(CHECK))
    registered = time.monotonic()
    apply(t.kube, NAMESPACE, version_manifest(V1.name, model=MODEL, version=V1.number, uri=V1.uri, sha256=V1.sha256,
                                              stage="Staging"))  # fmt: skip

    def validated() -> dict[str, Any] | None:
        st = status(t.kube, NAMESPACE, V1.name)
        return st if condition(st, "ValidationPassed").get("status") == "True" else None

    st = wait_for(validated, timeout=150, what="version 1's validation to pass", interval=0.1)
    seen = time.monotonic() - registered
    assert st["validation"]["result"] == "Passed"
    assert st["validation"]["metrics"] == {"artifact_bytes": float(len((REPO / "examples" / "artifacts" / "iris" /
                                                                       "1" / "model.json").read_bytes()))}  # fmt: skip
    assert st["validation"]["digest"] == f"sha256:{V1.sha256}"
    job = _job_seconds(st)
    print(f"validation of a trivial Job: registration to ValidationPassed=True {seen:.1f}s "
          f"(the Job itself, created to finished: {job:.0f}s, init container and pull included)")  # fmt: skip
    wait_stage(t.kube, NAMESPACE, V1.name, "Staging", timeout=60)

    key = st["validation"]["key"]
    set_stage(t.kube, NAMESPACE, V1.name, "Production")  # a new generation: validated again
    st = _outcome(t, V1.name, other_than=key)
    assert st["validation"]["result"] == "Passed", st["validation"]
    wait_stage(t.kube, NAMESPACE, V1.name, "Production", timeout=150)
    wait_serving(t.kube, NAMESPACE, MODEL, V1.number, timeout=150)


def test_a_failing_job_blocks_the_version_quoting_its_message(traffic: Traffic) -> None:
    t = traffic
    # One stream: the kubelet keeps the order of a stream's lines, not across stdout and stderr.
    _model(t, _python("import sys\nprint('checked 150 samples', file=sys.stderr)\n"
                      "print('accuracy 0.41 is below 0.8', file=sys.stderr)\nsys.exit(3)"))  # fmt: skip
    apply(t.kube, NAMESPACE, version_manifest(V2.name, model=MODEL, version=V2.number, uri=V2.uri, sha256=V2.sha256,
                                              stage="Staging"))  # fmt: skip
    st = _outcome(t, V2.name, other_than=None)
    said = condition(st, "ValidationPassed")
    print(f"failing Job: ValidationPassed={said['status']} {said['reason']}: {said['message']}")
    assert (said["status"], said["reason"]) == ("False", "Failed")
    assert "exited 3" in said["message"]
    quoted, _, release = said["message"].partition("; to release: ")
    assert quoted.endswith("accuracy 0.41 is below 0.8"), "the end of its log is quoted"
    assert "fix what the Job reports" in release, "and what would release the version"
    assert st["stage"] == "Development"
    assert condition(st, "Stalled")["status"] == "True"
    assert [e["reason"] for e in events(t.kube, NAMESPACE, V2.name) if e["type"] == "Warning"] == ["Failed"]
    _assert_v1_serves(t)


def test_a_job_whose_image_does_not_exist_fails(traffic: Traffic) -> None:
    t = traffic
    before = _key(t, V2.name)
    missing = t.server_image.split("/", 1)[0] + "/modelreg/no-such-image:0"
    started = time.monotonic()
    _model(t, _python(CHECK) | {"image": missing})
    st = _outcome(t, V2.name, other_than=before)
    said = condition(st, "ValidationPassed")
    print(f"missing image: {time.monotonic() - started:.1f}s to {said['reason']}: {said['message']}")
    assert (said["status"], said["reason"]) == ("False", "ImagePullFailed")
    assert missing in said["message"]
    job = st["validation"]["jobName"]
    wait_for(lambda: t.kube.run("get", "job", job, "-n", NAMESPACE).returncode != 0, timeout=30,
             what="the stuck Job to be deleted")  # fmt: skip
    assert st["stage"] == "Development"
    _assert_v1_serves(t)


def test_a_job_past_its_deadline_fails_and_waits_without_stalling_while_it_runs(traffic: Traffic) -> None:
    t = traffic
    before = _key(t, V2.name)
    _model(t, _python("import time\ntime.sleep(300)", activeDeadlineSeconds=15))

    def running() -> dict[str, Any] | None:
        st = status(t.kube, NAMESPACE, V2.name)
        return st if (st.get("validation") or {}).get("key") not in (None, before) else None

    st = wait_for(running, timeout=60, what="version 2's new Job to be recorded")
    if st["validation"]["result"] == "Running":  # seen while it runs: on its way, not stalled, v1 untouched
        assert condition(st, "ValidationPassed")["status"] == "Unknown"
        assert condition(st, "Stalled")["status"] == "False"
        assert st["phase"] == "Reconciling"
        _assert_v1_serves(t)
    st = _outcome(t, V2.name, other_than=before)
    said = condition(st, "ValidationPassed")
    print(f"deadline: {said['reason']} after {_job_seconds(st):.0f}s: {said['message']}")
    assert (said["status"], said["reason"]) == ("False", "DeadlineExceeded")
    assert 15 <= _job_seconds(st) < 60
    _assert_v1_serves(t)


def _load_example_server() -> Any:
    spec = importlib.util.spec_from_file_location("example_server", REPO / "examples" / "model-server" / "server.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_a_metric_the_job_reports_is_read_by_a_threshold(traffic: Traffic) -> None:
    t = traffic
    server = _load_example_server()
    one, two = (server.load(REPO / "examples" / "artifacts" / "iris" / n / "model.json").model for n in ("1", "2"))
    expected = sum(one.predict(s)["label"] == two.predict(s)["label"] for s in SAMPLES) / len(SAMPLES)
    assert 0 < expected < 1, "the samples should tell the versions apart, a little"
    before = _key(t, V2.name)
    agreement = _python(AGREEMENT, env=[{"name": "SAMPLES", "value": json.dumps(SAMPLES)}])
    _model(t, agreement, thresholds=[{"metric": "agreement", "min": expected + 0.01}])
    st = _outcome(t, V2.name, other_than=before)
    assert st["validation"]["result"] == "Passed", st["validation"]
    assert st["validation"]["metrics"] == {"agreement": pytest.approx(expected)}
    wait_for(lambda: condition(status(t.kube, NAMESPACE, V2.name), "MetricThresholds").get("status") == "False",
             timeout=30, what="the threshold to read the reported agreement")  # fmt: skip
    said = condition(status(t.kube, NAMESPACE, V2.name), "MetricThresholds")
    print(f"agreement with Production (version 1) reported by the Job: {expected:g}; threshold: {said['message']}")
    assert f"agreement = {expected:g}" in said["message"]
    assert status(t.kube, NAMESPACE, V2.name)["stage"] == "Development"

    # The threshold is not something the Job depends on: lowering it runs nothing again.
    creates = _job_creates(t)
    _model(t, agreement, thresholds=[{"metric": "agreement", "min": expected}])
    wait_stage(t.kube, NAMESPACE, V2.name, "Staging", timeout=150)
    assert _job_creates(t) == creates
    assert "agreement" not in (t.kube.get_json("modelversion", V2.name, "-n", NAMESPACE)["spec"].get("metrics") or {})
    _assert_v1_serves(t)
