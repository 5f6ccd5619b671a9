"""`rsbench corpus inspect`: the summary tables and the quicklook grids of kept/rejected tiles."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.corpus import CorpusBuildConfig, build_corpus

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, rasters_dir):
    out = tmp_path_factory.mktemp("corpus") / "c"
    info = build_corpus(CorpusBuildConfig(inputs=[str(rasters_dir)], out=str(out), tile_size=64, workers=1))
    return out, info


def test_inspect_prints_tables_and_writes_quicklooks(corpus, tmp_path):
    out, info = corpus
    res = runner.invoke(
        app, ["corpus", "inspect", str(out), "--out", str(tmp_path / "ql"), "--per-grid", "9"], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    text = res.stderr
    for raster in info["rasters"]:
        assert raster["path"].rsplit("/", 1)[1] in text
    for reason in info["counts"]["rejected"]:
        assert f"{reason}" in text
    assert (
        "rededge1" in text
        and "p99" in text
        and f"{info['counts']['tiles_kept']} of {info['counts']['tiles_total']}" in text
    )
    reasons = [r for r, n in info["counts"]["rejected"].items() if n]
    assert len(reasons) >= 4  # nodata, saturated, cloud, blank on the real rasters
    pngs = {p.name for p in (tmp_path / "ql").iterdir()}
    assert pngs == {"kept.png", *(f"rejected_{r}.png" for r in reasons)}
    for name in pngs:
        img = np.asarray(Image.open(tmp_path / "ql" / name).convert("RGB"))
        assert img.shape[0] > 200 and img.shape[1] > 200 and img.std() > 10  # a grid of images, not blank


def test_inspect_rejects_a_non_corpus(tmp_path):
    res = runner.invoke(app, ["corpus", "inspect", str(tmp_path)])
    assert res.exit_code == 1 and "not an rsbench corpus" in res.stderr
