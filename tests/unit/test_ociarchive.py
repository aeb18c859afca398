"""The OCI archives the real node's images are made of: self-consistent, so `ctr images import` takes them."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from modelreg.devcluster import ociarchive


def _read(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _blob(files: dict[str, bytes], digest: str) -> bytes:
    return files["blobs/sha256/" + digest.removeprefix("sha256:")]


def test_every_blob_is_named_by_its_digest_and_the_layer_holds_the_files(tmp_path: Path) -> None:
    program = tmp_path / "prog"
    program.write_bytes(b"\x7fELF not really")
    image = ociarchive.Image(
        name="localhost/modelreg/t:1", files={"bin/prog": program}, symlinks={"bin/alias": "prog"}, cmd=["/bin/prog"]
    )

    files = _read(ociarchive.write_oci_archive(image, tmp_path / "t.tar"))

    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, blob in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(blob).hexdigest() == name.rsplit("/", 1)[1]
    [entry] = json.loads(files["index.json"])["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/modelreg/t:1"
    manifest = json.loads(_blob(files, entry["digest"]))
    config = json.loads(_blob(files, manifest["config"]["digest"]))
    [layer_ref] = manifest["layers"]
    layer = _blob(files, layer_ref["digest"])
    assert layer_ref["size"] == len(layer)
    # An uncompressed layer: its digest is also its diff_id.
    assert config["rootfs"]["diff_ids"] == [layer_ref["digest"]]
    assert config["config"]["Cmd"] == ["/bin/prog"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["bin"].isdir()
        assert members["bin/prog"].mode == 0o755
        assert tar.extractfile("bin/prog").read() == program.read_bytes()  # type: ignore[union-attr]
        assert members["bin/alias"].issym()
        assert members["bin/alias"].linkname == "prog"
