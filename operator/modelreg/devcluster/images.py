"""The operator image, built here from the repository's Dockerfile, and the
Debian base image it is built on.

Called by the e2e fixtures (`ensure_operator_image`) and by anything that
wants the image in the dev cluster's loopback registry. Our machines reach
package registries only, never an image registry, so the base image is made
here: `debootstrap` of Debian bookworm (minbase plus Python) imported with
buildah. The Dockerfile users build on a public Python image is then built
unchanged with `--build-arg BASE=<that base>`.

Both images are cached in a buildah store under the modelreg cache, tagged by
a content key: the base by its recipe, the operator by the base and every file
of its build context. A warm call finds both tags and only pushes, which takes
seconds; a cold one runs debootstrap (about a minute) and pip (about forty
seconds). A lock file serializes builds, so two test sessions never build the
same image twice at once.

The dev cluster's own code is not imported by the operator and is left out of
the image (the Dockerfile removes it before installing, and it is not part of
the staged context), and the image is built from the package without extras, so
its dependencies (cryptography for the cluster's PKI) stay out of the image.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelreg.devcluster import building, packages

SUITE = "bookworm"
VARIANT = "minbase"
# python3-venv is for the Dockerfile's build stage; ca-certificates for any https
# the operator speaks (S3 endpoints); nothing else of Debian is needed to run it.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# What debootstrap leaves that a container never reads: package caches and
# lists, docs, man pages, translations, logs, and the host's identity.
TRIM = (
    "var/cache/apt/archives",
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/srcpkgcache.bin",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/log",
    "etc/hostname",
    "etc/resolv.conf",
)
# Bump when the recipe changes in a way the lists above do not show.
RECIPE = "1"
NONROOT = "65532:65532"
# Every source change makes a new operator image (~200 MB of its own layer);
# keep a few, so switching between branches does not rebuild each time.
KEEP_OPERATOR_IMAGES = 3
REPO = Path(__file__).resolve().parents[3]
# The build context: the Dockerfile's COPY sources and nothing else.
CONTEXT_FILES = ("Dockerfile", "pyproject.toml", "README.md")
CONTEXT_DIRS = ("operator",)
# Removed by the Dockerfile before it installs the package (the image leaves the
# dev cluster out); left out of the context too, so editing it does not rebuild the image.
CONTEXT_EXCLUDED = (Path("operator/modelreg/devcluster"),)
# The example model server: its Containerfile copies server.py and nothing else.
MODEL_SERVER_DIR = Path("examples") / "model-server"
MODEL_SERVER_FILES = ("Containerfile", "server.py")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TOOLS = ("buildah", "debootstrap", "podman", "skopeo")
Log = building.Log


class ImageError(RuntimeError):
    """An image could not be made, pushed or found."""


@dataclass(frozen=True)
class Store:
    """A containers/storage location used by buildah, podman and skopeo alike.

    Our own, not the machine's default: the cache survives `devcluster down`,
    and nothing another tool keeps in /var/lib/containers is touched.
    """

    path: Path

    def args(self) -> list[str]:
        return ["--storage-driver=overlay", f"--root={self.path / 'root'}", f"--runroot={self.path / 'run'}"]

    def transport(self, reference: str) -> str:
        """The same image named for skopeo, which takes the store in the reference."""
        return f"containers-storage:[overlay@{self.path / 'root'}+{self.path / 'run'}]{reference}"


def images_dir() -> Path:
    return building.cache_root() / "images"


def default_store() -> Store:
    return Store(images_dir() / "store")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def base_key() -> str:
    recipe = {"suite": SUITE, "variant": VARIANT, "packages": BASE_PACKAGES, "trim": TRIM, "recipe": RECIPE}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def base_reference() -> str:
    return f"localhost/modelreg/base:{SUITE}-{base_key()}"


def ensure_base_image(*, store: Store | None = None, log: Log = building.say) -> str:
    """The Debian base image in `store`, made with debootstrap if it is not there."""
    _require_tools(log)
    store = store or default_store()
    reference = base_reference()
    if exists(store, reference):
        return reference
    work = Path(tempfile.mkdtemp(prefix="base-", dir=_scratch_dir()))
    rootfs = work / "rootfs"
    try:
        started = time.monotonic()
        mirror = debian_mirror()
        log(f"[images] debootstrap {VARIANT} {SUITE} + {', '.join(BASE_PACKAGES)} (about a minute)")
        _run(
            ["debootstrap", f"--variant={VARIANT}", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs), mirror]
        )
        log(f"[images]   debootstrap done in {time.monotonic() - started:.0f}s")
        trim_rootfs(rootfs)
        _import_rootfs(store, rootfs, reference)
        log(f"[images] base image {reference} made in {time.monotonic() - started:.0f}s")
    finally:
        _unmount_below(rootfs)  # debootstrap mounts /proc and /sys inside; a failed run may leave them
        shutil.rmtree(work, ignore_errors=True)
    return reference


def trim_rootfs(rootfs: Path) -> None:
    for rel in TRIM:
        target = rootfs / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
            target.mkdir()  # keep the directory: dpkg and apt expect some of them to exist
        elif target.exists() or target.is_symlink():
            target.unlink()
    # An empty resolv.conf for runtimes to bind-mount over; the host's stays out.
    (rootfs / "etc" / "resolv.conf").write_text("")


def ensure_operator_image(
    *,
    registry: str | None = None,
    store: Store | None = None,
    repo: Path = REPO,
    log: Log = building.say,
) -> str:
    """Build (or reuse) the operator image and return its reference.

    With `registry` (host:port of a loopback registry), the base and the operator
    image are pushed there and the returned reference names the operator image
    in that registry, as a Pod spec would; without it, the local one.
    """
    return _ensure_image("operator", stage_context, registry=registry, store=store, repo=repo, log=log)


def ensure_model_server_image(
    *,
    registry: str | None = None,
    store: Store | None = None,
    repo: Path = REPO,
    log: Log = building.say,
) -> str:
    """Build (or reuse) the example model server's image on the same base, and
    return its reference: in `registry` when given (pushed there), else local.
    Its Containerfile has no RUN step, so a cold build takes seconds."""
    return _ensure_image("model-server", stage_model_server_context, registry=registry, store=store, repo=repo,
                         log=log)  # fmt: skip


def _ensure_image(
    name: str,
    stage: Callable[[Path, Path], str],
    *,
    registry: str | None,
    store: Store | None,
    repo: Path,
    log: Log,
) -> str:
    """Build `localhost/modelreg/<name>` on the local base from the context `stage`
    copies (cached by the base and the context's digest), and push it (with its
    base) to `registry` when given."""
    _require_tools(log)
    store = store or default_store()
    with _locked():
        base = ensure_base_image(store=store, log=log)
        with tempfile.TemporaryDirectory(prefix="context-", dir=_scratch_dir()) as tmp:
            context = Path(tmp)
            key = hashlib.sha256(f"{base}\n{stage(repo, context)}".encode()).hexdigest()[:16]
            local = f"localhost/modelreg/{name}:{key}"
            if exists(store, local):
                log(f"[images] {name} image {local} is cached")
            else:
                _build(store, context=context, base=base, tag=local, log=log)
                prune(store, f"localhost/modelreg/{name}", keep=KEEP_OPERATOR_IMAGES)
        if registry is None:
            return local
        started = time.monotonic()
        push(store, base, f"{registry}/modelreg/base:{base.rsplit(':', 1)[1]}")
        remote = f"{registry}/modelreg/{name}:{key}"
        push(store, local, remote)
        log(f"[images] pushed {remote} in {time.monotonic() - started:.1f}s")
        return remote


def stage_model_server_context(repo: Path, dest: Path) -> str:
    """Copy the model server's build context into `dest`; return a digest of it."""
    h = hashlib.sha256()
    for name in MODEL_SERVER_FILES:
        source = repo / MODEL_SERVER_DIR / name
        if not source.is_file():
            raise ImageError(f"no {source}: the model server image is built from a source checkout")
        data = source.read_bytes()
        (dest / name).write_bytes(data)
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def stage_context(repo: Path, dest: Path) -> str:
    """Copy the build context into `dest` and return a digest of its content.

    Only the files the Dockerfile copies, without caches (__pycache__, egg-info),
    so the key changes exactly when what goes into the image changes.
    """
    if not (repo / "Dockerfile").is_file():
        raise ImageError(f"no Dockerfile in {repo}: the image is built from a source checkout")
    files = [repo / f for f in CONTEXT_FILES]
    for d in CONTEXT_DIRS:
        files += sorted(p for p in (repo / d).rglob("*") if p.is_file() and not _ignored(p.relative_to(repo)))
    h = hashlib.sha256()
    for path in files:
        rel = path.relative_to(repo)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        data = path.read_bytes()
        h.update(f"{rel.as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def _ignored(rel: Path) -> bool:
    if any(rel.is_relative_to(excluded) for excluded in CONTEXT_EXCLUDED):
        return True
    return any(part == "__pycache__" or part.endswith(".egg-info") or part.startswith(".") for part in rel.parts)


def prune(store: Store, repository: str, *, keep: int) -> list[str]:
    """Remove all but the `keep` newest images of `repository` from the store;
    return the references removed."""
    out = subprocess.run(["buildah", *store.args(), "images", "--json"], capture_output=True, text=True, check=True)
    ours = [i for i in json.loads(out.stdout or "[]") if any(n.startswith(f"{repository}:") for n in i["names"] or [])]
    ours.sort(key=lambda i: str(i.get("createdatraw", "")), reverse=True)
    removed = []
    for stale in ours[keep:]:
        subprocess.run(["buildah", *store.args(), "rmi", "--force", stale["id"]], capture_output=True)
        removed += stale["names"]
    return removed


def exists(store: Store, reference: str) -> bool:
    out = subprocess.run(
        ["buildah", *store.args(), "inspect", "--type", "image", reference], capture_output=True, text=True
    )
    return out.returncode == 0


def push(store: Store, local: str, remote: str) -> None:
    """Push to a loopback registry: plain http, which is why TLS checks are off."""
    _run(["buildah", *store.args(), "push", "--tls-verify=false", "--quiet", local, f"docker://{remote}"])


def pull(store: Store, remote: str) -> None:
    """Pull from a loopback registry into `store`, as a node would."""
    _run(["podman", *store.args(), "pull", "--tls-verify=false", "--quiet", remote])


def run_argv(
    store: Store,
    reference: str,
    args: Sequence[str],
    *,
    volumes: Sequence[tuple[Path, str]] = (),
    env: dict[str, str] | None = None,
    entrypoint: str | None = None,
) -> list[str]:
    """`podman run` of the image as the operator's Pod runs it: uid 65532, a
    read-only root file system with no writable /tmp either (podman would mount
    tmpfs there; a Pod has only the volumes it names), no capabilities, no new
    privileges; the host's network, for the loopback S3 and API servers."""
    # Our VMs lack CAP_SYS_RESOURCE, and podman asks runc to raise NOFILE and
    # NPROC to their maximum, which runc may not set ("error setting rlimit type
    # 6/7"). Ask for modest limits, never above ours. (NPROC at our own value
    # failed too, 32768 did not: the cap is an observed safe value.)
    limits = []
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        soft, hard = resource.getrlimit(which)
        cap = min(v for v in (soft, hard, 16384) if v != resource.RLIM_INFINITY)
        limits += ["--ulimit", f"{name}={cap}:{cap}"]
    argv = ["podman", *store.args(), "run", "--rm", "--pull=never", "--network=host",
            "--read-only", "--read-only-tmpfs=false", f"--user={NONROOT}",
            "--cap-drop=ALL", "--security-opt=no-new-privileges", *limits]  # fmt: skip
    for host, container in volumes:
        argv += ["--volume", f"{host}:{container}"]
    for key, value in (env or {}).items():
        argv += ["--env", f"{key}={value}"]
    if entrypoint is not None:
        argv += ["--entrypoint", entrypoint]
    return [*argv, reference, *args]


def image_size(store: Store, reference: str) -> int:
    """Bytes of the image's layers as stored (uncompressed)."""
    out = subprocess.run(
        ["podman", *store.args(), "image", "inspect", "--format", "{{.Size}}", reference],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (or MODELREG_DEBIAN_MIRROR)."""
    if env := os.environ.get("MODELREG_DEBIAN_MIRROR"):
        return env
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        with contextlib.suppress(OSError):
            if found := mirror_in(path.read_text(), path.suffix == ".sources"):
                return found
    raise ImageError(f"no Debian mirror for {SUITE} in /etc/apt; set MODELREG_DEBIAN_MIRROR")


def mirror_in(text: str, deb822: bool) -> str | None:
    """The URI that serves `SUITE` main, from a one-line or a deb822 sources file."""
    if not deb822:
        for m in re.finditer(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$", text, re.M):
            if m.group(2) == SUITE and "main" in m.group(3).split():
                return m.group(1)
        return None
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, list[str]] = {
            k.lower(): v.split() for k, v in re.findall(r"^([\w-]+):\s*(.*)$", stanza, re.M)
        }
        serves = "deb" in fields.get("types", []) and SUITE in fields.get("suites", [])
        if serves and "main" in fields.get("components", []) and fields.get("uris"):
            return fields["uris"][0]
    return None


def _build(store: Store, *, context: Path, base: str, tag: str, log: Log) -> None:
    started = time.monotonic()
    log(f"[images] buildah build {tag} on {base} (pip reaches PyPI; about a minute)")
    argv = ["buildah", *store.args(), "build", "--isolation=chroot", "--pull-never", "--layers=false",
            f"--build-arg=BASE={base}", f"--tag={tag}"]  # fmt: skip
    argv += _host_trust(context.parent)
    _run([*argv, str(context)], timeout=1800)
    log(f"[images]   built in {time.monotonic() - started:.0f}s")


def _host_trust(scratch: Path) -> list[str]:
    """Bind mounts for the build's RUN steps only: the host's CA bundle (a proxy
    between us and PyPI may sign with a local CA) and a pip.conf that points
    pip at it and at the host's index, if one is set. Nothing is baked into
    the image; without a host bundle nothing is mounted."""
    if not HOST_CA_BUNDLE.is_file():
        return []
    lines = ["[global]", f"cert = {HOST_CA_BUNDLE}"]
    if index := os.environ.get("PIP_INDEX_URL"):
        lines.append(f"index-url = {index}")
    conf = scratch / "pip.conf"
    conf.write_text("\n".join(lines) + "\n")
    return [f"--volume={HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro", f"--volume={conf}:/etc/pip.conf:ro"]


def _import_rootfs(store: Store, rootfs: Path, reference: str) -> None:
    """`from scratch`, the root file system copied in as one layer, then commit."""
    b = ["buildah", *store.args()]
    container = _run([*b, "from", "--quiet", "scratch"]).strip()
    try:
        mountpoint = _run([*b, "mount", container]).strip()
        # cp -a keeps owners, modes, hard links, special files and xattrs.
        _run(["cp", "-a", "--", f"{rootfs}/.", mountpoint])
        _run([*b, "umount", container])
        _run([*b, "config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "--env", "LANG=C.UTF-8", "--cmd", "python3",
              "--label", f"org.opencontainers.image.description=Debian {SUITE} {VARIANT} + {' '.join(BASE_PACKAGES)}",
              container])  # fmt: skip
        _run([*b, "commit", "--quiet", "--rm", container, reference])
    except BaseException:
        subprocess.run([*b, "rm", container], capture_output=True)
        raise


def _unmount_below(path: Path) -> None:
    with contextlib.suppress(OSError):
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mnt in sorted((m for m in mounts if m.startswith(f"{path}/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", mnt], capture_output=True)


def _scratch_dir() -> Path:
    d = images_dir() / "tmp"
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    images_dir().mkdir(parents=True, exist_ok=True)
    with (images_dir() / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _require_tools(log: Log) -> None:
    """Install the images' Debian packages when a tool is missing (root with apt-get), else say how."""
    if not missing_tools():
        return
    try:
        packages.ensure_packages([packages.IMAGES], log=log)
    except packages.PackagesUnavailable as exc:
        raise ImageError(str(exc)) from exc
    if gone := missing_tools():
        raise ImageError(f"not on PATH although their packages are installed: {', '.join(gone)}")


def _run(cmd: Sequence[str], *, timeout: float = 900) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise ImageError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc.stdout
