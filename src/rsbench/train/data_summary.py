"""What a pretraining run trains on, in words and in backbone.json's `data`.

A corpus can hold several band groups (sensors, band sets, units); a run trains on one. The start of
every run says which group, how many tiles it uses and how many of the corpus's tiles it leaves out,
and which sensors the group pools, so a run on the wrong group is caught in its first second, not at
evaluation. The same facts go into `data` of backbone.json, where the report reads them.
"""

from __future__ import annotations

from typing import Any


def corpus_description(dataset, path: str) -> dict[str, Any]:
    """backbone.json `data` of a corpus run: the group trained on (`band_group`, `band_names`, `units`,
    `sensors`), its tiles and the corpus tiles left out."""
    group = dataset.group
    return {
        "kind": "corpus",
        "path": path,
        "bands": dataset.bands,
        "band_names": list(dataset.band_names),
        "band_group": group.get("key"),
        "units": group.get("units"),
        "sensors": dict(group.get("sensors") or {}),
        "tiles": dataset.num_samples,
        "tiles_ignored": dataset.tiles_in_corpus - dataset.num_samples,
    }


def describe_data(description: dict[str, Any], n_samples: int) -> str | None:
    """One line: the corpus band group the run trains on; None for an image folder (the start line names it)."""
    if description.get("kind") != "corpus":
        return None
    units = f" ({description['units']})" if description.get("units") else ""
    sensors = description.get("sensors") or {}
    pooled = f"; {len(sensors)} sensors pooled: {', '.join(sensors)}" if len(sensors) > 1 else ""
    sensor = f"; sensor: {next(iter(sensors))}" if len(sensors) == 1 else pooled
    ignored = description.get("tiles_ignored") or 0
    hint = " (other groups: pick one with --bands)" if ignored else ""
    return (
        f"data: corpus {description.get('path')}, band group {','.join(description.get('band_names') or [])}"
        f"{units}: {description.get('tiles', n_samples)} tiles used, {ignored} ignored{hint}{sensor}"
    )
