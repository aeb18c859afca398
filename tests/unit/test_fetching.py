"""`modelreg fetch-artifact` leaves its failure where the kubelet reads a
terminated container's message (no store needed: the URI is refused first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelreg import cli, fetching


def test_a_failure_is_written_to_the_termination_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "termination-log"
    log.touch()  # the kubelet creates it; the container only writes it
    code = fetching.main(uri="http://not-s3/x", sha256="0" * 64, dest=tmp_path / "artifact", termination_log=log)
    assert code == fetching.EXIT_FAILED
    line = capsys.readouterr().err.strip()
    assert line == "fetch-artifact: InvalidArtifact: 'http://not-s3/x' is not an s3:// URI"
    assert log.read_text() == line
    assert not (tmp_path / "artifact").exists()


def test_the_message_is_one_line_of_at_most_1_kib(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    log.touch()
    fetching.write_termination_message("é" * 2000, log)  # two bytes each: the cut must not split one
    assert log.read_text() == "é" * 512
    uri = "http://x/" + "a\nb " * 500
    fetching.main(uri=uri, sha256="0" * 64, dest=tmp_path / "artifact", termination_log=log)
    written = log.read_bytes()
    assert len(written) == fetching.MAX_TERMINATION_MESSAGE
    assert b"\n" not in written


def test_no_termination_log_outside_a_pod(tmp_path: Path) -> None:
    missing = tmp_path / "dev" / "termination-log"
    code = fetching.main(uri="http://not-s3/x", sha256="0" * 64, dest=tmp_path / "artifact", termination_log=missing)
    assert code == fetching.EXIT_FAILED
    assert not missing.exists()


def test_the_cli_passes_the_termination_log_and_documents_the_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "termination-log"
    log.touch()
    argv = ["fetch-artifact", "--uri", "gs://b/k", "--sha256", "sha256:" + "0" * 64, "--dest", str(tmp_path / "a"),
            "--termination-log", str(log)]  # fmt: skip
    assert cli.main(argv) == fetching.EXIT_FAILED
    assert "is not an s3:// URI" in log.read_text()
    with pytest.raises(SystemExit):
        cli.main(["fetch-artifact", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    for code, meaning in [(fetching.EXIT_FAILED, "other failure"), (fetching.EXIT_NOT_FOUND, "not found"),
                          (fetching.EXIT_CHECKSUM_MISMATCH, "checksum mismatch"),
                          (fetching.EXIT_STORAGE_UNAVAILABLE, "storage unavailable"),
                          (fetching.EXIT_ACCESS_DENIED, "access denied")]:  # fmt: skip
        assert f"{code} {meaning}" in usage
    assert "/dev/termination-log" in usage
