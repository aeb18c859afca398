"""`modelreg register`: put a trained model in the store and write its ModelVersion.

Called by the CLI. Uploads a local file or directory to S3 with the store's
SHA-256 checksum, computes the digest exactly as the operator's verification
does (`artifacts.local_digest`), and prints a ModelVersion manifest to commit
to Git, or applies it. An object already in the store with the same SHA-256 is
not uploaded again, so registering the same content twice uploads nothing.

Messages for the person go to stderr; stdout holds only the manifest, so
`modelreg register ... > version.yaml` works.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from modelreg import artifacts
from modelreg.api import API_VERSION
from modelreg.api import modelversion as mv
from modelreg.api.common import Stage
from modelreg.facts import ArtifactReason

DEFAULT_MULTIPART_THRESHOLD = 64 * 1024 * 1024
LINEAGE_FIELDS = {"experiment": "experiment", "runId": "runId", "run_id": "runId", "gitCommit": "gitCommit",
                  "git_commit": "gitCommit", "dataset": "dataset"}  # fmt: skip
"""--lineage keys, by the spec field they set; any other key becomes a label."""


class RegisterError(Exception):
    """Something the person can fix: a bad flag, a bad file, a refused upload."""


@dataclass(frozen=True)
class Request:
    """What to register, from the command line."""

    path: Path
    model: str
    version: str
    uri: str
    name: str | None = None
    stage: Stage = Stage.DEVELOPMENT
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    artifact_format: str | None = None


@dataclass(frozen=True)
class Upload:
    """One local file and where it goes."""

    path: Path
    location: artifacts.S3Location
    sha256: str


# --- pure: flags, files and the manifest ---------------------------------------------------


def parse_metrics(pairs: Sequence[str]) -> dict[str, float]:
    """`name=value` pairs to metrics; a value must be a number."""
    metrics = {}
    for key, value in _pairs(pairs, "--metric"):
        try:
            metrics[key] = float(value)
        except ValueError:
            raise RegisterError(f"--metric {key}={value}: the value must be a number") from None
    return metrics


def parse_lineage(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs to spec.lineage: experiment, runId, gitCommit, dataset; others are labels."""
    lineage: dict[str, Any] = {}
    for key, value in _pairs(pairs, "--lineage"):
        if key in LINEAGE_FIELDS:
            lineage[LINEAGE_FIELDS[key]] = value
        else:
            lineage.setdefault("labels", {})[key.removeprefix("labels.")] = value
    return lineage


