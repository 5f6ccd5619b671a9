"""Leaderboard interop: a GEO-Bench-2 submission that passes the leaderboard's rules (checked here with
pandas, the way the leaderboard's utils/input_validation.py reads a submission), and a torchgeo-bench CSV
that round-trips into external rows."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from rsbench.contracts import make_row
from rsbench.errors import ConfigError, DataError
from rsbench.interop import geobench2, headline_rows
from rsbench.interop.torchgeo_bench import COLUMNS, export_rows, read_external, write_csv

CLASSIFICATION = ("so2sat", "forestnet", "benv2", "treesatai")


def _rows(datasets=CLASSIFICATION, inits=("random", "run-a"), seeds=range(5), protocol="finetune"):
    rows = []
    for d in datasets:
        for i, init in enumerate(inits):
            for s in seeds:
                common = dict(
                    task="classification",
                    dataset=d,
                    protocol=protocol,
                    init=init,
                    init_kind="random" if init == "random" else "run",
                    label_fraction=1.0,
                    seed=s,
                    n_train=100,
                    n_test=50,
                    num_classes=10,
                    feature_dim=512,
                    image_size=64,
                    hparams={"lr": 1e-3, "batch_size": 64, "weight_decay": 0.05, "C": 0.5},
                )
                value = 0.5 + 0.1 * i + 0.01 * s
                rows.append(make_row(metric="accuracy", value=value, headline=True, **common))
                rows.append(make_row(metric="f1", value=value - 0.1, headline=False, **common))
    return rows


def _leaderboard_rules(folder) -> list[str]:
    """The leaderboard's rules, read as it reads a submission (pandas dtypes, groupby counts)."""
    problems = []
    table = pd.read_csv(folder / geobench2.CSV_FILE)
    for c in geobench2.STRING_COLUMNS:
        # The leaderboard's pandas (< 3) reads text as object; pandas >= 3 as its str dtype.
        if not (pd.api.types.is_object_dtype(table[c]) or pd.api.types.is_string_dtype(table[c])):
            problems.append(c)
    for c in geobench2.INTEGER_COLUMNS + geobench2.FLOAT_COLUMNS:
        if not pd.api.types.is_numeric_dtype(table[c]):
            problems.append(c)
    counts = set(table.groupby(["backbone", "dataset"]).count()["test metric"].tolist())
    if counts != {geobench2.REQUIRED_SEEDS}:
        problems.append("entries")
    if set(table.groupby(["backbone", "dataset"]).nunique()["Seed"].tolist()) != {geobench2.REQUIRED_SEEDS}:
        problems.append("seeds")
    if not set(table["frozen_or_full_ft"]) <= {"frozen", "full_ft"}:
        problems.append("frozen_or_full_ft")
    if not any(set(d) <= set(table["dataset"]) for d in geobench2.DIMENSIONS.values()):
        problems.append("dimension")
    info = json.loads((folder / geobench2.JSON_FILE).read_text())
    problems += [k for k, kind in geobench2.JSON_KEYS.items() if not isinstance(info.get(k), kind)]
    return problems


def test_geobench2_submission_passes_the_leaderboard_rules(tmp_path):
    rows = geobench2.submission_rows(_rows(), "rsbench-test")
    folder = geobench2.write_submission(tmp_path / "sub", rows, geobench2.additional_info(rows))
    assert sorted(p.name for p in folder.iterdir()) == sorted([geobench2.CSV_FILE, geobench2.JSON_FILE])
    table = pd.read_csv(folder / geobench2.CSV_FILE)
    assert list(table.columns) == list(geobench2.COLUMNS)
    assert len(table) == 4 * 2 * 5 and set(table["Metric"]) == {"Overall_Accuracy"}  # headline only
    assert set(table["frozen_or_full_ft"]) == {"full_ft"} and set(table["partition name"]) == {"100%"}
    assert table.loc[(table.backbone == "run-a") & (table.Seed == 3), "test metric"].tolist() == [0.63] * 4
    assert _leaderboard_rules(folder) == []
    assert geobench2.check_submission(folder) == []


@pytest.mark.parametrize(
    ("rows", "rule"),
    [
        (_rows(seeds=range(3)), "entries"),
        (_rows(datasets=("so2sat", "forestnet", "eurosat")), "dimension"),
    ],
)
def test_geobench2_check_finds_what_the_leaderboard_rejects(tmp_path, rows, rule):
    out = geobench2.submission_rows(rows, "x")
    folder = geobench2.write_submission(tmp_path / "sub", out, geobench2.additional_info(out))
    assert rule in _leaderboard_rules(folder)  # the reference rejects it ...
    assert geobench2.check_submission(folder)  # ... and so does rsbench's check, before submitting
    (folder / "extra.txt").write_text("x")
    assert "must hold exactly" in geobench2.check_submission(folder)[0]


