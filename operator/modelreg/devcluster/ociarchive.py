"""OCI image archives made without a container tool, for the real node: the pause
image and small test images. No registry is reachable, so they are made locally.

Called by `devcluster.node` (the pause image every Pod sandbox runs) and by the
e2e tests (images for their Pods). An image is written as an OCI image-layout
tar with one uncompressed layer, which `ctr images import` reads as is; nothing
here needs a container tool or root.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelreg.devcluster import building

PAUSE_IMAGE = "localhost/modelreg/pause:1"

# The sandbox's only process: it holds the Pod's namespaces until it is told to
# stop, and reaps orphans in case the Pod shares its PID namespace.
_PAUSE_SOURCE = """\
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
"""


@dataclass
class Image:
    """What goes into an image: files by their path in it, symlinks, and the process config."""

    name: str
    files: dict[str, Path] = field(default_factory=dict)  # path in the image -> file on the host
    symlinks: dict[str, str] = field(default_factory=dict)  # path in the image -> link target
    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=lambda: {"PATH": "/bin"})


def write_oci_archive(image: Image, dest: Path) -> Path:
    """Write `image` as an OCI image-layout tar named by the `io.containerd.image.name` annotation."""
    layer = _layer(image)
    diff_id = _digest(layer)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {
            "Entrypoint": list(image.entrypoint) or None,
            "Cmd": list(image.cmd) or None,
            "Env": [f"{k}={v}" for k, v in image.env.items()],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_blob = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _descriptor("application/vnd.oci.image.config.v1+json", config_blob),
        "layers": [_descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
    }
    manifest_blob = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            _descriptor("application/vnd.oci.image.manifest.v1+json", manifest_blob)
            | {
                "platform": {"architecture": arch, "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": image.name,
                    "org.opencontainers.image.ref.name": image.name.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(tar, "index.json", json.dumps(index).encode())
        for blob in (layer, config_blob, manifest_blob):
            _add(tar, "blobs/sha256/" + _digest(blob).removeprefix("sha256:"), blob)
    os.replace(tmp, dest)
    return dest


def import_image(archive: Path, *, address: Path) -> None:
    """Load an image archive into the containerd at `address`, where the CRI (the kubelet) sees it."""
    proc = subprocess.run(
        ["ctr", f"--address={address}", "--namespace=k8s.io", "images", "import", str(archive)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ctr images import {archive} failed: {proc.stderr.strip()}")


def pause_archive(*, log: building.Log = building.say) -> Path:
    """The pause image, built once into the cache (keyed by its source) and reused."""
    key = hashlib.sha256(_PAUSE_SOURCE.encode()).hexdigest()[:12]
    folder = building.cache_root() / f"pause-{key}"
    archive = folder / "pause.tar"
    if archive.exists():
        return archive
    log("[build] compiling the pause program (static Go)")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        Path(work, "go.mod").write_text("module modelreg.dev/pause\n\ngo 1.22\n")
        Path(work, "main.go").write_text(_PAUSE_SOURCE)
        env = dict(os.environ) | {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
        proc = subprocess.run(
            ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(folder / "pause"), "."],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"building the pause program failed: {proc.stderr.strip()}")
    image = Image(name=PAUSE_IMAGE, files={"pause": folder / "pause"}, entrypoint=["/pause"], env={})
    return write_oci_archive(image, archive)


def _layer(image: Image) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = [*image.files, *image.symlinks]
        for directory in sorted({str(p) for f in paths for p in Path(f.lstrip("/")).parents if str(p) != "."}):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for inside, source in sorted(image.files.items()):
            info = tarfile.TarInfo(inside.lstrip("/"))
            info.size, info.mode = source.stat().st_size, 0o755
            with source.open("rb") as f:
                tar.addfile(info, f)
        for inside, target in sorted(image.symlinks.items()):
            info = tarfile.TarInfo(inside.lstrip("/"))
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def _descriptor(media_type: str, blob: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": _digest(blob), "size": len(blob)}


def busybox(name: str, *, busybox_path: Path = Path("/bin/busybox")) -> Image:
    """A shell-and-tools image from the static busybox (Debian's busybox-static), every applet linked in /bin."""
    applets = subprocess.run([str(busybox_path), "--list"], capture_output=True, text=True, check=True).stdout.split()
    return Image(
        name=name,
        files={"bin/busybox": busybox_path},
        symlinks={f"bin/{a}": "busybox" for a in applets if a != "busybox"},
        cmd=["/bin/sh"],
    )
