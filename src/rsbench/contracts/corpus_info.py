"""A built corpus directory: the names of its files and reading its description, corpus.json.

CORPUS_DIR layout (written by `rsbench corpus build`; read by pretraining, `corpus inspect` and the report):
  shards/shard-<N>.tar  WebDataset shards of kept tiles, N zero-padded to 6 digits, one band count per shard
  manifest.parquet      one row per tile window, kept or rejected (with the reason)
  config.yaml           the build configuration
  corpus.json           counts, band groups (their shards, normalization statistics), settings; written last,
                        so its presence marks a finished corpus
  .staging/             the build's resumable intermediate state (not part of a finished corpus)
  progress.json         the running (or last) build's stage, counts, rates and ETA (`rsbench corpus status`)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        return info

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


__all__ = [
    "CONFIG_FILE",
    "CORPUS_JSON",
    "MANIFEST",
    "PROGRESS_JSON",
    "SHARDS_DIR",
    "STAGING_DIR",
    "CorpusInfo",
    "shard_name",
]
