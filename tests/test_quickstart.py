"""The offline quickstart, shrunk: every stage runs end to end and the report holds both inits."""

from __future__ import annotations

import json

from rsbench.quickstart import QuickstartSettings, run_quickstart


def test_quickstart_pipeline_end_to_end(tmp_path):
    settings = QuickstartSettings(scenes=2, scene_size=128, chips_per_class=12, epochs=1, batch_size=16, seeds=(0,))
    report = run_quickstart(tmp_path, settings, log=lambda _: None)
    html = report.read_text()
    assert report == tmp_path / "report.html"
    assert "simclr-resnet18" in html and "random-resnet18" in html and "data:image/png;base64," in html

    corpus = json.loads((tmp_path / "corpus" / "corpus.json").read_text())
    assert corpus["counts"]["rejected"].get("nodata", 0) > 0, "the generated nodata collar must be filtered"
    meta = json.loads((tmp_path / "runs" / "simclr" / "backbone.json").read_text())
    assert meta["in_chans"] == 4 and meta["data"]["kind"] == "corpus"
    rows = [json.loads(line) for line in (tmp_path / "results" / "results.jsonl").read_text().splitlines()]
    assert {(r["init_kind"], r["protocol"], r["metric"]) for r in rows} == {
        (kind, protocol, metric)
        for kind in ("run", "random")
        for protocol in ("knn", "linear")
        for metric in ("accuracy", "f1_macro")
    } | {(kind, "linear", "ece") for kind in ("run", "random")}
    # A second run finds every stage done and produces the same results without retraining.
    mtime = (tmp_path / "runs" / "simclr" / "backbone.pt").stat().st_mtime_ns
    run_quickstart(tmp_path, settings, log=lambda _: None)
    assert (tmp_path / "runs" / "simclr" / "backbone.pt").stat().st_mtime_ns == mtime
