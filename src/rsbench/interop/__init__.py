"""Interoperability with the field's leaderboards: rsbench result rows in their formats, and theirs in ours.

- `geobench2`: a GEO-Bench-2 leaderboard submission (`results_and_parameters.csv` + `additional_info.json`)
  and the leaderboard's acceptance rules, checked before anything is submitted;
- `torchgeo_bench`: rows in torchgeo-bench's results CSV schema, written and read back, so published
  results can be shown beside rsbench's as external rows (never mixed into rsbench's statistics).

Works on result rows (rsbench.contracts.results) only; imports no stage and no torch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from rsbench.contracts.results import headline_metric
from rsbench.errors import ConfigError

ROW_GROUP = ("task", "dataset", "protocol", "init", "label_fraction", "seed")


def headline_rows(rows: Iterable[dict]) -> list[dict]:
    """One row per (task, dataset, protocol, init, label fraction, seed): the one with the task's headline
    metric (the row's own `headline` flag, else the task's default headline)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row.get(k) for k in ROW_GROUP)].append(row)
    out = []
    for group in groups.values():
        flagged = [r for r in group if r.get("headline")]
        if flagged:
            out.append(flagged[0])
            continue
        name = headline_metric(group[0]["task"], [r["metric"] for r in group])
        out.append(next(r for r in group if r["metric"] == name))
    return out


def at_fraction(rows: Iterable[dict], label_fraction: float) -> list[dict]:
    """The rows evaluated at `label_fraction` of the training labels."""
    return [r for r in rows if abs(float(r["label_fraction"]) - label_fraction) < 1e-9]


def select_protocol(rows: list[dict], protocol: str | None, label_fraction: float) -> list[dict]:
    """The rows of one protocol at one label fraction; without `protocol`, each dataset must have one."""
    rows = at_fraction(rows, label_fraction)
    if protocol is not None:
        picked = [r for r in rows if r["protocol"] == protocol]
        if not picked:
            found = sorted({r["protocol"] for r in rows})
            raise ConfigError(f"no result rows with protocol '{protocol}' (found: {', '.join(found) or 'none'})")
        return picked
    per_dataset: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        per_dataset[r["dataset"]].add(r["protocol"])
    mixed = {d: sorted(p) for d, p in per_dataset.items() if len(p) > 1}
    if mixed:
        dataset, protocols = next(iter(sorted(mixed.items())))
        raise ConfigError(
            f"dataset '{dataset}' has results of several protocols ({', '.join(protocols)}); choose one with --protocol"
        )
    return rows
