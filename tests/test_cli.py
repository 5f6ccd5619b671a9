"""The command line: --help everywhere, one-line errors naming the file or key, non-zero exits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rsbench.cli import app

runner = CliRunner()

COMMANDS = [[], ["corpus"], ["corpus", "build"], ["pretrain"], ["evaluate"], ["report"], ["quickstart"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "rsbench")
def test_help_everywhere(cmd):
    result = runner.invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and "--help" in result.output


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {result.stderr!r}"
    assert lines[0].startswith("error: ")
    return lines[0]


def test_missing_image_folder(tmp_path):
    result = runner.invoke(app, ["pretrain", "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert str(tmp_path / "nowhere") in _error_line(result)


def test_bad_config_key_names_the_key(tmp_path, eurosat_small):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"images: {eurosat_small}\nout: {tmp_path / 'r'}\nbatch_sise: 8\n")
    result = runner.invoke(app, ["pretrain", "--config", str(cfg)])
    assert result.exit_code == 1
    line = _error_line(result)
    assert "batch_sise" in line and "unknown key" in line
    assert not (tmp_path / "r").exists(), "no work may start before the config is valid"


def test_wrong_type_names_the_key(tmp_path, eurosat_small):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"images: {eurosat_small}\nout: {tmp_path / 'r'}\nepochs: many\n")
    result = runner.invoke(app, ["pretrain", "--config", str(cfg)])
    assert result.exit_code == 1 and "'epochs'" in _error_line(result)


def test_corrupt_image_named(tmp_path):
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "a" / "tile.tif").write_bytes(b"II*\x00garbage")
    result = runner.invoke(app, ["pretrain", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "tile.tif" in _error_line(result)


def test_installed_entry_point_exits_non_zero(tmp_path):
    exe = Path(sys.executable).parent / "rsbench"
    proc = subprocess.run(
        [str(exe), "evaluate", "--data", str(tmp_path / "missing"), "--init", "random"], capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "missing" in proc.stderr and "Traceback" not in proc.stderr


def test_out_that_is_a_file_is_a_one_line_error(tmp_path, eurosat_small, rasters_dir):
    """An --out that is a file: one `error:` line naming it, for every stage that writes (no traceback)."""
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    cases = [
        ["evaluate", "--data", str(eurosat_small), "--init", "random", "--protocol", "knn", "--out", str(blocker)],
        ["corpus", "build", str(next(rasters_dir.glob("spacenet6*.tif"))), "--tile-size", "64", "--out", str(blocker)],
        ["pretrain", "--images", str(eurosat_small), "--max-steps", "1", "--out", str(blocker / "run")],
    ]
    for args in cases:
        res = runner.invoke(app, args)
        lines = res.stderr.strip().splitlines()
        assert res.exit_code == 1 and len(lines) == 1, (args[0], res.output[-2000:])
        assert lines[0].startswith("error: ") and str(blocker) in lines[0], lines[0]
    assert blocker.read_text() == "a file, not a folder"
