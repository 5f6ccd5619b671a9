"""README.md stays true: its "your own archive" walkthrough runs as written, and its benchmark figures are
those of the JSONs in benchmarks/results/.

The walkthrough block (between `<!-- walkthrough:begin -->` and `<!-- walkthrough:end -->`) is run with
bash, unchanged, in an empty folder; only the variables the README documents for it are set: `DATA` (the
shared data), `EUROSAT` (a 50-image sample of it, so the test is quick), `STEPS` (2) and `PROTOCOLS` (knn).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def walkthrough_script() -> str:
    text = README.read_text()
    block = re.search(r"<!-- walkthrough:begin -->\s*```bash\n(.*?)```\s*<!-- walkthrough:end -->", text, re.S)
    assert block, "README.md has no walkthrough block"
    return block.group(1)


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path, shared_data, eurosat_tiny):
    script = walkthrough_script()
    assert "--bands red,green,blue" in script and "--init random" in script
    env = {
        **os.environ,
        "DATA": str(shared_data),
        "EUROSAT": str(eurosat_tiny),
        "STEPS": "2",
        "PROTOCOLS": "knn",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500
    )
    output = " ".join((done.stdout + done.stderr).split())  # rich wraps lines
    assert done.returncode == 0, output[-3000:]

    corpus = json.loads((tmp_path / "corpus" / "corpus.json").read_text())
    assert [s["path"].endswith("sentinel2_l1c_T18SVG_20160112_20m_6band.tif") for s in corpus["skipped"]] == [True]
    assert sorted(corpus["band_groups"]) == ["red,green,blue|float64", "red,green,blue|uint16", "red,green,blue|uint8"]
    assert "warning: band group red,green,blue (uint8) pools 2 sensors" in output
    rgb = corpus["band_groups"]["red,green,blue|uint8"]
    ignored = corpus["counts"]["tiles_kept"] - rgb["tiles"]
    # The pretraining run says what it trains on: group, tiles used and left out, the pooled sensors.
    assert f"data: corpus corpus, band group red,green,blue (uint8): {rgb['tiles']} tiles used, {ignored} ignored" in (
        output
    )
    assert "2 sensors pooled" in output

    rows = [json.loads(line) for line in (tmp_path / "results" / "results.jsonl").read_text().splitlines()]
    assert {r["init"] for r in rows} == {"simclr-resnet18 (simclr)", "random-resnet18"}
    assert {r["image_size"] for r in rows} == {32} and not any(r["mixed_inputs"] for r in rows)
    html = (tmp_path / "report.html").read_text()
    assert "Pretraining data" in html and "tiles used (band group red,green,blue (uint8))" in html
    assert f"{rgb['tiles']:,}" in html and f"{ignored:,}" in html


def test_readme_benchmark_figures_match_the_json():
    spec = importlib.util.spec_from_file_location("readme_figures", REPO / "benchmarks" / "readme_figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    stale = figures.stale_blocks(README.read_text())
    assert stale == {}, "README figures are stale: run benchmarks/readme_figures.py --write"
    # The check can fail: a changed figure is found.
    text = README.read_text().replace("| `ssl_speed.py` |", "| `ssl_speed.py` | 1 |", 1)
    assert "benchmarks" in figures.stale_blocks(text)
