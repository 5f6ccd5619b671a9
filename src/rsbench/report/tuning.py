"""Tuned fine-tuning in the report, from the saved trial records (the Optuna studies in the results store).

Per study (init x task x protocol x label fraction): the chosen setting and its validation score beside the
default's (trial 0 is always the default setting), the trial curve (best-so-far validation score against
the trial number), and per leaderboard how far tuning moves the ranking of inits: Kendall's tau between the
ranking by the default's validation score and by the tuned one (1: unchanged, -1: reversed), with each init's
two ranks. Everything here is recomputed from the trial records alone; the test split is not involved.

Contamination findings (`rsbench corpus check` JSON files of a benchmark) become the data section's
near-duplicate table per dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rsbench.contracts.hpo import best_so_far
from rsbench.report.tables import Table


def _completed(study: dict) -> list[dict]:
    return [t for t in study["trials"] if t["state"] == "complete" and t["value"] is not None]


def chosen(study: dict) -> dict[str, Any] | None:
    """Default (trial 0) and best trial of a study; ties go to the earlier trial, as the benchmark picks."""
    done = _completed(study)
    if not done:
        return None
    best = max(done, key=lambda t: (t["value"], -t["number"]))
    default = next((t for t in done if not t.get("overrides")), None)
    return {"best": best, "default": default, "trials": len(done)}


def _board(study: dict) -> tuple:
    return (str(study.get("task")), str(study.get("protocol")), study.get("fraction"))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "–" if value is None else str(value)


def settings_table(studies: Sequence[dict]) -> Table:
    rows = []
    for s in sorted(studies, key=lambda s: (*map(str, _board(s)), str(s.get("init")))):
        pick = chosen(s)
        if pick is None:
            continue
        best, default = pick["best"], pick["default"]
        task, protocol, fraction = _board(s)
        setting = best.get("setting") or {}
        rows.append(
            [
                str(s.get("init")),
                task,
                protocol + ("" if fraction is None else f" · {fraction:g}"),
                f"{pick['trials']}/{(s.get('hpo') or {}).get('trials', '?')}",
                str(best["number"]),
                ", ".join(f"{k}={_fmt(v)}" for k, v in setting.items()) or "–",
                _fmt(default["value"] if default else None),
                _fmt(best["value"]),
            ]
        )
    return Table(
        "tuning-settings",
        "Tuned settings per init and task",
        ["Init", "Task", "Protocol", "Trials", "Best trial", "Chosen setting", "Val (default)", "Val (tuned)"],
        rows,
        "Validation scores on a split carved from the train split (never the test split); trial 0 is the "
        "protocol's default setting. Trials: completed / budget (the same for every init).",
        numeric={3, 4, 6, 7},
    )


def ranking_table(studies: Sequence[dict]) -> Table | None:
    """Per leaderboard: Kendall's tau between the default's and the tuned ranking of inits (validation scores)."""
    from scipy.stats import kendalltau

    boards: dict[tuple, list[tuple[str, float, float]]] = {}
    for s in studies:
        pick = chosen(s)
        if pick is None or pick["default"] is None:
            continue
        boards.setdefault(_board(s), []).append((str(s.get("init")), pick["default"]["value"], pick["best"]["value"]))
    rows = []
    for (task, protocol, fraction), entries in sorted(boards.items(), key=lambda kv: tuple(map(str, kv[0]))):
        if len(entries) < 2:
            continue
        names = [e[0] for e in entries]
        before, after = ranks([e[1] for e in entries]), ranks([e[2] for e in entries])
        tau = kendalltau([e[1] for e in entries], [e[2] for e in entries]).statistic
        moves = ", ".join(f"{n} {b:g}→{a:g}" for n, b, a in sorted(zip(names, before, after), key=lambda x: x[2]))
        rows.append(
            [task, protocol + ("" if fraction is None else f" · {fraction:g}"), str(len(names)), _fmt(tau), moves]
        )
    if not rows:
        return None
    return Table(
        "tuning-ranking",
        "How far tuning moves the ranking of inits",
        ["Task", "Protocol", "Inits", "Kendall tau", "Rank default → tuned"],
        rows,
        "Kendall's tau between the ranking by the default setting's and by the tuned setting's validation "
        "score (1: same order, -1: reversed); rank 1 is best, ties share the mean rank.",
        numeric={2, 3},
    )


def ranks(values: Sequence[float]) -> list[float]:
    """Rank 1 = highest; ties share their mean rank."""
    from scipy.stats import rankdata

    return [float(r) for r in rankdata([-v for v in values], method="average")]


def curve_plot(studies: Sequence[dict]) -> str | None:
    """Best-so-far validation score against the trial number, one line per study."""
    from matplotlib.figure import Figure

    from rsbench.report.plots import to_data_uri

    lines = [(s, best_so_far([t["value"] if t["state"] == "complete" else None for t in s["trials"]])) for s in studies]
    lines = [(s, c) for s, c in lines if any(v is not None for v in c)]
    if not lines:
        return None
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.subplots()
    for s, curve in lines:
        task, protocol, fraction = _board(s)
        frac = "" if fraction is None else f" {fraction:g}"
        ax.step(range(len(curve)), curve, where="post", label=f"{s.get('init')} · {task} · {protocol}{frac}")
    ax.set_xlabel("trial (0 = default setting)")
    ax.set_ylabel("best validation score so far")
    ax.legend(fontsize=7, frameon=False)
    return to_data_uri(fig)


def tuning_section(studies: Sequence[dict]) -> dict | None:
    if not studies:
        return None
    return {"settings": settings_table(studies), "ranking": ranking_table(studies), "curve": curve_plot(studies)}


def contamination_table(findings: Sequence[dict]) -> Table | None:
    rows = []
    for f in findings:
        for d in f.get("datasets", []):
            dups = d.get("duplicates") or []
            closest = min(dups, key=lambda x: x["distance"], default=None)
            rows.append(
                [
                    str(f.get("corpus", "")),
                    str(d["data"]),
                    str(d["images"]),
                    str(len(dups)),
                    f"{closest['image']} ~ {closest['tile']} ({closest['distance']})" if closest else "–",
                ]
            )
    if not rows:
        return None
    return Table(
        "contamination",
        "Near-duplicates of pretraining tiles in the task data",
        ["Corpus", "Dataset", "Images", "Near-duplicates", "Closest"],
        rows,
        "Perceptual-hash check of every task image (train and test) against the corpus tiles "
        "(`rsbench corpus check`); distance in bits of 64.",
        numeric={2, 3},
    )