def test_geobench2_needs_one_protocol_per_dataset():
    rows = _rows() + _rows(protocol="linear")
    with pytest.raises(ConfigError, match="several protocols"):
        geobench2.submission_rows(rows, "x")
    picked = geobench2.submission_rows(rows, "x", protocol="linear")
    assert {r["frozen_or_full_ft"] for r in picked} == {"frozen"} and {r["decoder"] for r in picked} == {"linear"}
    with pytest.raises(ConfigError, match="no result rows with protocol 'knn'"):
        geobench2.submission_rows(rows, "x", protocol="knn")


def test_headline_rows_fall_back_to_the_task_default():
    rows = [{**r, "headline": False} for r in _rows(datasets=("a",), inits=("random",), seeds=[0])]
    (row,) = headline_rows(rows)
    assert row["metric"] == "accuracy"


def test_torchgeo_bench_export_round_trips_as_external_rows(tmp_path):
    rows = _rows(datasets=("m-eurosat",), protocol="linear")
    exported = export_rows(rows)
    path = write_csv(tmp_path / "rsbench.csv", exported)
    table = pd.read_csv(path)
    assert list(table.columns) == list(COLUMNS)
    assert set(table["method"]) == {"linear"} and set(table["best_c"]) == {0.5}
    back = read_external(path)
    assert len(back) == len(exported) == 10 and all(r["external"] for r in back)
    key = lambda r: (r["dataset"], r["method"], r["name"], r["seed"])  # noqa: E731
    original = {key(r): r["metric_value"] for r in exported}
    assert {key(r): r["value"] for r in back} == original


def test_external_rows_from_torchgeo_bench_documentation_sample(tmp_path):
    """The sample rows of torchgeo-bench's results-format page read as external rows."""
    path = tmp_path / "published.csv"
    path.write_text(
        ",".join(COLUMNS) + "\n"
        "m-eurosat,knn5,accuracy,0.8234,0.8123,0.8345,512,,21600,5400,5400,0,torchgeo_bench.models.RCFBench,rcf,"
        "bandspec_zscore,224,bilinear,default,rgb,10\n"
        "burn_scars,seg-fpn,mIoU,0.6234,0.0,0.0,768,,1000,200,300,0,torchgeo_bench.models.TimmPatchBenchModel,"
        "resnet50,bandspec_zscore,224,bilinear,default,rgb,3\n"
    )
    rows = read_external(path)
    assert [(r["dataset"], r["method"], r["metric"], r["value"], r["name"]) for r in rows] == [
        ("m-eurosat", "knn5", "accuracy", 0.8234, "rcf"),
        ("burn_scars", "seg-fpn", "mIoU", 0.6234, "resnet50"),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("dataset,value\nx,1\n")
    with pytest.raises(DataError, match="lack torchgeo-bench columns: method"):
        read_external(bad)


def test_cli_exports_leaderboard_formats_and_report_shows_external_rows(tmp_path):
    from typer.testing import CliRunner

    from rsbench.cli import app
    from rsbench.io import write_jsonl

    runner = CliRunner()
    rows = _rows(protocol="linear")
    results = write_jsonl(tmp_path / "results.jsonl", rows)
    db = tmp_path / "store.db"
    assert runner.invoke(app, ["benchmark", "import", str(results), "--db", str(db)]).exit_code == 0

    res = runner.invoke(
        app, ["benchmark", "export", "--db", str(db), "--format", "geobench2", "--out", str(tmp_path / "gb2")]
    )
    assert res.exit_code == 0, res.output
    assert geobench2.check_submission(tmp_path / "gb2") == [] and "would reject" not in res.output
    subset = tmp_path / "subset.jsonl"
    write_jsonl(subset, [r for r in rows if r["seed"] < 3])
    db2 = tmp_path / "store2.db"
    runner.invoke(app, ["benchmark", "import", str(subset), "--db", str(db2)])
    res = runner.invoke(
        app, ["benchmark", "export", "--db", str(db2), "--format", "geobench2", "--out", str(tmp_path / "g3")]
    )
    assert res.exit_code == 0 and "the leaderboard would reject this: every backbone/dataset needs 5 rows" in res.output

    csv_path = tmp_path / "tgb.csv"
    res = runner.invoke(
        app, ["benchmark", "export", "--db", str(db), "--format", "torchgeo-bench", "--out", str(csv_path)]
    )
    assert res.exit_code == 0, res.output
    assert len(read_external(csv_path)) == 4 * 2 * 5

    out = tmp_path / "report.html"
    res = runner.invoke(
        app, ["report", str(results), "--external", str(csv_path), "--out", str(out), "--bootstrap", "200"]
    )
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert 'id="external"' in html and "not part of rsbench&#39;s statistics" in html.replace("'", "&#39;")
    summary = json.loads(out.with_name("report.summary.json").read_text())
    assert "tgb" not in json.dumps(summary)  # external rows never enter the statistics
