"""The reviewer's cases of the "trustworthy answers" issue, each through `rsbench report` on results.jsonl
files that follow the documented schema (older rows without per-example outputs included)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.contracts.predictions import write_predictions
from rsbench.report.uncertainty import holm, iqm, mcnemar


def row(init, dataset, seed, value, kind=None, **extra):
    return {
        "task": "classification",
        "dataset": dataset,
        "protocol": "knn",
        "init": init,
        "init_kind": kind,
        "backbone": "resnet18",
        "label_fraction": 1.0,
        "seed": seed,
        "metric": "accuracy",
        "value": value,
        **extra,
    }


def report(tmp_path, rows, *args):
    res_dir = tmp_path / "res"
    res_dir.mkdir(exist_ok=True)
    (res_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "report.html"
    res = CliRunner().invoke(app, ["report", str(res_dir), "--out", str(out), "--bootstrap", "500", *args])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "report.summary.json").read_text())
    return out.read_text(), summary


def test_task_where_random_wins_stays_in_every_aggregate(tmp_path):
    rows = []
    for seed in range(3):
        rows += [
            row("random-resnet18", "easy", seed, 0.60, "random"),
            row("ssl", "easy", seed, 0.90),
            row("imagenet-resnet18", "easy", seed, 0.80, "imagenet"),
            row("random-resnet18", "hard", seed, 0.70, "random"),
            row("ssl", "hard", seed, 0.50),
            row("imagenet-resnet18", "hard", seed, 0.65, "imagenet"),
        ]
    html, summary = report(tmp_path, rows)
    ssl = next(i for i in summary["inits"] if i["init"] == "ssl")
    assert ssl["n_tasks"] == 2 and sorted(ssl["tasks"]) == ["easy · knn", "hard · knn"]
    # easy: (0.9-0.6)/0.4 = 75; hard: (0.5-0.7)/0.3 = -66.7 -> mean 4.17, not 100 from "easy" alone.
    assert ssl["score"] == pytest.approx((75 - 200 / 3) / 2, abs=1e-6)
    hard = next(t for t in summary["tasks"] if t["dataset"] == "hard")
    assert any("nothing beats random-resnet18" in f for f in hard["flags"])
    assert "hard · knn" in html.split('id="heatmap"')[1].split("</section>")[0]


def test_score_scale_is_bounded_and_independent_of_other_inits(tmp_path):
    rows = [row("random-resnet18", "t", 0, 0.800, "random"), row("a", "t", 0, 0.801), row("b", "t", 0, 0.780)]
    _, summary = report(tmp_path, rows)
    scores = {i["init"]: i["score"] for i in summary["inits"]}
    assert scores["b"] == pytest.approx(-10.0)  # (0.78 - 0.80) / (1 - 0.80) * 100, not -952.5
    assert scores["a"] == pytest.approx(0.5)
    _, without_a = report(tmp_path, [r for r in rows if r["init"] != "a"])
    assert {i["init"]: i["score"] for i in without_a["inits"]}["b"] == pytest.approx(scores["b"])


def test_fixed_test_split_gets_test_set_error_not_zero_width(tmp_path):
    # kNN on a fixed 2,700-image test set: every seed gives the same value; ssl is +0.1 point over ImageNet.
    n = 2700
    rows = []
    for seed in range(3):
        rows += [
            row("imagenet-resnet18", "eurosat", seed, 0.900, "imagenet", n_test=n, test_split_id="fixed"),
            row("ssl", "eurosat", seed, 0.901, n_test=n, test_split_id="fixed"),
            row("random-resnet18", "eurosat", seed, 0.5, "random", n_test=n, test_split_id="fixed"),
        ]
    html, summary = report(tmp_path, rows)
    [d] = [p for p in summary["paired"] if p["init"] == "ssl"]
    assert d["reference"] == "imagenet-resnet18"
    lo, hi = d["delta_points_ci"]
    assert lo < 0 < hi  # not a zero-width interval at +0.1
    assert d["p_holm"] > 0.05 and "no significant difference" in d["verdict"]
    ssl = next(i for i in summary["inits"] if i["init"] == "ssl")
    assert ssl["ci"][1] - ssl["ci"][0] > 1.0  # binomial SE ~0.58 points -> several normalized points wide
    task = summary["tasks"][0]
    assert any("identical values" in f for f in task["flags"])
    assert any("analytic binomial" in f for f in task["flags"])
    assert "P(Δ &gt; 0)" not in html


def test_nan_metric_is_kept_shown_and_left_out(tmp_path):
    rows = [
        row("random-resnet18", "t", 0, 0.5, "random"),
        row("ssl", "t", 0, 0.7),
        row("ssl", "t", 1, math.nan),
        row("random-resnet18", "t", 1, 0.5, "random"),
    ]
    html, summary = report(tmp_path, rows)
    assert any("NaN" in w for w in summary["warnings"])
    ssl = next(i for i in summary["inits"] if i["init"] == "ssl")
    assert ssl["score"] == pytest.approx(40.0)  # seed 0 only


def test_one_init_at_two_image_sizes_is_two_results(tmp_path):
    rows = []
    for size, value in ((32, 0.6), (64, 0.7)):
        rows += [
            row("ssl", "t", 0, value, image_size=size),
            row("random-resnet18", "t", 0, 0.5, "random", image_size=size),
        ]
    _, summary = report(tmp_path, rows)
    inits = {i["init"] for i in summary["inits"]}
    assert {"ssl (32 px)", "ssl (64 px)"} <= inits


def test_per_example_outputs_give_paired_intervals_and_mcnemar(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 4, n)
    preds = {
        "imagenet-resnet18": np.where(rng.random(n) < 0.70, y, (y + 1) % 4),
        "ssl": np.where(rng.random(n) < 0.80, y, (y + 1) % 4),
        "random-resnet18": np.where(rng.random(n) < 0.4, y, (y + 1) % 4),
    }
    kinds = {"imagenet-resnet18": "imagenet", "random-resnet18": "random", "ssl": None}
    rows = []
    for init, p in preds.items():
        path = write_predictions(
            tmp_path / "res" / "predictions" / f"{init}.parquet",
            "classification",
            {"index": np.arange(n), "path": [f"img{i}" for i in range(n)], "y_true": y, "y_pred": p},
            ["a", "b", "c", "d"],
        )
        rows.append(
            row(
                init,
                "t",
                0,
                float((p == y).mean()),
                kinds[init],
                n_test=n,
                test_split_id="s",
                predictions_path=str(path),
                headline=True,
            )
        )
    _, summary = report(tmp_path, rows)
    [d] = [p for p in summary["paired"] if p["init"] == "ssl"]
    [pt] = d["per_task"]
    assert pt["test"] == "McNemar (exact)"
    # Exact McNemar by hand: two-sided binomial tail of the smaller discordant count at p = 1/2.
    from scipy.stats import binom

    a_right, b_right = preds["ssl"] == y, preds["imagenet-resnet18"] == y
    b, c = int(np.sum(a_right & ~b_right)), int(np.sum(~a_right & b_right))
    p_ref = min(1.0, 2 * binom.cdf(min(b, c), b + c, 0.5))
    assert pt["p_value"] == pytest.approx(p_ref, rel=1e-3)
    assert mcnemar(a_right.astype(int), b_right.astype(int)) == (pytest.approx(p_ref), b, c)
    # Paired bootstrap SE of the accuracy difference ~ sqrt(discordant share / n): the interval has that width.
    disc = np.mean((preds["ssl"] == y) != (preds["imagenet-resnet18"] == y))
    diff = 100 * ((preds["ssl"] == y).mean() - (preds["imagenet-resnet18"] == y).mean())
    width = d["delta_points_ci"][1] - d["delta_points_ci"][0]
    se_ref = 100 * np.sqrt((disc - (diff / 100) ** 2) / n)
    assert width == pytest.approx(2 * 1.96 * se_ref, rel=0.15)


def test_holm_and_iqm_against_hand_computation():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, float("nan")])[0] == pytest.approx(0.5)
    assert iqm(np.arange(8.0)) == pytest.approx(np.mean([2, 3, 4, 5]))
    from scipy.stats import trim_mean

    assert iqm(np.array([1.0, 5, 2, 9, 3, 7, 4, 100])) == pytest.approx(trim_mean([1, 5, 2, 9, 3, 7, 4, 100], 0.25))


def test_frozen_normalizer_and_bandstats_reference(tmp_path):
    rows = [
        row("random-resnet18", "t", 0, 0.5, "random"),
        row("bandstats", "t", 0, 0.4, "bandstats"),
        row("ssl", "t", 0, 0.7),
    ]
    norm = tmp_path / "normalizer.json"
    norm.write_text(json.dumps({"version": "1", "datasets": {"t": {"min": 0.3, "max": 0.8}}}))
    _, summary = report(tmp_path, rows, "--normalizer", str(norm))
    assert {i["init"]: i["score"] for i in summary["inits"]}["ssl"] == pytest.approx(80.0)  # (0.7-0.3)/0.5
    _, summary = report(tmp_path, rows, "--score-reference", "bandstats")
    assert {i["init"]: i["score"] for i in summary["inits"]}["ssl"] == pytest.approx(50.0)  # (0.7-0.4)/0.6
    norm.write_text(json.dumps({"datasets": {"t": {"min": 0.9, "max": 0.8}}}))
    res = CliRunner().invoke(
        app, ["report", str(tmp_path / "res"), "--out", str(tmp_path / "r.html"), "--normalizer", str(norm)]
    )
    assert res.exit_code != 0 and "error:" in res.output and "min < max" in res.output


def test_protocol_parity_and_noise_level_are_flagged(tmp_path):
    n = 200
    rows = []
    for seed in range(3):
        rows += [
            row("random-resnet18", "t", seed, 0.70, "random", n_test=n, k=20, test_split_id="f"),
            row("ssl", "t", seed, 0.705, n_test=n, k=5, test_split_id="f"),
        ]
    html, summary = report(tmp_path, rows)
    assert any("inits differ in k" in w and "ssl" in w for w in summary["parity"])
    assert "protocol parity: t · knn: inits differ in k" in html
    [task] = summary["tasks"]
    assert any("below the test-set standard error" in f for f in task["flags"])


def test_rows_of_two_input_shapes_are_both_kept(tmp_path):
    from rsbench.evaluate.results import append_results

    base = row("ssl", "t", 0, 0.5, headline=True)
    append_results(tmp_path, [{**base, "image_size": 32}])
    append_results(tmp_path, [{**base, "image_size": 64, "value": 0.6}])
    append_results(tmp_path, [{**base, "image_size": 64, "value": 0.7}])  # same key: replaced
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted((r["image_size"], r["value"]) for r in lines) == [(32, 0.5), (64, 0.7)]


def test_an_init_at_another_size_on_another_task_stays_one_init(tmp_path):
    # Classification at the run's 32 px and a dense task at its 64 px crop: one init across both tasks.
    rows = []
    for dataset, size in (("eurosat", 32), ("dubai", 64)):
        rows += [
            row("ssl", dataset, 0, 0.7, image_size=size),
            row("random-resnet18", dataset, 0, 0.5, "random", image_size=size),
        ]
    _, summary = report(tmp_path, rows)
    ssl = next(i for i in summary["inits"] if i["init"] == "ssl")
    assert ssl["n_tasks"] == 2


def test_binomial_fallback_only_for_accuracy(tmp_path):
    # mIoU is no share of test examples: without per-example files its paired difference must say that the
    # test-set error is not included, not borrow a binomial variance.
    rows = [
        {
            **row(init, "dubai", seed, v, kind, n_test=20, test_split_id="f"),
            "task": "segmentation",
            "protocol": "frozen",
            "metric": "miou",
        }
        for seed in range(3)
        for init, v, kind in (("random-resnet18", 0.30, "random"), ("ssl", 0.40 + seed * 0.01, None))
    ]
    _, summary = report(tmp_path, rows)
    [d] = summary["paired"]
    [pt] = d["per_task"]
    assert pt["source"] == "seeds only"
    [task] = summary["tasks"]
    assert any("test-set error not included" in f for f in task["flags"])
