"""A built corpus directory: the names of its files and reading its description, corpus.json.

CORPUS_DIR layout (written by `rsbench corpus build`; read by pretraining, `corpus inspect` and the report):
  shards/shard-<N>.tar  WebDataset shards of kept tiles, N zero-padded to 6 digits, one band group per shard
  manifest.parquet      one row per tile window, kept or rejected (with the reason)
  config.yaml           the build configuration
  corpus.json           counts, band groups (their shards, normalization statistics), settings; written last,
                        so its presence marks a finished corpus

Band groups (`band_groups` in corpus.json) are keyed by band names and units, `red,green,blue|uint8`; each
entry holds `key, bands (count), tiles, band_names, units, dtype, sensors ({sensor: tiles}), pooled_sensors,
stats, shards`. Corpora built before band groups had names are keyed by band count ("4"); `CorpusInfo.read`
upgrades them (`upgrade_band_groups`), so every reader sees one form. `choose_group` is the one rule for
which group a run trains on.
  .staging/             the build's resumable intermediate state (not part of a finished corpus)
  progress.json         the running (or last) build's stage, counts, rates and ETA (`rsbench corpus status`)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsbench.bands import canonical_or_none
from rsbench.errors import DataError
from rsbench.io import read_json

CORPUS_JSON = "corpus.json"
MANIFEST = "manifest.parquet"
CONFIG_FILE = "config.yaml"
SHARDS_DIR = "shards"
STAGING_DIR = ".staging"
PROGRESS_JSON = "progress.json"
REQUIRED_KEYS = ("band_groups", "shards", "settings")


def shard_name(index: int) -> str:
    """A shard's path relative to the corpus directory, as corpus.json lists it."""
    return f"{SHARDS_DIR}/shard-{index:06d}.tar"


@dataclass(frozen=True)
class CorpusInfo:
    """Paths of one corpus directory, and its corpus.json."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def corpus_json(self) -> Path:
        return self.path / CORPUS_JSON

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def shards(self) -> Path:
        return self.path / SHARDS_DIR

    @property
    def staging(self) -> Path:
        return self.path / STAGING_DIR

    @property
    def progress(self) -> Path:
        return self.path / PROGRESS_JSON

    def is_built(self) -> bool:
        return self.corpus_json.is_file()

    def read(self) -> dict[str, Any]:
        """corpus.json of a finished corpus; DataError when the directory is not one."""
        marker = self.corpus_json
        if not marker.is_file():
            raise DataError(
                f"{self.path} is not an rsbench corpus (no {CORPUS_JSON}; build one with `rsbench corpus build`)"
            )
        try:
            info = read_json(marker)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {marker}: {e}") from None
        if not isinstance(info, dict) or not set(REQUIRED_KEYS) <= info.keys():
            raise DataError(f"{marker} is not an rsbench corpus description (missing {'/'.join(REQUIRED_KEYS)})")
        return upgrade_band_groups(info)

    def shard_paths(self, group: dict[str, Any]) -> list[Path]:
        """The shard files of one band group of corpus.json."""
        return [self.path / name for name in group["shards"]]

    def verify_shards(self, info: dict[str, Any], names: list[str]) -> None:
        """DataError naming the first of `names` that is missing, or whose size differs from the one corpus.json
        recorded (`shard_bytes`; corpora built before it was recorded are checked for presence only): a damaged
        corpus fails before training starts, not in the middle of it."""
        sizes = info.get("shard_bytes") or {}
        for name in names:
            path = self.path / name
            if not path.is_file():
                raise DataError(f"corpus {self.path}: shard {name} is missing; rebuild with --overwrite")
            expected = sizes.get(name)
            if expected is not None and path.stat().st_size != expected:
                raise DataError(
                    f"corpus {self.path}: shard {name} has {path.stat().st_size} bytes, corpus.json recorded "
                    f"{expected} (truncated or replaced); rebuild with --overwrite"
                )


def upgrade_band_groups(info: dict[str, Any]) -> dict[str, Any]:
    """corpus.json in today's form: band groups of older corpora (keyed by band count, without units and
    sensors) get `key`, `units`, `dtype`, `sensors` and `pooled_sensors` (unknown: None / {} / False)."""
    groups = {}
    for name, group in (info.get("band_groups") or {}).items():
        group = {"key": name, "units": None, "dtype": None, "sensors": {}, "pooled_sensors": False, **group}
        group.setdefault("band_names", [f"B{i + 1}" for i in range(int(group.get("bands") or 0))])
        groups[name] = group
    return {**info, "band_groups": groups, "warnings": info.get("warnings") or []}


def describe_group(group: dict[str, Any]) -> str:
    """`red,green,blue (uint8)`: a band group for messages."""
    units = group.get("units")
    return ",".join(group.get("band_names") or []) + (f" ({units})" if units else "")


def _same_bands(have: list[str], wanted: list[str]) -> bool:
    if len(have) != len(wanted):
        return False
    for a, b in zip(have, wanted):
        if a.strip().lower() != b.strip().lower() and (canonical_or_none(a, None) or a) != (
            canonical_or_none(b, None) or b
        ):
            return False
    return True


def parse_group_selector(value: Any) -> int | str | list[str] | None:
    """`bands` of a pretraining config as a group selector: None (the largest group), a band count (4 or
    "4"), a group key ("red,green,blue|uint8") or band names ("red,green,blue" or a list)."""
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        if "|" in text:
            return text
        value = text.split(",")
    names = [str(v).strip() for v in value if str(v).strip()]
    if not names:
        raise ValueError("bands: name at least one band, or give a band count")
    return names


def choose_group(info: dict[str, Any], bands: Any = None, where: str = "the corpus") -> dict[str, Any]:
    """The band group a run trains on: `bands` unset -> the group with the most kept tiles (ties: fewer
    bands, then the key); a band count -> the largest group with that many bands; band names (any
    spelling of rsbench.bands, in order) -> the largest group with those bands in that order; a group key
    -> that group. DataError naming the groups there are."""
    groups = list(upgrade_band_groups(info)["band_groups"].values())
    if not groups:
        raise DataError(f"{where} has no kept tiles")
    selector = parse_group_selector(bands)
    if selector is None:
        matches = groups
    elif isinstance(selector, int):
        matches = [g for g in groups if g["bands"] == selector]
    elif isinstance(selector, str):
        matches = [g for g in groups if g["key"] == selector]
    else:
        matches = [g for g in groups if _same_bands(list(g["band_names"]), selector)]
    if not matches:
        have = "; ".join(f"{describe_group(g)}: {g['tiles']} tiles" for g in groups)
        wanted = f"{selector}-band" if isinstance(selector, int) else f"'{bands}'"
        raise DataError(f"{where} has no {wanted} band group (its groups: {have})")
    return max(matches, key=lambda g: (g["tiles"], -g["bands"], g["key"]))


__all__ = [
    "CONFIG_FILE",
    "CORPUS_JSON",
    "MANIFEST",
    "PROGRESS_JSON",
    "SHARDS_DIR",
    "STAGING_DIR",
    "CorpusInfo",
    "choose_group",
    "describe_group",
    "parse_group_selector",
    "shard_name",
    "upgrade_band_groups",
]
