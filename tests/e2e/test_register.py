"""`modelreg register` as a person runs it (a subprocess, credentials in the
environment) against the real S3 server, and the operator verifying what it
printed: the printed sha256 must be the one the operator computes, and a second
run must upload nothing."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from modelreg import artifacts
from tests.e2e.conftest import REPO, S3, Cluster, Operator
from tests.e2e.registry import BUCKET, apply, model_manifest, status, wait_condition

MiB = 1024 * 1024


def _register(s3: S3, *args: str, kube: Cluster | None = None) -> subprocess.CompletedProcess[str]:
    env = os.environ | s3.env() | {"PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}"}
    if kube is not None:
        env["KUBECONFIG"] = kube.kubeconfig
    # stderr is a pipe here, as in CI: no progress bar may reach it.
    return subprocess.run([sys.executable, "-m", "modelreg", "register", *args],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip


def _ok(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr, "a progress bar went to a pipe"
    assert "%" not in out.stderr, "a progress bar went to a pipe"
    manifest: dict[str, Any] = yaml.safe_load(out.stdout)
    return manifest


def _prefix() -> str:
    return f"s3://{BUCKET}/registered/{uuid.uuid4().hex}"


def _last_modified(s3: S3, uri: str) -> Any:
    location = artifacts.parse_uri(uri)
    return s3.client().head_object(Bucket=location.bucket, Key=location.key)["LastModified"]


def _apply_and_verify(kube: Cluster, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    apply(kube, namespace, model_manifest(manifest["spec"]["model"]))
    apply(kube, namespace, yaml.safe_dump(manifest))
    name = manifest["metadata"]["name"]
    return wait_condition(kube, namespace, name, "ArtifactVerified", status_="True", reason="Verified")


def test_a_registered_file_verifies_and_registering_it_again_uploads_nothing(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    artifacts.ensure_bucket(s3.client(), BUCKET)
    model = tmp_path / "model.onnx"
    data = f"weights {uuid.uuid4()}".encode()
    model.write_bytes(data)
    metrics = tmp_path / "eval.json"
    metrics.write_text('{"metrics": {"accuracy": 0.91}, "lineage": {"experiment": "e1"}}')
    prefix = _prefix()
    args = [str(model), "--model", "fraud", "--version", "1.0", "--uri", prefix + "/",
            "--metrics-file", str(metrics), "--metric", "f1=0.8", "--lineage", "runId=r-1"]  # fmt: skip

    first = _register(s3, *args)
    manifest = _ok(first)
    uri = f"{prefix}/model.onnx"
    assert manifest["metadata"]["name"] == "fraud-1-0"
    assert manifest["spec"]["artifact"] == {"uri": uri, "sha256": hashlib.sha256(data).hexdigest()}
    assert manifest["spec"]["metrics"] == {"accuracy": 0.91, "f1": 0.8}
    assert manifest["spec"]["lineage"] == {"experiment": "e1", "runId": "r-1"}
    assert "1 of 1 files uploaded" in first.stderr
    stored_at = _last_modified(s3, uri)

    st = _apply_and_verify(kube, namespace, manifest)
    assert st["artifact"]["digest"] == f"sha256:{manifest['spec']['artifact']['sha256']}"
    assert st["artifact"]["checksumSource"] == "Store"  # the store kept the SHA-256: no download

    second = _register(s3, *args)
    assert _ok(second) == manifest
    assert "0 of 1 files uploaded" in second.stderr
    assert "not uploaded" in second.stderr
    assert _last_modified(s3, uri) == stored_at

    # Other content at the same key would replace a verified artifact: refused, nothing written.
    model.write_bytes(b"retrained weights")
    third = _register(s3, *args)
    assert third.returncode == 1
    assert "already holds different content" in third.stderr
    assert "--overwrite" in third.stderr
    assert third.stdout == ""
    assert _last_modified(s3, uri) == stored_at


def test_a_registered_directory_verifies_as_a_prefix_and_again_uploads_nothing(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    artifacts.ensure_bucket(s3.client(), BUCKET)
    root = tmp_path / "model"
    (root / "tokenizer").mkdir(parents=True)
    (root / "weights.safetensors").write_bytes(os.urandom(100_000))
    (root / "config.json").write_text('{"layers": 2}')
    (root / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    prefix = _prefix()
    args = [str(root), "--model", "chat", "--version", "2", "--uri", prefix, "--metric", "accuracy=0.9"]

    first = _register(s3, *args)
    manifest = _ok(first)
    assert manifest["spec"]["artifact"] == {"uri": prefix + "/", "sha256": artifacts.local_digest(root)}
    assert "3 of 3 files uploaded" in first.stderr

    st = _apply_and_verify(kube, namespace, manifest)
    assert st["artifact"]["digest"] == f"sha256:{manifest['spec']['artifact']['sha256']}"
    assert st["artifact"]["files"] == 3

    stored_at = _last_modified(s3, f"{prefix}/weights.safetensors")
    second = _register(s3, *args)
    assert _ok(second) == manifest
    assert "0 of 3 files uploaded" in second.stderr
    assert _last_modified(s3, f"{prefix}/weights.safetensors") == stored_at


def test_a_prefix_holding_other_objects_is_refused(s3: S3, tmp_path: Path) -> None:
    """The operator hashes everything under a prefix: a stray object would make the printed digest wrong."""
    client = s3.client()
    artifacts.ensure_bucket(client, BUCKET)
    prefix = _prefix()
    client.put_object(Bucket=BUCKET, Key=prefix.removeprefix(f"s3://{BUCKET}/") + "/old.bin", Body=b"old")
    (tmp_path / "new.bin").write_bytes(b"new")
    out = _register(s3, str(tmp_path), "--model", "m", "--version", "1", "--uri", prefix)
    assert out.returncode == 1
    assert "old.bin" in out.stderr
    assert "fresh prefix" in out.stderr
    assert out.stdout == ""
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix.removeprefix(f"s3://{BUCKET}/"))
    assert [o["Key"].rsplit("/", 1)[-1] for o in listed["Contents"]] == ["old.bin"]  # nothing uploaded


def test_a_big_file_goes_multipart_and_still_verifies(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    artifacts.ensure_bucket(s3.client(), BUCKET)
    model = tmp_path / "big.bin"
    model.write_bytes(os.urandom(20 * MiB))
    uri = f"{_prefix()}/big.bin"
    args = [str(model), "--model", "big", "--version", "1", "--uri", uri, "--multipart-threshold", str(8 * MiB)]

    manifest = _ok(_register(s3, *args))
    assert manifest["spec"]["artifact"]["sha256"] == artifacts.file_sha256(model)
    location = artifacts.parse_uri(uri)
    head = s3.client().head_object(Bucket=location.bucket, Key=location.key)
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # three 8 MiB parts: multipart

    st = _apply_and_verify(kube, namespace, manifest)
    assert st["artifact"]["digest"] == f"sha256:{manifest['spec']['artifact']['sha256']}"
    assert st["artifact"]["size"] == 20 * MiB

    second = _register(s3, *args)
    assert _ok(second) == manifest
    assert "0 of 1 files uploaded" in second.stderr
    assert s3.client().head_object(Bucket=location.bucket, Key=location.key)["LastModified"] == head["LastModified"]


def test_apply_creates_the_model_version(
    kube: Cluster, s3: S3, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    artifacts.ensure_bucket(s3.client(), BUCKET)
    model = tmp_path / "model.bin"
    model.write_bytes(f"weights {uuid.uuid4()}".encode())
    apply(kube, namespace, model_manifest("fraud"))
    out = _register(s3, str(model), "--model", "fraud", "--version", "7", "--uri", f"{_prefix()}/model.bin",
                    "--name", "fraud-seven", "--apply", "--namespace", namespace, kube=kube)  # fmt: skip
    manifest = _ok(out)
    assert f"applied modelversion/fraud-seven in namespace {namespace}" in out.stderr
    obj = kube.get_json("-n", namespace, "modelversion/fraud-seven")
    assert obj["spec"]["artifact"] == manifest["spec"]["artifact"]
    assert obj["spec"]["version"] == "7"
    wait_condition(kube, namespace, "fraud-seven", "ArtifactVerified", status_="True", reason="Verified")
    assert status(kube, namespace, "fraud-seven")["artifact"]["digest"] == f"sha256:{artifacts.file_sha256(model)}"

    # The API server's refusal reaches the person: an artifact is immutable.
    model.write_bytes(b"other weights")
    again = _register(s3, str(model), "--model", "fraud", "--version", "7", "--uri", f"{_prefix()}/model.bin",
                      "--name", "fraud-seven", "--apply", "--namespace", namespace, kube=kube)  # fmt: skip
    assert again.returncode == 1
    assert "refused fraud-seven" in again.stderr
    assert "immutable" in again.stderr
    assert kube.get_json("-n", namespace, "modelversion/fraud-seven")["spec"]["artifact"] == obj["spec"]["artifact"]


def test_nothing_is_uploaded_when_any_part_is_refused(s3: S3, tmp_path: Path) -> None:
    """Every check runs before the first upload: a refusal leaves no half-registered directory behind."""
    client = s3.client()
    artifacts.ensure_bucket(client, BUCKET)
    (tmp_path / "a.bin").write_bytes(b"a")
    (tmp_path / "b.bin").write_bytes(b"b")
    prefix = _prefix()
    key = prefix.removeprefix(f"s3://{BUCKET}/")
    client.put_object(Bucket=BUCKET, Key=f"{key}/b.bin", Body=b"older b", ChecksumAlgorithm="SHA256")

    out = _register(s3, str(tmp_path), "--model", "m", "--version", "1", "--uri", prefix)
    assert out.returncode == 1
    assert f"{prefix}/b.bin already holds different content" in out.stderr
    assert [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=key)["Contents"]] == [f"{key}/b.bin"]

    invalid = _register(s3, str(tmp_path), "--model", "Not_A_Name", "--version", "1", "--uri", _prefix())
    assert invalid.returncode == 1
    assert "would be invalid" in invalid.stderr
    assert "uploaded" not in invalid.stderr
