"""Every benchmark figure quoted in README.md, regenerated from the JSONs in benchmarks/results/.

The README's Benchmarks table and the coverage table under "Reading the numbers" sit between marker
comments (`<!-- figures:NAME:begin -->` ... `<!-- figures:NAME:end -->`); this script renders both from the
JSON files, so a figure changes only when a benchmark is re-run, and a stale figure is a test failure
(tests/test_readme_walkthrough.py), not a sentence nobody re-reads.

    .venv/bin/python benchmarks/readme_figures.py           # exit 1 and show the difference when stale
    .venv/bin/python benchmarks/readme_figures.py --write   # rewrite the blocks in README.md
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
README = REPO / "README.md"


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f} %"


def signed(x: float, digits: int = 1) -> str:
    return f"{x:+.{digits}f}"


def _foundation() -> str:
    d = load("foundation_real_data")
    c, acc, p = d["corpus"], d["accuracy"], d["pretrain"]
    rejected = ", ".join(f"{k} {v}" for k, v in c["rejected"].items() if v)
    groups = d.get("band_groups")
    grouped = f" in {len(groups)} band groups (largest {max(groups.values())} tiles)" if groups else ""
    return (
        f"corpus: {c['tiles_total']} windows, {c['tiles_kept']} kept{grouped}, "
        f"{c['tiles_total'] - c['tiles_kept']} rejected ({rejected}); "
        f"SimCLR on the EuroSAT images {p['steps']} steps at {p['images_per_s']} img/s; "
        f"kNN accuracy {acc['run']['knn']['mean']} vs random "
        f"{acc['random']['knn']['mean']} (`knn_gain_points` {d['knn_gain_points']}); linear "
        f"{acc['run']['linear']['mean']} vs {acc['random']['linear']['mean']}"
    )


def _corpus() -> str:
    d = load("corpus_bench")
    tg, ld, big, mem = d["torchgeo"], d["loader"], d["big_raster"], d["planning_memory"]
    load_avg = max(d[job]["load_avg"][0] for job in ("archive", "tiling", "scaling"))
    archive = f"archive of {d['archive']['rasters']:,} real chips"

    def job(name: str, what: str) -> str:
        j = d[name]
        return (
            f"{what} ({j['windows']:,} windows): 1 worker at {j['ratio_1_worker_vs_bare']:.2f}x the bare loop "
            f"(CPU time {j['cpu_ratio_1_worker_vs_bare']:.2f}x; "
            f"filters off {j['cpu_ratio_filters_off_vs_bare']:.2f}x), "
            f"1 -> 2 workers {j['speedup_1_to_2_workers']:.2f}x{_rounds(j)} with the pure-CPU control at "
            f"{'/'.join(f'{c:.2f}' for c in _controls(j))}x, "
            f"{'identical' if j['identical_output_1_vs_2_workers'] else 'different'} output"
        )

    ratio = max(d[name]["ratio_1_worker_vs_bare"] for name in ("archive", "tiling"))
    scaling = d["scaling"]["speedup_1_to_2_workers"]
    goals = (
        f"goal 0.8x {'reached' if ratio >= 0.8 else 'not reached'}, goal 1.7x on the scaling job "
        f"{'reached' if scaling >= 1.7 else 'not reached'}: see `notes` in the JSON"
    )
    return (
        f"last run at load average up to {load_avg:.1f} on 2 cores: "
        f"{job('archive', archive)}; "
        f"{job('tiling', 'five shared rasters')}; {job('scaling', 'scaling job')} "
        f"({goals}); "
        f"{_planning(mem)}{_assembly(d.get('assembly_memory'))}; "
        f"{_block_rows(d.get('block_rows'))}"
        f"{tg['speedup_vs_torchgeo']:.1f}x faster than torchgeo; shard loader at "
        f"{ld['ratio']:.2f}x of per-file `.npy` reads from the page cache; {big['uncompressed_gib']:.1f} GiB raster "
        f"tiled with {big['peak_rss_mib']:.0f} MiB peak RSS"
    )


def _block_rows(wide: dict[str, Any] | None) -> str:
    if not wide:
        return ""
    return (
        f"a raster with {wide['block_row_mib']:.0f} MiB block rows ({wide['windows']:,} windows): "
        f"{min(wide['build_s']):.1f} s with the row-sized block cache and block-row parts vs "
        f"{min(wide['build_before_s']):.1f} s without ({wide['speedup_over_before']:.2f}x, "
        f"{'identical' if wide['identical_output'] else 'different'} output; "
        f"{wide['ratio_vs_bare']:.2f}x the bare loop); "
    )


def _controls(job: dict[str, Any]) -> list[float]:
    return job.get("control_cpu_speedup_all_rounds") or job["control_cpu_speedup_2_processes"]


def _rounds(job: dict[str, Any]) -> str:
    rounds = job.get("speedup_1_to_2_workers_per_round")
    runs = " in 2 runs" if "rerun" in job else ""
    return f" (median of {len(rounds)} interleaved rounds{runs})" if rounds else ""


def _planning(mem: dict[str, Any]) -> str:
    last = mem["runs"][-1]
    if mem.get("measured_at_100k"):
        return (
            f"planning peak RSS {last['peak_rss_mib']:.0f} MiB measured on {last['rasters']:,} synthetic rasters "
            f"({mem['slope_kib_per_raster']:.1f} KiB per raster; goal < 2 GiB)"
        )
    return (
        f"planning peak RSS {last['peak_rss_mib']:.0f} MiB for {last['rasters']:,} synthetic rasters "
        f"({mem['slope_kib_per_raster']:.1f} KiB per raster: ~{mem['peak_rss_mib_100k']:.0f} MiB at 100,000, "
        f"goal < 2 GiB)"
    )


def _assembly(asm: dict[str, Any] | None) -> str:
    if not asm:
        return ""
    last = asm["runs"][-1]
    return (
        f"; assembly (selection, shard plan, manifest) of {last['windows']:,} windows: peak RSS "
        f"{last['peak_rss_mib']:.0f} MiB ({last['bytes_per_window_over_start']:.0f} bytes a window), "
        f"{last['seconds']:.0f} s"
    )


def _ssl_speed() -> str:
    d = load("ssl_speed")
    over = [m["overhead"] for m in d["methods"]]
    full, small = d["mae_vs_mocov3"][0], d["mae_vs_mocov3"][1]
    return (
        f"overhead per method {100 * min(over):.1f} % to {signed(100 * max(over))} % (goal <= 10 %); ViT-Tiny/16 at "
        f"{d['settings']['image_size']} px: MAE with a {small['mae_recipe']['decoder_depth']}-block decoder "
        f"{small['speedup']:.1f}x MoCo v3's img/s, with the paper's 8 x 512 decoder {full['speedup']:.2f}x (that "
        f"decoder outweighs a ViT-Tiny encoder)"
    )


def _train() -> str:
    d = load("train_bench")["cpu"]
    s, o, ddp = d["settings"], d["results"]["overhead"], d["results"]["ddp_scaling"]
    one, two = ddp["1 process x 1 thread"], ddp["2 DDP processes x 1 thread"]
    verdict = "no overhead" if o["overhead_pct"] <= 0 else f"{o['overhead_pct']} % overhead"
    return (
        f"SimCLR/ResNet-18, {s['image_size']} px: rsbench {o['rsbench_images_per_s']:.1f} img/s vs bare loop "
        f"{o['bare_loop_images_per_s']:.1f} ({verdict}; goal <= {o['goal_pct']} %); 2 gloo DDP processes "
        f"{two['images_per_s']:.1f} img/s vs {one['images_per_s']:.1f} for one process "
        f"({ddp['ddp_speedup_vs_1_process']:.2f}x: "
        f"2 cores also feed the data workers)"
    )


def _ssl_quality() -> str:
    d, v = load("ssl_quality"), load("ssl_quality_validation")
    methods, base = d["methods"], d["baselines"]

    def entry(name: str, shown: str | None = None, steps: bool = False) -> str:
        m = methods[name]
        extra = f", {m['steps']} steps" if steps else ""
        return f"{shown or name} {m['knn_accuracy']:.3f} ({signed(m['gain_vs_random_points'])}{extra})"

    resnet = sorted(
        (n for n, m in methods.items() if m["arch"] == "resnet18"), key=lambda n: -methods[n]["knn_accuracy"]
    )
    vit = sorted((n for n, m in methods.items() if m["arch"] != "resnet18"), key=lambda n: -methods[n]["knn_accuracy"])
    below = [n for n in vit if methods[n]["gain_vs_random_points"] < 0]
    late = v["methods"]["mocov3-30min"]
    return (
        "kNN accuracy (gain over random init of the same backbone). ResNet-18 (random "
        f"{base['random-resnet18']:.3f}): "
        + ", ".join(entry(n, n.removesuffix("-resnet18")) for n in resnet)
        + f". ViT-Tiny/8 (random {base['random-vit_tiny_patch16_224']:.3f}): "
        + ", ".join(entry(n, steps=n in below) for n in vit)
        + f". Pixels {base['pixels']:.3f}. Every method beats random init on ResNet-18 (MAE, ViT-only, on its ViT); "
        "DINO and MoCo v3 on the ViT do not within 10 CPU-minutes (MoCo v3 does at "
        f"{late['budget_minutes']:.0f}: {signed(late['gain_vs_random_points'])} on the validation split)."
    )


def _evaluate() -> str:
    d = load("evaluate_bench")
    fc, kl = d["feature_caching"], d["knn_linear_after_extraction"]
    linear = {
        r["init"]: r["mean"]
        for r in d["quality"]["table"]
        if r["protocol"] == "linear" and r["label_fraction"] == 1.0 and r["metric"] == "accuracy"
    }
    names = [("SimCLR run", "simclr-resnet18 (simclr)"), ("bandstats", "bandstats"), ("random", "random-resnet18")]
    names.append(("pixels-8x8", "pixels-8x8"))
    scores = ", ".join(f"{label} {linear[key]}" for label, key in names if key in linear)
    return (
        f"{len(fc['probe_fit_time_s'])} probe fits on one feature pass (extraction {fc['extract_time_s']} s, fits "
        f"{fc['probe_fit_time_s_total']} s); second run from cache {fc['wall_time_s_second_run_from_cache']} s; "
        f"kNN + linear {kl['wall_time_s']} s; linear accuracy (100 % labels): {scores} (measured with the earlier "
        "weight-decay probe and pool-wide band statistics; not re-run since the C-sweep probe)"
    )


def _dense() -> str:
    seg = {r["init"]: r for r in load("eval_dense_bench")["results"] if r["task"] == "segmentation"}
    det_full = load("eval_dense_bench_detection")
    det = {r["init"]: r for r in det_full["results"]}
    det_short = {r["init"]: r for r in load("eval_dense_bench")["results"] if r["task"] == "detection"}
    ssl, rnd = "simclr-resnet18 (simclr-run)", "random-resnet18"
    return (
        f"Dubai mIoU {seg[ssl]['metrics']['miou']} (SimCLR) vs {seg[rnd]['metrics']['miou']} (random); NEON "
        f"map_50_95 {det[ssl]['metrics']['map_50_95']} vs {det[rnd]['metrics']['map_50_95']} "
        f"(`eval_dense_bench_detection.json`, {det_full['args']['det_epochs']} epochs; "
        f"{det_short[ssl]['metrics']['map_50_95']} vs {det_short[rnd]['metrics']['map_50_95']} after "
        f"{load('eval_dense_bench')['args']['det_epochs']} epochs): detection barely learns in this CPU budget"
    )


def _coverage_summary() -> str:
    d = load("stats_coverage")
    rows = d["results"].values()
    acc = [r["coverage_accuracy"] for r in rows]
    diff = [r["coverage_paired_difference"] for r in rows]
    null = [r["null_rejection_rate"] for r in rows]
    return (
        f"coverage of the 95 % intervals {100 * min(acc):.1f}-{pct(max(acc))} (accuracy) and "
        f"{100 * min(diff):.1f}-{pct(max(diff))} (paired difference); null rejection "
        f"{100 * min(null):.1f}-{pct(max(null))}; see Reading the numbers"
    )


def _tiny() -> str:
    d = load("benchmark_tiny")
    score = d["normalized_score"]
    return (
        f"{d['cells']} cells in {d['run_wall_s']} s (load average {d['machine']['load_average_before'][0]} at start), "
        f"re-run {d['rerun_wall_s']} s with 0 cells run, report {d['report_wall_s']} s; normalized score "
        + ", ".join(f"{k} {v['mean']}" for k, v in score.items())
        + " (measured on the old scale, best init = 100; not re-run since)"
    )


def _dense_cache() -> str:
    d = load("eval_dense_cache_bench")
    parts = []
    for r in d["results"]:
        runs = r["runs"]
        un, cold, warm = runs["uncached"], runs["cached_cold"], runs["cached_warm"]
        metric = next(iter(un["headline"]))
        parts.append(
            f"{r['dataset']} ({r['task']}, {r['epochs']} epochs, "
            f"load average {un['load_avg_before'][0]:.0f} at start): "
            f"uncached {un['wall_s']:.0f} s, empty cache {cold['wall_s']:.0f} s ({r['speedup_cold']:.2f}x; extraction "
            f"{cold['extract_time_s']:.0f} s), cache hit {warm['wall_s']:.0f} s ({r['speedup_warm']:.2f}x); {metric} "
            f"{un['headline'][metric]} uncached vs {warm['headline'][metric]} cached"
        )
    return "; ".join(parts)


def _tpe_startup(d: dict) -> str:
    startup, trials = d["sizes"]["hpo"].get("startup_trials", 10), d["settings"]["trials"]
    if startup >= trials:
        return f"TPE's {startup} startup draws: a random search"
    return f"random until {startup} trials, then TPE"


def _hpo() -> str:
    d = load("hpo_bench")
    st, cost, sizes = d["settings"], d["cpu_hours"], d["sizes"]
    inits = "; ".join(
        f"{r['dataset']} {r['protocol']} {r['init']}: test {r['test_default']:.2f} default -> {r['test_tuned']:.2f} "
        f"tuned (validation {r['val_default']:.2f} -> {r['val_tuned']:.2f}, best trial {r['best_trial']})"
        for r in d["per_init"]
    )
    taus = ", ".join(f"{task} tau {r['kendall_tau_test']:.2f}" for task, r in d["ranking"].items())
    return (
        f"EuroSAT {sizes['eurosat']}; Dubai {sizes['dubai']}; {st['epochs']} epochs, patience {st['patience']}, "
        f"{st['trials']} trials ({_tpe_startup(d)}) over lr, weight_decay, batch_size, {st['seeds']} seed(s), "
        "SSL run of "
        f"{st['pretrain_steps']} steps (load average {max(x[0] for x in d['loadavg']):.0f} at most): {inits}; "
        f"ranking default vs tuned: {taus}; process CPU-hours: tuning {cost['tuning_studies']:.3f} vs "
        f"{cost['default_evals']:.3f} for the default and {cost['tuned_evals']:.3f} for the tuned evaluations "
        f"(pretraining {cost['pretrain']:.3f})"
    )


def _ssl_distill(name: str = "ssl_quality_distill") -> str:
    d = load(name)
    base, st = d["baselines"], d["settings"]
    (teacher_key, teacher), *_ = d["teachers"].items()
    parts = []
    for method, m in d["methods"].items():
        closed = m.get("teacher_gain_closed")
        gain = f", {100 * closed:.0f} % of the teacher's gain" if closed is not None else ""
        parts.append(
            f"{method} ({m['arch']}, {m['steps']} steps): {m['knn_accuracy']:.3f} "
            f"({signed(m['gain_vs_random_points'])} vs random{gain})"
        )
    cost = d["methods"].get("distill", {}).get("teacher_cost")
    teacher_cost = (
        f"; the teacher's forward was {pct(cost['flops_fraction'], 0)} of a distill step's FLOPs and "
        f"{pct(cost['time_fraction'], 0)} of its time"
        if cost
        else ""
    )
    distill = d["methods"].get("distill", {})
    student_time = (
        f"; distill trained in {distill['student_time_over_teacher_time_probed']:.2f}x of the teacher's training "
        f"time (steps x quiet step time; {distill['student_time_over_teacher_time']:.2f}x of its wall time)"
        if "student_time_over_teacher_time_probed" in distill
        else ""
    )
    reduced = "**reduced run** " if name == "ssl_quality_distill" and st["budget_minutes_per_method"] < 10 else ""
    no_gain = (
        " (no gain over random init, so the >= 90 %-of-the-teacher's-gain test is not measured)"
        if teacher["gain_vs_random_points"] <= 0
        else ""
    )
    return (
        f"{reduced}{st['budget_minutes_per_method']:g} CPU-minutes per method (load average "
        f"{st['load_average_at_start'][0]:.0f} at start): teacher {teacher_key} kNN {teacher['knn_accuracy']:.3f} "
        f"vs random ResNet-18 {base['random-resnet18']:.3f}{no_gain}; {'; '.join(parts)}; random ViT-Tiny "
        f"{base['random-vit_tiny_patch16_224']:.3f}{teacher_cost}{student_time}"
    )


def _faults() -> str:
    d = load("fault_matrix")
    n = d["counts"]
    failing = [c["case"] for c in d["cases"] if c["traceback"] or not c["data_intact"]]
    return (
        f"{n['cases']} cases: {n['tracebacks']} tracebacks, {n['data_lost']} with data lost, "
        f"{n['failed_without_error_line']} failures without a one-line `error:`"
        + (f"; open: {', '.join(failing)}" if failing else "")
        + f" (load average {d['machine']['loadavg'][0]:.1f})"
    )


ROWS = [  # (script, what it measures, the figures)
    (
        "foundation_real_data.py",
        "CLI end to end on the shared data: corpus, SimCLR on EuroSAT, kNN + linear vs random, report",
        _foundation,
    ),
    (
        "corpus_bench.py",
        "builder vs bare rasterio loop, 1 vs 2 Dask workers, vs torchgeo sampling, loader, memory on a > 4 GiB raster",
        _corpus,
    ),
    (
        "ssl_speed.py",
        "Lightning loop (as `rsbench pretrain` runs it) vs a bare PyTorch loop per method; MAE vs MoCo v3 on one ViT",
        _ssl_speed,
    ),
    ("train_bench.py", "`rsbench pretrain` overhead vs a bare loop; DDP scaling on CPU", _train),
    (
        "ssl_quality.py",
        "each method pretrained for a 10 CPU-minute budget on 80 % of EuroSAT (labels unused), kNN on the held-out "
        "20 %; settings chosen only with `--validation` (a split of the training images)",
        _ssl_quality,
    ),
    (
        "ssl_quality.py --methods distill,mae_distill,dinov2",
        "the three foundation-model methods with a MoCo v2 teacher that rsbench trains first on the same images "
        "(`ssl_quality_distill.json`); `teacher_gain_closed` = the student's kNN gain over random init / the "
        "teacher's",
        _ssl_distill,
    ),
    (
        "ssl_quality.py --methods distill --budget-minutes 3",
        "the same teacher, a 3 CPU-minute student (`ssl_quality_distill_3min.json`; budget fixed before its one run)",
        lambda: _ssl_distill("ssl_quality_distill_3min"),
    ),
    ("evaluate_bench.py", "feature caching, probe speed, baselines on 2,300 EuroSAT images", _evaluate),
    (
        "eval_dense_bench.py",
        "segmentation (Dubai, FPN, frozen) and detection (NEON) for random vs a SimCLR run",
        _dense,
    ),
    (
        "eval_dense_bench.py --compare-cache",
        "frozen heads uncached (encoder at every step, random crops + flips) vs on cached float16 maps (fixed grid "
        "crops), random ResNet-18, 128 px, one run (`eval_dense_cache_bench.json`); on CPU the FPN decoder's own "
        "training dominates a segmentation step, so caching the encoder saves about a third of a step there, not "
        "10x (see `notes` in the JSON)",
        _dense_cache,
    ),
    (
        "stats_coverage.py",
        "simulated benchmark tasks with a known truth (5 seeds, 1,000 repetitions, 4 scenarios)",
        _coverage_summary,
    ),
    (
        "hpo_bench.py",
        "default vs tuned fine-tuning and frozen dense decoder (Optuna TPE, `hpo`, early stopping) for random init "
        "and an SSL run: test and validation scores, chosen settings, Kendall tau of the init ranking, process "
        "CPU-hours",
        _hpo,
    ),
    (
        "fault_matrix.py",
        "the fault cases of issue 16 replayed on the CLI (root, with `.ci/engines.sh start`): interrupts and SIGKILL "
        "then resume, a full disk (256 KiB tmpfs), read-only and file `--out`, corrupt stores, shards, checkpoints "
        "and results, a leftover `.staging/`, unreachable PostgreSQL and Dask, sbatch refusals, SLURM jobs pending "
        "too long or SIGTERM while queued",
        _faults,
    ),
    ("benchmark_tiny.py", "`rsbench benchmark run examples/benchmark-tiny.yaml` + report, timed", _tiny),
]


def benchmarks_table() -> str:
    lines = ["| script | measures | headline figures (from the JSON) |", "|---|---|---|"]
    lines += [f"| `{script}` | {what} | {render()} |" for script, what, render in ROWS]
    return "\n".join(lines)


def coverage_table() -> str:
    d = load("stats_coverage")
    lines = [
        "  | scenario | coverage of accuracy | coverage of paired difference | null rejected (at 0.05) | percentile "
        "bootstrap over seeds (before) | two-level percentile bootstrap |",
        "  |---|---|---|---|---|---|",
    ]
    for name, r in d["results"].items():
        lines.append(
            f"  | {name} (n_test {r['n_test']}) | {pct(r['coverage_accuracy'])} | "
            f"{pct(r['coverage_paired_difference'])} "
            f"| {pct(r['null_rejection_rate'])} | {pct(r['coverage_accuracy_percentile_bootstrap_over_seeds'])} | "
            f"{pct(r['coverage_accuracy_two_level_percentile_bootstrap'])} |"
        )
    return "\n".join(lines)


BLOCKS = {"benchmarks": benchmarks_table, "coverage": coverage_table}


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- figures:{name}:begin -->\n)(.*?)(\n\s*<!-- figures:{name}:end -->)", re.S)


def stale_blocks(text: str) -> dict[str, tuple[str, str]]:
    """{block: (in the README, regenerated)} for every block whose figures differ; KeyError-like ValueError
    when a marker is missing."""
    out = {}
    for name, render in BLOCKS.items():
        m = _pattern(name).search(text)
        if m is None:
            raise ValueError(f"README.md has no <!-- figures:{name}:begin/end --> block")
        fresh = render()
        if m.group(2) != fresh:
            out[name] = (m.group(2), fresh)
    return out


def rewrite(text: str) -> str:
    for name, render in BLOCKS.items():
        text = _pattern(name).sub(lambda m, r=render: m.group(1) + r() + m.group(3), text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the figure blocks of README.md")
    ap.add_argument("--readme", type=Path, default=README)
    args = ap.parse_args()
    text = args.readme.read_text()
    if args.write:
        args.readme.write_text(rewrite(text))
        return 0
    stale = stale_blocks(text)
    for name, (old, new) in stale.items():
        print(f"README block '{name}' is stale:")
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "README", "JSON"))
        print()
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
