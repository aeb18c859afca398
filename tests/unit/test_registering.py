"""`modelreg register`'s pure parts: flags, metrics files, the manifest, the local
digest (which must be the operator's) and the progress bar."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
import yaml

from modelreg import artifacts, registering
from modelreg.api import modelversion as mv
from modelreg.api.common import Stage
from modelreg.registering import RegisterError, Request


def test_metrics_are_numbers() -> None:
    assert registering.parse_metrics(["accuracy=0.93", " f1 = 1 "]) == {"accuracy": 0.93, "f1": 1.0}
    with pytest.raises(RegisterError, match="accuracy=high"):
        registering.parse_metrics(["accuracy=high"])
    with pytest.raises(RegisterError, match="name=value"):
        registering.parse_metrics(["accuracy"])


def test_lineage_flags_set_fields_and_other_keys_become_labels() -> None:
    lineage = registering.parse_lineage(["runId=r-7", "git_commit=abc1234", "dataset=s3://d/x", "team=vision"])
    assert lineage == {"runId": "r-7", "gitCommit": "abc1234", "dataset": "s3://d/x", "labels": {"team": "vision"}}


def test_a_metrics_file_holds_metrics_and_lineage_or_only_metrics(tmp_path: Path) -> None:
    nested = tmp_path / "eval.json"
    nested.write_text(json.dumps({"metrics": {"accuracy": 0.9}, "lineage": {"experiment": "e1"}}))
    assert registering.load_metrics_file(nested) == ({"accuracy": 0.9}, {"experiment": "e1"})
    flat = tmp_path / "eval.yaml"
    flat.write_text("accuracy: 0.8\nlatency_ms: 12\n")
    assert registering.load_metrics_file(flat) == ({"accuracy": 0.8, "latency_ms": 12.0}, {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("accuracy: high\nok: true\n")
    with pytest.raises(RegisterError, match="accuracy, ok are not numbers"):
        registering.load_metrics_file(bad)


def test_flags_win_over_the_metrics_file(tmp_path: Path) -> None:
    f = tmp_path / "eval.yaml"
    f.write_text("metrics: {accuracy: 0.8, f1: 0.7}\nlineage: {experiment: e1, runId: r1, labels: {team: a}}\n")
    request = registering.request_from_flags(
        path=tmp_path, model="m", version="1", uri="s3://bucket/m/1", name=None, stage="Staging",
        metric=["accuracy=0.9"], metrics_file=f, lineage=["runId=r2", "owner=b"], description="", artifact_format=None,
    )  # fmt: skip
    assert request.metrics == {"accuracy": 0.9, "f1": 0.7}
    assert request.lineage == {"experiment": "e1", "runId": "r2", "labels": {"team": "a", "owner": "b"}}
    assert request.stage is Stage.STAGING


def test_the_manifest_is_a_valid_model_version() -> None:
    request = Request(path=Path("model.onnx"), model="fraud", version="1.4.0", uri="s3://models/fraud/1.4.0.onnx",
                      metrics={"accuracy": 0.93}, lineage={"runId": "r-7", "labels": {"team": "risk"}},
                      artifact_format="onnx")  # fmt: skip
    manifest = registering.build_manifest(request, uri=request.uri, sha256="a" * 64)
    assert manifest["apiVersion"] == "modelreg.dev/v1alpha1"
    assert manifest["kind"] == "ModelVersion"
    assert manifest["metadata"] == {"name": "fraud-1-4-0"}
    assert manifest["spec"] == {
        "model": "fraud",
        "version": "1.4.0",
        "artifact": {"uri": "s3://models/fraud/1.4.0.onnx", "sha256": "a" * 64, "format": "onnx"},
        "metrics": {"accuracy": 0.93},
        "lineage": {"runId": "r-7", "labels": {"team": "risk"}},
        "stage": "Development",
    }
    # What it prints parses back into the API type the CRD is generated from.
    printed = yaml.safe_load(registering.to_yaml(manifest))
    assert mv.ModelVersionSpec.model_validate(printed["spec"]).artifact.sha256 == "a" * 64


def test_an_invalid_manifest_is_refused_before_anything_is_printed() -> None:
    request = Request(path=Path("m"), model="Not_A_Name", version="1", uri="s3://models/m")
    with pytest.raises(RegisterError, match="would be invalid"):
        registering.build_manifest(request, uri=request.uri, sha256="a" * 64)


@pytest.mark.parametrize(
    ("uri", "is_dir", "expected"),
    [
        ("s3://b/m/1/model.onnx", False, "s3://b/m/1/model.onnx"),
        ("s3://b/m/1/", False, "s3://b/m/1/model.onnx"),
        ("s3://b/m/1", True, "s3://b/m/1/"),
        ("s3://b/m/1/", True, "s3://b/m/1/"),
    ],
)
def test_where_the_artifact_lands(uri: str, is_dir: bool, expected: str) -> None:
    assert registering.artifact_uri(uri, Path("model.onnx"), is_dir=is_dir) == expected


def test_a_local_file_digest_is_its_sha256(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10_000  # several read chunks
    f = tmp_path / "model.bin"
    f.write_bytes(data)
    assert artifacts.local_digest(f) == hashlib.sha256(data).hexdigest()


def test_a_local_directory_digest_is_the_operators_prefix_digest(tmp_path: Path) -> None:
    files = {"model.onnx": b"weights", "config/tokenizer.json": b"{}", "b.txt": b"\x00" * 3_000_000}
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    digest = artifacts.local_digest(tmp_path)
    # The operator's function for a prefix's contents...
    assert digest == artifacts.manifest_digest(files)
    # ...and, independently, `sha256sum` lines sorted by path, hashed.
    lines = "".join(f"{hashlib.sha256(files[r]).hexdigest()}  {r}\n" for r in sorted(files))
    assert digest == hashlib.sha256(lines.encode()).hexdigest()


def test_a_directory_is_planned_file_by_file_under_the_prefix(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"a")
    (tmp_path / "sub" / "b.bin").write_bytes(b"b")
    uploads, digest = registering.plan_uploads(tmp_path, "s3://bucket/m/1/")
    assert [str(u.location) for u in uploads] == ["s3://bucket/m/1/a.bin", "s3://bucket/m/1/sub/b.bin"]
    assert [u.sha256 for u in uploads] == [hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()]
    assert digest == artifacts.local_digest(tmp_path)


def test_a_file_needs_an_object_key_and_a_directory_needs_files(tmp_path: Path) -> None:
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(RegisterError, match="needs an object key"):
        registering.plan_uploads(f, "s3://bucket/m/1/")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegisterError, match="holds no files"):
        registering.plan_uploads(tmp_path / "empty", "s3://bucket/m/1/")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_progress_bar_in_a_pipe() -> None:
    pipe = io.StringIO()  # isatty() is False, as for a pipe or a file
    bar = registering.Progress(100, "model.bin", stream=pipe)
    bar(50)
    bar(50)
    bar.close()
    assert pipe.getvalue() == ""


def test_a_progress_bar_on_a_terminal() -> None:
    tty = _Terminal()
    bar = registering.Progress(100, "model.bin", stream=tty)
    bar(50)
    assert tty.getvalue().endswith(" 50%")
    bar(0)  # no change: no redraw
    assert tty.getvalue().count("\r") == 1
    bar(50)
    bar.close()
    assert tty.getvalue().rstrip("\n").endswith("100%")
    assert "model.bin [" in tty.getvalue()