def _pairs(pairs: Sequence[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RegisterError(f"{flag} {pair!r}: expected name=value")
        out.append((key.strip(), value.strip()))
    return out


def load_metrics_file(path: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics and lineage from a JSON or YAML file: either {"metrics": {...}, "lineage": {...}},
    or a flat mapping of metric names to numbers (what most training scripts write)."""
    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML
    except (OSError, yaml.YAMLError) as exc:
        raise RegisterError(f"--metrics-file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise RegisterError(f"--metrics-file {path}: expected a mapping, got {type(data).__name__}")
    if "metrics" in data or "lineage" in data:
        metrics, lineage = data.get("metrics") or {}, data.get("lineage") or {}
    else:
        metrics, lineage = data, {}
    if not isinstance(metrics, dict) or not isinstance(lineage, dict):
        raise RegisterError(f"--metrics-file {path}: metrics and lineage must be mappings")
    bad = [k for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, int | float)]
    if bad:
        raise RegisterError(f"--metrics-file {path}: metrics {', '.join(map(str, bad))} are not numbers")
    return {str(k): float(v) for k, v in metrics.items()}, lineage


def artifact_uri(uri: str, path: Path, *, is_dir: bool) -> str:
    """Where `path` lands: a directory always under a prefix (a trailing slash added);
    a file at `uri`, or under it, by its own name, when `uri` ends with a slash."""
    if is_dir:
        return uri if uri.endswith("/") else uri + "/"
    return uri + path.name if uri.endswith("/") else uri


def default_name(model: str, version: str) -> str:
    """`<model>-<version>`, made a valid object name (dots and pluses become hyphens)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{model}-{version}".lower()).strip("-")[:253]


def build_manifest(request: Request, *, uri: str, sha256: str) -> dict[str, Any]:
    """The ModelVersion, validated by the API types the CRDs are generated from."""
    spec = {
        "model": request.model,
        "version": request.version,
        "stage": request.stage.value,
        "artifact": {"uri": uri, "sha256": sha256, **({"format": request.artifact_format}
                                                       if request.artifact_format else {})},
        "metrics": request.metrics,
        "lineage": request.lineage,
        **({"description": request.description} if request.description else {}),
    }  # fmt: skip
    try:
        validated = mv.ModelVersionSpec.model_validate(spec)
    except ValidationError as exc:
        raise RegisterError(f"the ModelVersion would be invalid:\n{exc}") from exc
    return {
        "apiVersion": API_VERSION,
        "kind": mv.KIND,
        "metadata": {"name": request.name or default_name(request.model, request.version)},
        "spec": validated.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        | {"stage": validated.stage.value},  # explicit in Git, though Development is the default
    }


def to_yaml(manifest: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(manifest), sort_keys=False)


def plan_uploads(path: Path, uri: str) -> tuple[list[Upload], str]:
    """The files to upload and the digest the operator will compute for `uri`."""
    location = artifacts.parse_uri(uri)
    if path.is_dir():
        files = artifacts.local_files(path)
        if not files:
            raise RegisterError(f"{path} holds no files")
        uploads = [
            Upload(p, artifacts.S3Location(location.bucket, location.key + rel), artifacts.file_sha256(p))
            for rel, p in files.items()
        ]
        return uploads, artifacts.local_digest(path)
    if not path.is_file():
        raise RegisterError(f"{path} is neither a file nor a directory")
    if location.is_prefix:
        raise RegisterError(f"{uri} ends with '/': a file needs an object key")
    digest = artifacts.local_digest(path)
    return [Upload(path, location, digest)], digest


# --- progress ------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr, for a terminal only: in a pipe or a log
    file a bar is noise, so there it prints nothing."""

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.total = max(total, 1)
        self.label = label
        self.done = 0
        # s3transfer calls back from its worker threads, several parts at once.
        self._lock = threading.Lock()
        self._shown = -1

    def __call__(self, n: int) -> None:
        with self._lock:
            self.done += n
            if not self.enabled:
                return
            width = 30
            filled = width * min(self.done, self.total) // self.total
            percent = 100 * min(self.done, self.total) // self.total
            if percent == self._shown:  # s3transfer calls back every 256 KiB: redraw only on change
                return
            self._shown = percent
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {percent:3d}%")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


# --- the command ---------------------------------------------------------------------------


def register(
    client: artifacts.S3Client,
    request: Request,
    *,
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
    overwrite: bool = False,
    say: Callable[[str], None],
    progress_stream: TextIO | None = None,
) -> dict[str, Any]:
    """Upload what is missing and return the manifest."""
    path = request.path
    uri = artifact_uri(request.uri, path, is_dir=path.is_dir())
    uploads, digest = plan_uploads(path, uri)
    manifest = build_manifest(request, uri=uri, sha256=digest)  # an invalid version uploads nothing
    location = artifacts.parse_uri(uri)
    if location.is_prefix:
        extra = sorted(set(artifacts.keys_under(client, location)) - set(artifacts.local_files(path)))
        if extra:
            # The operator hashes everything under the prefix: these would change the digest.
            raise RegisterError(
                f"{uri} already holds objects that are not in {path} ({', '.join(extra[:5])}"
                f"{', ...' if len(extra) > 5 else ''}): register under a fresh prefix"
            )
    todo = [up for up in uploads if _needs_upload(client, up, overwrite=overwrite, say=say)]  # all checked first
    for up in todo:
        bar = Progress(up.path.stat().st_size, up.path.name, stream=progress_stream)
        try:
            artifacts.upload_file(client, up.path, up.location, sha256=up.sha256,
                                  multipart_threshold=multipart_threshold, progress=bar)  # fmt: skip
        finally:
            bar.close()
        say(f"uploaded {up.path} to {up.location}")
    say(f"{len(todo)} of {len(uploads)} files uploaded; digest sha256:{digest}")
    return manifest


def _needs_upload(client: artifacts.S3Client, up: Upload, *, overwrite: bool, say: Callable[[str], None]) -> bool:
    stored = artifacts.stored_object(client, up.location)
    if stored is None:
        return True
    if stored.sha256 == up.sha256:
        say(f"{up.location} is already stored with SHA-256 {up.sha256[:12]}…: not uploaded")
        return False
    if not overwrite:
        # Another version's verified artifact may live there: replacing it would fail that version.
        what = f"different content (SHA-256 {stored.sha256[:12]}…)" if stored.sha256 else "an object of unknown SHA-256"
        raise RegisterError(f"{up.location} already holds {what}: register under a new key, or pass --overwrite")
    return True


def run(
    request: Request,
    *,
    endpoint: str | None,
    region: str | None,
    multipart_threshold: int,
    overwrite: bool,
    apply: bool,
    namespace: str,
    kubeconfig: str | None,
) -> int:
    """The command: 0 when the manifest was printed (and applied), 1 otherwise."""

    def say(message: str) -> None:
        print(message, file=sys.stderr)

    try:
        client = artifacts.new_s3_client(endpoint=endpoint, region=region)
        manifest = register(client, request, multipart_threshold=multipart_threshold, overwrite=overwrite, say=say)
    except artifacts.ArtifactError as exc:
        # The store's messages speak to the operator's admin; a person at a shell sets the environment.
        hint = " (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)" if exc.reason is \
            ArtifactReason.STORAGE_MISCONFIGURED else ""  # fmt: skip
        say(f"modelreg register: {exc}{hint}")
        return 1
    except RegisterError as exc:
        say(f"modelreg register: {exc}")
        return 1
    if apply:
        from modelreg import kube

        try:
            kube.apply_version(kube.new_client(kubeconfig), namespace, manifest)
        except kube.Refused as exc:
            say(f"modelreg register: the API server refused {manifest['metadata']['name']}: {exc}")
            return 1
        say(f"applied modelversion/{manifest['metadata']['name']} in namespace {namespace}")
    sys.stdout.write(to_yaml(manifest))
    return 0


def request_from_flags(
    *,
    path: Path,
    model: str,
    version: str,
    uri: str,
    name: str | None,
    stage: str,
    metric: Sequence[str],
    metrics_file: Path | None,
    lineage: Sequence[str],
    description: str,
    artifact_format: str | None,
) -> Request:
    """Flags over the metrics file: a flag names what this run decided."""
    metrics, lineage_ = load_metrics_file(metrics_file) if metrics_file else ({}, {})
    flag_lineage = parse_lineage(lineage)
    labels = {**lineage_.get("labels", {}), **flag_lineage.pop("labels", {})}
    merged_lineage = {**lineage_, **flag_lineage, **({"labels": labels} if labels else {})}
    return Request(path=path, model=model, version=version, uri=uri, name=name, stage=Stage(stage),
                   metrics={**metrics, **parse_metrics(metric)}, lineage=merged_lineage,
                   description=description, artifact_format=artifact_format)  # fmt: skip
