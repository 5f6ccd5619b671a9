"""`rsbench report`: loading/validation, aggregation over seeds, the HTML page and the CLI."""

from __future__ import annotations

import base64
import importlib
import json
import re
import sys
import types
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rsbench.errors import DataError
from rsbench.report import build_sections, deduplicate, load_results, render_report, summarize

EVIL = 'evil <script>alert(1)</script> & "q"'
VOID = {"meta", "br", "img", "hr", "input", "link"}


def row(init, protocol, seed, value, metric="accuracy", **extra):
    return {
        "task": "classification",
        "dataset": "eurosat_rgb",
        "protocol": protocol,
        "init": init,
        "label_fraction": 1.0,
        "seed": seed,
        "metric": metric,
        "value": value,
        **extra,
    }


# 2 inits x 2 protocols x 3 seeds, hand-picked so rankings differ between protocols.
VALUES = {
    ("simclr-run1", "knn"): [0.61, 0.64, 0.58],
    ("random-init", "knn"): [0.40, 0.42, 0.47],
    ("simclr-run1", "linear"): [0.70, 0.71, 0.75],
    ("random-init", "linear"): [0.80, 0.79, 0.83],
}


@pytest.fixture
def rows():
    return [
        row(
            i,
            p,
            s,
            v,
            init_kind="random" if i.startswith("random") else "run",
            image_size=64,
            normalization={"mean": [0.0], "std": [1.0], "source": "dataset"},
            resize="none",
        )
        for (i, p), vals in VALUES.items()
        for s, v in enumerate(vals)
    ]


def write_jsonl(path: Path, rows, extra_lines=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(extra_lines), encoding="utf-8")
    return path


def test_summarize_matches_numpy(rows):
    out = {(s.init, s.protocol): s for s in summarize(rows)}
    assert set(out) == set(VALUES)
    for key, vals in VALUES.items():
        s = out[key]
        assert s.n == 3 and s.seeds == (0, 1, 2)
        assert s.mean == pytest.approx(np.mean(vals))
        assert s.std == pytest.approx(np.std(vals, ddof=1))
        assert (s.min, s.max) == (min(vals), max(vals))


def test_summarize_single_seed_has_zero_std_and_int_float_fractions_group():
    rows = [row("a", "knn", 0, 0.5), {**row("a", "knn", 1, 0.7), "label_fraction": 1}]
    [s] = summarize(rows)  # label_fraction 1 and 1.0 are the same group
    assert (s.n, s.mean) == (2, pytest.approx(0.6))
    [single] = summarize([row("b", "knn", 0, 0.3)])
    assert (single.n, single.std) == (1, 0.0)


def test_deduplicate_keeps_latest_created_in_any_order():
    old = row("a", "knn", 0, 0.1, created="2026-01-01T00:00:00")
    new = row("a", "knn", 0, 0.9, created="2026-02-01T00:00:00")
    other_seed = row("a", "knn", 1, 0.5, created="2025-01-01T00:00:00")
    for order in ([old, new, other_seed], [new, old, other_seed]):
        kept = sorted(deduplicate(order), key=lambda r: r["seed"])
        assert [r["value"] for r in kept] == [0.9, 0.5]


def test_primary_metric_is_accuracy_for_classification():
    # Ranking by macro_f1 (listed first) would put "b" on top; accuracy must decide instead.
    rows = [
        row("a", "knn", 0, 0.3, metric="macro_f1"),
        row("a", "knn", 0, 0.9),
        row("b", "knn", 0, 0.8, metric="macro_f1"),
        row("b", "knn", 0, 0.5),
    ]
    [section] = build_sections(rows)
    assert section.metrics == ["accuracy", "macro_f1"]
    assert [e.init for e in section.entries] == ["a", "b"]
    seg = [{**r, "task": "segmentation"} for r in rows]
    assert build_sections(seg)[0].metrics == ["macro_f1", "accuracy"]


def test_load_results_discovers_directories_recursively(tmp_path, rows):
    knn = [r for r in rows if r["protocol"] == "knn"]
    linear = [r for r in rows if r["protocol"] == "linear"]
    f1 = write_jsonl(tmp_path / "runs" / "a" / "results.jsonl", knn)
    write_jsonl(tmp_path / "runs" / "b" / "deep" / "results.jsonl", linear)
    write_jsonl(tmp_path / "runs" / "b" / "other.jsonl", [row("ignored", "knn", 0, 1.0)])
    loaded = load_results([tmp_path / "runs"])
    assert len(loaded) == len(rows)
    assert "ignored" not in {r["init"] for r in loaded}
    # A folder plus a file inside it must not count that file twice.
    assert len(load_results([tmp_path / "runs", f1])) == len(rows)


