"""The `modelreg` command: run the operator, generate CRDs, drive the dev cluster.

Each subcommand is a thin wrapper; the work lives in the module it names.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from modelreg.api.common import Stage


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelreg", description="Kubernetes-native ML model registry")
    sub = p.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="run the operator")
    run.add_argument("--namespace", "-n", help="watch one namespace (default: all)")
    run.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then in-cluster)")
    run.add_argument("--liveness", help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz")
    run.add_argument("--resync-seconds", type=float, default=60.0, help="re-check every model this often")
    run.add_argument("--metrics-bind-address", default=os.environ.get("MODELREG_METRICS_BIND_ADDRESS", "0"),
                     metavar="HOST:PORT", help="serve Prometheus metrics here, e.g. 0.0.0.0:8081 (the manifests' "
                                               "choice); 0 or empty: none (default)")  # fmt: skip
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=os.environ.get("MODELREG_LOG_LEVEL", "info"),
        help="the operator's own lines (debug adds each watch event and each reconcile's step "
        "timings; Kopf's and the libraries' stay at info)",
    )
    run.add_argument("--log-format", choices=["text", "json"], default=os.environ.get("MODELREG_LOG_FORMAT", "text"),
                     help="text (default) or json: one JSON object a line")  # fmt: skip
    ha = run.add_argument_group("high availability (several replicas; see the README)")
    ha.add_argument(
        "--leader-elect",
        action="store_true",
        default=os.environ.get("MODELREG_LEADER_ELECT", "").lower() == "true",
        help="reconcile only while holding a coordination.k8s.io Lease (also MODELREG_LEADER_ELECT=true)",
    )
    ha.add_argument(
        "--leader-election-namespace",
        metavar="NAMESPACE",
        help="the Lease's namespace (default: the operator Pod's own)",
    )
    ha.add_argument("--leader-election-id", default="modelreg-operator", metavar="NAME", help="the Lease's name")
    store = run.add_argument_group("artifact storage and verification")
    store.add_argument("--storage-endpoint", action="append", metavar="URL", default=[],
                       help="an S3 endpoint models may name in spec.storage.endpoint (repeat; also "
                            "MODELREG_STORAGE_ENDPOINTS, comma-separated); none: any https endpoint")  # fmt: skip
    store.add_argument("--allow-insecure-storage", action="store_true",
                       default=os.environ.get("MODELREG_ALLOW_INSECURE_STORAGE", "").lower() == "true",
                       help="allow plain http storage endpoints (trusted networks, tests)")  # fmt: skip
    store.add_argument("--recheck-seconds", type=float, default=300.0,
                       help="re-check the artifact of a deployed (Staging, Production) version about this "
                            "often (one HEAD when unchanged)")  # fmt: skip
    store.add_argument("--recheck-undeployed-seconds", type=float, default=3600.0,
                       help="… and that of a version not deployed (a promotion verifies it again anyway)")  # fmt: skip
    store.add_argument("--verify-workers", type=int, default=2, help="artifact checks running at once")
    store.add_argument("--verify-max-bytes", type=int, default=64 * 1024**3,
                       help="download at most this much to hash an artifact the store has no SHA-256 for")  # fmt: skip
    store.add_argument("--verify-timeout-seconds", type=float, default=1800.0,
                       help="give up hashing one artifact after this long")  # fmt: skip
    run.set_defaults(func=_run)

    stage = sub.add_parser("stage", help="request a stage for a version (Production archives the other requests)")
    stage.add_argument("version", help="ModelVersion object name")
    stage.add_argument("stage", choices=[s.value for s in Stage])
    stage.add_argument("--namespace", "-n", default="default")
    stage.add_argument("--kubeconfig")
    stage.set_defaults(func=_stage)

    fetch = sub.add_parser(
        "fetch-artifact",
        help="download and verify an artifact (serving init container)",
        description="Download an artifact and verify its SHA-256 before it lands at --dest. On failure the "
        "error line also goes to --termination-log, which the Pod's status then quotes.",
        epilog="exit codes: 0 verified, 1 other failure, 3 not found, 4 checksum mismatch (nothing written), "
        "5 storage unavailable, 6 access denied",
    )
    fetch.add_argument("--uri", required=True, help="s3://bucket/key, or s3://bucket/prefix/")
    fetch.add_argument("--sha256", required=True, help="expected digest, 64 hex digits")
    fetch.add_argument("--dest", required=True, type=Path, help="where the file or directory lands")
    fetch.add_argument("--termination-log", type=Path, default=Path("/dev/termination-log"),
                       help="where a failure's one-line message goes, when that file exists (default: %(default)s, "
                            "the Pod's terminationMessagePath)")  # fmt: skip
    fetch.set_defaults(func=_fetch_artifact)

    reg = sub.add_parser(
        "register",
        help="upload a model file or directory to S3 and print its ModelVersion",
        description="Upload PATH with the store's SHA-256 checksum (nothing already stored with the same SHA-256 "
        "is uploaded again), then print a ModelVersion manifest to commit to Git, or apply it with --apply. "
        "S3 credentials come from the environment (AWS_*), as for any boto3 program.",
    )
    reg.add_argument("path", type=Path, help="the model file, or a directory (uploaded under a prefix)")
    reg.add_argument("--model", required=True, help="the RegisteredModel's name")
    reg.add_argument("--version", required=True, help="the version string, e.g. 3 or 1.4.0")
    reg.add_argument("--uri", required=True,
                     help="s3://bucket/key for a file (a trailing / appends the file's name), s3://bucket/prefix "
                          "for a directory")  # fmt: skip
    reg.add_argument("--name", help="the ModelVersion's name (default: MODEL-VERSION)")
    reg.add_argument("--stage", default=Stage.DEVELOPMENT.value, choices=[s.value for s in Stage])
    reg.add_argument("--metric", action="append", default=[], metavar="NAME=VALUE", help="a metric (repeat)")
    reg.add_argument("--metrics-file", type=Path, metavar="FILE",
                     help="JSON or YAML: {metrics: {...}, lineage: {...}}, or flat metrics; flags win")  # fmt: skip
    reg.add_argument("--lineage", action="append", default=[], metavar="KEY=VALUE",
                     help="experiment, runId, gitCommit, dataset; any other key is a label (repeat)")  # fmt: skip
    reg.add_argument("--description", default="", help="what changed in this version")
    reg.add_argument("--format", dest="artifact_format", help="serialization format, e.g. onnx (informational)")
    reg.add_argument("--endpoint", help="S3 endpoint URL (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, AWS)")
    reg.add_argument("--region", help="S3 region (default: $AWS_REGION, $AWS_DEFAULT_REGION)")
    reg.add_argument("--multipart-threshold", type=int, metavar="BYTES",
                     default=int(os.environ.get("MODELREG_MULTIPART_THRESHOLD", 64 * 1024 * 1024)),
                     help="upload files larger than this in parts (default: 64 MiB; below it the store keeps a "
                          "full-object SHA-256 and verification needs no download)")  # fmt: skip
    reg.add_argument("--overwrite", action="store_true",
                     help="replace objects that hold different content (default: refuse, since another version's "
                          "artifact may live there)")  # fmt: skip
    reg.add_argument("--apply", action="store_true", help="also apply the ModelVersion (server-side apply)")
    reg.add_argument("--namespace", "-n", default="default", help="where --apply creates it")
    reg.add_argument("--kubeconfig", help="for --apply (default: $KUBECONFIG, then in-cluster)")
    reg.set_defaults(func=_register)

    gen = sub.add_parser("generate-crds", help="write crds/*.yaml from the API types")
    gen.add_argument("--out", type=Path, default=Path("crds"))
    gen.set_defaults(func=_generate_crds)

    dev = sub.add_parser("devcluster", help="the local control plane (etcd, kube-*, kwok) and S3 server")
    dev.add_argument("--dir", type=Path, help="state directory (default: ~/.cache/modelreg/devcluster)")
    dev_sub = dev.add_subparsers(metavar="ACTION", required=True)
    for name, help_ in [
        ("build", "build or reuse the cached binaries"),
        ("up", "start the cluster in the background"),
        ("down", "stop everything the cluster started and delete its data"),
        ("status", "show what runs"),
        ("env", 'print shell exports: eval "$(modelreg devcluster env)"'),
        ("image", "build (or reuse) the operator image, push it to the cluster's registry, print its name"),
        ("packages", "install the missing Debian packages of GROUP (default: all) with apt-get, as root"),
    ]:
        action = dev_sub.add_parser(name, help=help_)
        action.set_defaults(func=_devcluster, action=name)
        if name == "up":
            action.add_argument(
                "--real-node",
                action="store_true",
                help="also run a real node (kubelet, containerd, CNI bridge) next to kwok's; needs root on Debian",
            )
        if name == "packages":
            # Checked by the command: the groups live in devcluster.packages, which
            # loads only when a devcluster command runs.
            action.add_argument("groups", nargs="*", metavar="GROUP", help="real-node, images")

    demo = sub.add_parser("demo", help="cluster + S3 + CRDs + operator + examples, then show them")
    demo.add_argument("--examples", type=Path, default=Path("examples"))
    demo.add_argument("--namespace", default="modelreg-demo")
    demo.set_defaults(func=_demo)
    return p


def _run(args: argparse.Namespace) -> int:
    from modelreg import leading
    from modelreg.metrics import parse_bind_address
    from modelreg.running import run_operator
    from modelreg.verifying import Settings

    listed = os.environ.get("MODELREG_STORAGE_ENDPOINTS", "")
    endpoints = [*args.storage_endpoint, *(e.strip() for e in listed.split(",") if e.strip())]
    verify = Settings(
        recheck_seconds=args.recheck_seconds,
        recheck_undeployed_seconds=args.recheck_undeployed_seconds,
        workers=args.verify_workers,
        max_bytes=args.verify_max_bytes,
        max_seconds=args.verify_timeout_seconds,
        allow_insecure=args.allow_insecure_storage,
        endpoints=tuple(endpoints),
    )
    election = None
    if args.leader_elect:
        lease_namespace = args.leader_election_namespace or leading.pod_namespace()
        if lease_namespace is None:
            print("modelreg run: --leader-elect outside a Pod needs --leader-election-namespace", file=sys.stderr)
            return 2
        election = leading.Settings(namespace=lease_namespace, name=args.leader_election_id)
    run_operator(
        namespace=args.namespace,
        kubeconfig=args.kubeconfig,
        liveness=args.liveness,
        resync=args.resync_seconds,
        verify=verify,
        metrics_bind=parse_bind_address(args.metrics_bind_address),
        log_format=args.log_format,
        log_level=args.log_level,
        election=election,
    )
    return 0


def _stage(args: argparse.Namespace) -> int:
    from modelreg import staging

    return staging.run(namespace=args.namespace, name=args.version, stage=Stage(args.stage), kubeconfig=args.kubeconfig)


def _fetch_artifact(args: argparse.Namespace) -> int:
    from modelreg.fetching import main as fetch_main

    return fetch_main(uri=args.uri, sha256=args.sha256.removeprefix("sha256:"), dest=args.dest,
                      termination_log=args.termination_log)  # fmt: skip


def _register(args: argparse.Namespace) -> int:
    from modelreg import registering

    try:
        request = registering.request_from_flags(
            path=args.path, model=args.model, version=args.version, uri=args.uri, name=args.name, stage=args.stage,
            metric=args.metric, metrics_file=args.metrics_file, lineage=args.lineage,
            description=args.description, artifact_format=args.artifact_format,
        )  # fmt: skip
    except registering.RegisterError as exc:
        print(f"modelreg register: {exc}", file=sys.stderr)
        return 2
    return registering.run(request, endpoint=args.endpoint, region=args.region,
                           multipart_threshold=args.multipart_threshold, overwrite=args.overwrite, apply=args.apply,
                           namespace=args.namespace, kubeconfig=args.kubeconfig)  # fmt: skip


def _generate_crds(args: argparse.Namespace) -> int:
    from modelreg.api.crds import write_crds

    for path in write_crds(args.out):
        print(f"wrote {path}")
    return 0


def _devcluster(args: argparse.Namespace) -> int:
    try:
        from modelreg.devcluster import commands
    except ModuleNotFoundError as exc:
        return _no_devcluster(exc)

    return commands.dispatch(
        args.action, directory=args.dir, real_node=getattr(args, "real_node", False), groups=getattr(args, "groups", ())
    )


def _demo(args: argparse.Namespace) -> int:
    try:
        from modelreg.devcluster import demo
    except ModuleNotFoundError as exc:
        return _no_devcluster(exc)

    return demo.run_demo(examples=args.examples, namespace=args.namespace)


def _no_devcluster(exc: ModuleNotFoundError) -> int:
    """One line instead of a traceback where the dev cluster is not installed:
    the operator image leaves it out (see the Dockerfile), and a plain
    `pip install .` lacks its extra."""
    if (exc.name or "").startswith("modelreg.devcluster"):
        print("modelreg: the dev cluster is not part of this installation (the operator image leaves it out); "
              "use a source checkout: make setup", file=sys.stderr)  # fmt: skip
    else:
        print(f"modelreg: the dev cluster needs {exc.name}: pip install -e '.[devcluster]'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
