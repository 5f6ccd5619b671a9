"""A GEO-Bench-2 leaderboard submission from rsbench result rows, and the leaderboard's acceptance rules.

A submission is a folder with exactly two files (the GEO-Bench-2-Leaderboard repository, `utils/constants.py`
and `utils/input_validation.py`): `results_and_parameters.csv`, one row per (dataset, backbone, seed) with the
columns below, and `additional_info.json` with the keys of JSON_KEYS. The leaderboard accepts a submission
when every column is present with its type (text / numeric), `frozen_or_full_ft` is `frozen` or `full_ft`,
every (backbone, dataset) pair has exactly REQUIRED_SEEDS rows, the JSON keys are present with their types,
and the datasets cover every dataset of at least one of its dimensions. `check_submission` applies those
rules to a written folder, so a user learns what the leaderboard would reject before submitting.

rsbench -> GEO-Bench-2 fields: `backbone` is the init's label; `experiment_name` the experiment;
`frozen_or_full_ft` is `full_ft` for the `finetune` protocol and `frozen` for every frozen protocol (probes,
frozen decoders); `decoder`, `lr`, `batch_size` and `weight_decay` come from the row's recorded
hyper-parameters; `n_trials` is the number of tuning trials (0: the protocol's fixed setting, as every
rsbench protocol without HPO; a benchmark's `hpo` study size otherwise); `early_stop_patience` the patience the tuning
trials trained with, as the protocol recorded it (0: no early stopping); `data_percentages` the label
fraction in percent and `partition name` the same as text ("100%").
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from rsbench.errors import ConfigError
from rsbench.interop import headline_rows, select_protocol
from rsbench.io import atomic_write_text, write_json

CSV_FILE = "results_and_parameters.csv"
JSON_FILE = "additional_info.json"
STRING_COLUMNS = (
    "dataset",
    "Metric",
    "experiment_name",
    "partition name",
    "backbone",
    "decoder",
    "batch_size_selection",
    "frozen_or_full_ft",
)
INTEGER_COLUMNS = ("early_stop_patience", "n_trials", "Seed", "data_percentages", "batch_size")
FLOAT_COLUMNS = ("weight_decay", "lr", "test metric")
COLUMNS = STRING_COLUMNS + INTEGER_COLUMNS + FLOAT_COLUMNS
REQUIRED_SEEDS = 5
# The leaderboard's metric names for rsbench's headline metrics.
METRIC_NAMES = {
    "accuracy": "Overall_Accuracy",
    "f1": "Multilabel_F1_Score",
    "map": "Multilabel_Average_Precision",
    "miou": "Multiclass_Jaccard_Index",
    "map_50_95": "Mean_Average_Precision",
    "map_50": "Mean_Average_Precision_50",
}
# Keys of additional_info.json and the type each value must have.
JSON_KEYS: dict[str, type] = {
    "Paper Link": str,
    "Code Repository Link ": str,  # the trailing space is the leaderboard's own key
    "License": str,
    "Number of HPO trials": str,
    "Additional information about submission": str,
    "Comments on new models in submission": str,
    "New model info": list,
}
# The leaderboard's dimensions: a submission must hold every dataset of at least one of them.
DIMENSIONS = {
    "Multi-Spectral-Dependent": (
        "benv2",
        "biomassters",
        "pastis",
        "so2sat",
        "cloudsen12",
        "spacenet2",
        "burn_scars",
        "fotw",
    ),
    "Multi-Temporal": ("kuro_siwo", "pastis", "biomassters", "dynamic_earthnet"),
    "Pixel-wise": (
        "kuro_siwo",
        "pastis",
        "burn_scars",
        "spacenet2",
        "cloudsen12",
        "caffe",
        "flair2",
        "dynamic_earthnet",
        "biomassters",
        "spacenet7",
        "fotw",
    ),
    "Classification": ("so2sat", "forestnet", "benv2", "treesatai"),
    "Detection (Object/Instance)": ("substation", "everwatch", "nzcattle", "pastis_r"),
    "Under 10m Resolution": ("spacenet2", "treesatai", "flair2", "dynamic_earthnet", "spacenet7"),
    "10m and Above Resolution": (
        "biomassters",
        "so2sat",
        "kuro_siwo",
        "cloudsen12",
        "pastis",
        "benv2",
        "forestnet",
        "burn_scars",
        "caffe",
        "fotw",
    ),
    "RGB/NIR": ("flair2", "treesatai", "dynamic_earthnet", "spacenet7", "fotw"),
    "Core": (
        "kuro_siwo",
        "pastis",
        "burn_scars",
        "cloudsen12",
        "flair2",
        "spacenet7",
        "benv2",
        "treesatai",
        "biomassters",
        "fotw",
        "substation",
        "everwatch",
    ),
}


def _decoder(row: dict) -> str:
    hparams = row.get("hparams") or {}
    if hparams.get("decoder"):
        return str(hparams["decoder"])
    if hparams.get("detector"):
        return str(hparams["detector"])
    return {"knn": "knn", "knn5": "knn", "linear": "linear"}.get(row["protocol"], "linear")


def submission_rows(
    rows: list[dict[str, Any]],
    experiment_name: str,
    protocol: str | None = None,
    label_fraction: float = 1.0,
    dataset_names: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One CSV row per (dataset, init, seed) of the headline metric, in the leaderboard's columns."""
    names = dataset_names or {}
    out = []
    for row in select_protocol(headline_rows(rows), protocol, label_fraction):
        hparams = row.get("hparams") or {}
        percent = round(float(row["label_fraction"]) * 100)
        weight_decay = row.get("weight_decay", hparams.get("weight_decay"))
        tuned = hparams.get("tuned") or {}  # a benchmark's tuned setting (rsbench.contracts.hpo)
        trials = int(tuned.get("trials") or hparams.get("n_trials") or 0)
        out.append(
            {
                "dataset": names.get(row["dataset"], row["dataset"]),
                "Metric": METRIC_NAMES.get(row["metric"], row["metric"]),
                "experiment_name": experiment_name,
                "partition name": f"{percent}%",
                "backbone": row.get("_label") or row["init"],
                "decoder": _decoder(row),
                "batch_size_selection": "HPO" if trials else "fixed",
                "frozen_or_full_ft": "full_ft" if row["protocol"] == "finetune" else "frozen",
                "early_stop_patience": int(tuned.get("patience") or 0),
                "n_trials": trials,
                "Seed": int(row["seed"]),
                "data_percentages": percent,
                "batch_size": hparams.get("batch_size"),
                "weight_decay": weight_decay,
                "lr": hparams.get("lr"),
                "test metric": row["value"],
            }
        )
    if not out:
        raise ConfigError("no result rows to export")
    return sorted(out, key=lambda r: (r["dataset"], r["backbone"], r["Seed"]))