@pytest.mark.parametrize(
    "bad_line, expect",
    [
        ("{not json\n", "malformed JSON"),
        (json.dumps({k: v for k, v in row("a", "knn", 0, 0.5).items() if k != "seed"}) + "\n", "seed"),
        (json.dumps(row("a", "knn", 0, "high")) + "\n", "'value'"),
        ("[1, 2]\n", "JSON object"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, bad_line, expect):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(row("a", "knn", 0, 0.5)) + "\n\n" + bad_line, encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_results([path])
    msg = str(exc.value)
    assert msg.startswith(f"{path}:3: ") and expect in msg and "\n" not in msg


def test_no_results_found(tmp_path):
    with pytest.raises(DataError, match="no results.jsonl found"):
        load_results([tmp_path])
    with pytest.raises(DataError, match="not found"):
        load_results([tmp_path / "missing"])


class _Page(HTMLParser):
    """Checks tag nesting and collects the init column of each leaderboard table."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.tables, self.row_classes, self.imgs, self.refs = [], [], [], [], [], []
        self._cell, self.boards = None, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.refs += [v for k, v in attrs.items() if k in ("src", "href") and v]
        if tag == "img":
            self.imgs.append(attrs["src"])
        if tag == "section" and "board-card" in (attrs.get("class") or ""):
            self.boards += 1
        in_board = "board" in self.stack  # leaderboards only, not the summary or preprocessing tables
        if tag == "tbody" and in_board:
            self.tables.append([])
        if tag == "tr" and in_board and self.stack[-1] == "tbody":
            self.row_classes.append(attrs.get("class", ""))
        if tag == "td" and in_board and attrs.get("class") == "init":
            self._cell = ""
        if tag not in VOID:
            self.stack.append("board" if tag == "section" and "board-card" in (attrs.get("class") or "") else tag)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[-1].append(self._cell)
            self._cell = None
        if not self.stack or self.stack.pop().replace("board", "section") != tag:
            self.errors.append(tag)

    def handle_data(self, data):
        if self._cell is not None and not self.stack[-1] == "span":  # skip the "baseline" badge text
            self._cell += data


def test_render_report_is_self_contained_ranked_and_escaped(tmp_path, rows):
    rows = rows + [row(EVIL, "knn", s, 0.5) for s in range(3)]
    out = render_report(rows, tmp_path / "out" / "report.html", title="My <bench>")
    html = out.read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)
    page.close()
    assert html.startswith("<!DOCTYPE html>") and not page.errors and not page.stack
    assert "<title>My &lt;bench&gt;</title>" in html

    # knn: simclr 0.61 > evil 0.5 > random 0.43; linear: random 0.807 > simclr 0.72.
    assert page.tables == [["simclr-run1", EVIL, "random-init"], ["random-init", "simclr-run1"]]
    assert page.row_classes == ["best", "", "baseline", "best baseline", ""]
    for protocol in ("knn", "linear"):
        assert f'<span class="sep">/</span>{protocol}<span' in html
    assert "<script>" not in html and "evil &lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;q&#34;" in html
    assert (
        f"{np.mean(VALUES[('simclr-run1', 'knn')]):.3f} ± {np.std(VALUES[('simclr-run1', 'knn')], ddof=1):.3f}" in html
    )
    assert "based on 3 seeds, 9 evaluation cells, 9 results rows" in html
    assert "based on 3 seeds, 6 evaluation cells, 6 results rows" in html
    assert "Preprocessing" in html and ">dataset<" in html
    # 95% interval of simclr-run1 / knn in its leaderboard row: these rows carry no test-set size or
    # per-example outputs, so it is the t interval over the 3 seeds (scipy as the reference).
    from scipy import stats as sps

    v = np.asarray(VALUES[("simclr-run1", "knn")])
    lo, hi = sps.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=sps.sem(v))
    assert f"[{lo:.3f}, {hi:.3f}]" in html

    # Two leaderboard plots, the summary, paired, rank and heatmap figures; all embedded PNGs.
    assert page.boards == 2 and len(page.imgs) == 6
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert all(r.startswith(("data:", "#")) for r in page.refs)
    assert "http://" not in html and "https://" not in html


def test_render_report_rejects_empty_rows(tmp_path):
    with pytest.raises(DataError, match="no results rows"):
        render_report([], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


@pytest.fixture
def cli_app():
    """A local Typer app around report_command: other stages' CLI modules may not exist yet."""
    try:
        from rsbench.cli.report import report_command
    except ImportError as e:
        if not any(m in str(e) for m in ("corpus", "evaluate", "pretrain", "quickstart")):
            raise
        # rsbench/cli/__init__.py imports stages not written yet: load our module without it,
        # then drop the stand-in so no other test sees a half-built rsbench.cli.
        import rsbench

        saved = {k: v for k, v in sys.modules.items() if k == "rsbench.cli" or k.startswith("rsbench.cli.")}
        for k in saved:
            del sys.modules[k]
        stub = types.ModuleType("rsbench.cli")
        stub.__path__ = [str(Path(rsbench.__file__).parent / "cli")]
        sys.modules["rsbench.cli"] = stub
        try:
            report_command = importlib.import_module("rsbench.cli.report").report_command
        finally:
            for k in [k for k in sys.modules if k == "rsbench.cli" or k.startswith("rsbench.cli.")]:
                del sys.modules[k]
            sys.modules.update(saved)
    app = typer.Typer()
    app.command()(report_command)
    return app


def test_cli_writes_report_and_prints_its_path(tmp_path, rows, cli_app):
    write_jsonl(tmp_path / "runs" / "x" / "results.jsonl", rows)
    cfg = tmp_path / "report.yaml"
    cfg.write_text(f"results: [{tmp_path / 'runs'}]\ntitle: From config\n", encoding="utf-8")
    out = tmp_path / "page.html"
    result = CliRunner().invoke(cli_app, ["--config", str(cfg), "--out", str(out), "--title", "From CLI"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    html = out.read_text(encoding="utf-8")
    assert "<title>From CLI</title>" in html and "simclr-run1" in html


def test_cli_malformed_line_is_one_line_error(tmp_path, rows, cli_app):
    path = write_jsonl(tmp_path / "results.jsonl", rows[:2], extra_lines=['{"task": "classification",\n'])
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli_app, [str(tmp_path), "--out", str(out)])
    assert result.exit_code == 1
    assert re.fullmatch(rf"error: {re.escape(str(path))}:3: malformed JSON \(.*\)\n", result.stderr)
    assert not out.exists()


def test_cli_without_results_fails(tmp_path, cli_app):
    result = CliRunner().invoke(cli_app, ["--out", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and "no RESULTS given" in result.stderr


def test_tables_as_markdown_and_latex_beside_the_page(tmp_path, rows):
    rows = rows + [row(EVIL, "knn", s, 0.5) for s in range(3)]
    out = render_report(rows, tmp_path / "r.html")
    md = (tmp_path / "r.tables.md").read_text()
    tex = (tmp_path / "r.tables.tex").read_text()
    assert "| Rank | Init | Score | 95% CI |" in md and "| 1 | simclr-run1 |" in md
    assert r"\begin{tabular}" in tex and r"\toprule" in tex
    assert r"evil <script>alert(1)</script> \& " in tex, "LaTeX specials are escaped"
    assert "based on 3 seeds" in md and "based on 3 seeds" in tex
    html = out.read_text()
    assert html.count("Markdown · LaTeX") >= 4  # one collapsible block per table


def test_reference_and_checkpoint_rows(tmp_path, rows):
    extra = [row("imagenet-resnet18", p, s, 0.9, init_kind="imagenet") for p in ("knn", "linear") for s in range(3)]
    # A benchmark snapshot ("<run>@step-N") is a point of the progress curve, not a leaderboard entry.
    snap = [row("simclr-resnet18 (simclr-ab12@step-000050)", "knn", s, 0.3) for s in range(3)]
    html = render_report(rows + extra + snap, tmp_path / "r.html").read_text()
    assert "Paired comparison with imagenet-resnet18" in html and "no ImageNet baseline" not in html
    assert "simclr-ab12@step-000050" not in html
    html = render_report(rows + extra, tmp_path / "r2.html", reference="random-init").read_text()
    assert "Paired comparison with random-init" in html
    with pytest.raises(Exception, match="reference 'nope'"):
        render_report(rows, tmp_path / "r3.html", reference="nope")


def test_curves_section_names_runs_without_a_curve(tmp_path, rows):
    from rsbench.report.pretrain_runs import RunInfo
    from rsbench.report.sources import ReportData

    runs = [
        RunInfo("simclr-run1", curves={"train/loss": [[1, 5.0], [2, 4.0], [3, 3.5]]}),
        RunInfo("short-run", curves={"train/loss": [[1, 5.0]]}),  # one logged step: no line to draw
        RunInfo("no-metrics-run"),  # no metrics.csv at all
    ]
    html = render_report(ReportData(rows, runs=runs), tmp_path / "report.html").read_text(encoding="utf-8")
    section = html[html.index('id="curves"') :]
    section = section[: section.index("</section>")]
    assert "<img" in section  # the run with a curve is still drawn
    note = re.search(r"No loss curve[^<]*for: ([^<]*)\.</p>", section)
    assert note is not None and note.group(1) == "short-run, no-metrics-run"
    # Only runs without a curve at all: the section remains, with the note and no figure.
    html = render_report(ReportData(rows, runs=runs[1:]), tmp_path / "report2.html").read_text(encoding="utf-8")
    assert 'id="curves"' in html and "No loss curve" in html
