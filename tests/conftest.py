"""Shared fixtures. The real-data suite fails loudly (never skips) when the shared data is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RSBENCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


def pytest_configure(config: pytest.Config) -> None:
    if not (SHARED_DATA / "rasters").is_dir():
        raise pytest.UsageError(
            f"real test data not found at {SHARED_DATA} (set RSBENCH_SHARED_DATA to the shared/data folder)"
        )
    # Tests never download: any accidental hub access fails fast instead of hanging.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TORCH_HOME", str(REPO_ROOT / ".venv" / "torch-home-empty"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def rasters_dir(shared_data: Path) -> Path:
    return shared_data / "rasters"


@pytest.fixture(scope="session")
def eurosat_dir(shared_data: Path) -> Path:
    return shared_data / "classification" / "eurosat_rgb"


def _eurosat_sample(root: Path, eurosat_dir: Path, per_class: int) -> Path:
    for cls in sorted(p for p in eurosat_dir.iterdir() if p.is_dir()):
        (root / cls.name).mkdir()
        for f in sorted(cls.iterdir())[:per_class]:
            (root / cls.name / f.name).symlink_to(f)
    return root


@pytest.fixture(scope="session")
def eurosat_small(tmp_path_factory: pytest.TempPathFactory, eurosat_dir: Path) -> Path:
    """A 20-per-class ImageFolder of real EuroSAT files (symlinks), for fast tests."""
    return _eurosat_sample(tmp_path_factory.mktemp("eurosat_small"), eurosat_dir, 20)


@pytest.fixture(scope="session")
def eurosat_tiny(tmp_path_factory: pytest.TempPathFactory, eurosat_dir: Path) -> Path:
    """A 5-per-class ImageFolder of real EuroSAT files (symlinks), for end-to-end command tests."""
    return _eurosat_sample(tmp_path_factory.mktemp("eurosat_tiny"), eurosat_dir, 5)