def additional_info(rows: list[dict[str, Any]], comment: str = "N/A") -> dict[str, Any]:
    """additional_info.json: the leaderboard's keys; one 'New model info' entry per backbone."""
    trials = sorted({r["n_trials"] for r in rows})
    return {
        "Paper Link": "N/A",
        "Code Repository Link ": "N/A",
        "License": "N/A",
        "Number of HPO trials": ",".join(str(t) for t in trials),
        "Additional information about submission": (
            "Produced by rsbench: fixed test splits, headline metric per dataset, one row per seed. " + comment
        ),
        "Comments on new models in submission": "N/A",
        "New model info": [
            {"model_display_name": b, "model_size": "N/A", "unique_backbone_key": b}
            for b in sorted({r["backbone"] for r in rows})
        ],
    }


def write_submission(out_dir: Path, rows: list[dict[str, Any]], info: dict[str, Any]) -> Path:
    """The two files of a submission, each written atomically; returns the folder."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if r[k] is None else r[k]) for k in COLUMNS} for r in rows)
    atomic_write_text(out_dir / CSV_FILE, buf.getvalue())
    write_json(out_dir / JSON_FILE, info)
    return out_dir


def _numeric(value: str) -> bool:
    if value == "":
        return True  # an empty cell reads as NaN, which a numeric column holds
    try:
        float(value)
    except ValueError:
        return False
    return True


def check_submission(folder: Path) -> list[str]:
    """What the leaderboard would reject in `folder`, one message per rule broken (empty: accepted)."""
    folder = Path(folder)
    problems = []
    files = sorted(p.name for p in folder.iterdir() if p.name != ".DS_Store") if folder.is_dir() else []
    if files != sorted([CSV_FILE, JSON_FILE]):
        return [f"{folder} must hold exactly {CSV_FILE} and {JSON_FILE} (found: {', '.join(files) or 'nothing'})"]
    with (folder / CSV_FILE).open(newline="") as f:
        table = list(csv.DictReader(f))
    header = list(table[0]) if table else []
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    for column in INTEGER_COLUMNS + FLOAT_COLUMNS:
        if column in header and not all(_numeric(r[column]) for r in table):
            problems.append(f"column '{column}' is not numeric")
    for column in STRING_COLUMNS:
        # pandas reads a column as text unless every value parses as a number
        if column in header and table and all(_numeric(r[column]) and r[column] != "" for r in table):
            problems.append(f"column '{column}' must be text")
    if {r.get("frozen_or_full_ft") for r in table} - {"frozen", "full_ft"}:
        problems.append("frozen_or_full_ft must be 'frozen' or 'full_ft'")
    entries = Counter((r.get("backbone"), r.get("dataset")) for r in table)
    seeds = {key: {r.get("Seed") for r in table if (r.get("backbone"), r.get("dataset")) == key} for key in entries}
    wrong = sorted(f"{b}/{d}: {n}" for (b, d), n in entries.items() if n != REQUIRED_SEEDS)
    if wrong:
        problems.append(f"every backbone/dataset needs {REQUIRED_SEEDS} rows; found {', '.join(wrong)}")
    if any(len(s) != REQUIRED_SEEDS for key, s in seeds.items() if entries[key] == REQUIRED_SEEDS):
        problems.append(f"every backbone/dataset needs {REQUIRED_SEEDS} different seeds")
    datasets = {r.get("dataset") for r in table}
    if not any(set(members) <= datasets for members in DIMENSIONS.values()):
        problems.append(
            "the datasets cover no leaderboard dimension completely (e.g. Classification needs "
            f"{', '.join(DIMENSIONS['Classification'])}); found {', '.join(sorted(map(str, datasets)))}"
        )
    try:
        info = json.loads((folder / JSON_FILE).read_text())
    except json.JSONDecodeError as e:
        return [*problems, f"{JSON_FILE} is not JSON: {e}"]
    bad = [k for k, kind in JSON_KEYS.items() if not isinstance(info.get(k), kind)]
    if bad:
        problems.append(f"{JSON_FILE}: missing or mistyped keys: {', '.join(bad)}")
    return problems
