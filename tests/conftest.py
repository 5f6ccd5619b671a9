"""Shared fixtures. The real-data suite fails loudly (never skips) when the shared data is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

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


@pytest.fixture(scope="session")
def dubai_task() -> dict:
    """The shared Dubai segmentation task of the rsbench-mini suite: its classes and its real mask colours (the
    dataset's own classes.json has wrong ones), read from the one place they are kept."""
    suite = yaml.safe_load((REPO_ROOT / "src" / "rsbench" / "suite_files" / "rsbench-mini.yaml").read_text())
    return next(t for t in suite["tasks"] if t["name"] == "dubai_aerial")


@pytest.fixture(scope="session")
def dubai_excerpt(tmp_path_factory: pytest.TempPathFactory, shared_data: Path):
    """`make(name, count, width, height)`: an images/ + masks/ folder of the first `count` real tile_1 pairs,
    each cut to its top-left width x height (lossless PNG, so the masks' colours stay exact)."""
    from PIL import Image

    src = shared_data / "segmentation" / "dubai_aerial" / "tile_1"

    def make(name: str, count: int, width: int, height: int) -> Path:
        root = tmp_path_factory.mktemp(name)
        (root / "images").mkdir()
        (root / "masks").mkdir()
        for i in range(1, count + 1):
            box = (0, 0, width, height)
            Image.open(src / "images" / f"image_part_{i:03d}.jpg").crop(box).save(root / "images" / f"{i:03d}.png")
            Image.open(src / "masks" / f"image_part_{i:03d}.png").crop(box).save(root / "masks" / f"{i:03d}.png")
        return root

    return make


# ---- the real engines (pytest -m engines): PostgreSQL and a one-node SLURM on localhost --------------------
# `.ci/engines.sh start` starts them and writes their environment to ENGINES_ENV; `make test` does that and sets
# RSBENCH_ENGINES=required, so an engine that is not there fails the engine tests instead of skipping them.
ENGINES_ENV = Path(os.environ.get("RSBENCH_ENGINES_STATE", "/var/tmp/rsbench-engines")) / "env"


def _engine_setting(name: str) -> str | None:
    if os.environ.get(name):
        return os.environ[name]
    if ENGINES_ENV.is_file():
        for line in ENGINES_ENV.read_text().splitlines():
            key, _, value = line.partition("=")
            if key == name and value:
                return value
    return None


def _engine_missing(what: str) -> None:
    why = f"{what} is not running: start the engines with `sudo .ci/engines.sh start` (make test does)"
    if os.environ.get("RSBENCH_ENGINES") == "required":
        pytest.fail(f"RSBENCH_ENGINES=required but {why}", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of an empty-able PostgreSQL test database (tests use their own table prefix via fresh DBs)."""
    url = _engine_setting("RSBENCH_TEST_PG_URL")
    if not url:
        _engine_missing("PostgreSQL")
    return url


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A SLURM cluster that answers (sinfo lists a usable node)."""
    import shutil
    import subprocess

    ok = False
    if _engine_setting("RSBENCH_TEST_SLURM") and shutil.which("sinfo"):
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30, check=False)
        ok = done.returncode == 0 and any(s in done.stdout for s in ("idle", "mix", "alloc", "comp"))
    if not ok:
        _engine_missing("SLURM")
