"""Content-level contamination check: is a downstream image (train or test) also a pretraining tile?

The corpus `--exclude` guard compares footprints, but downstream images often have none (JPEG/PNG chips,
stripped GeoTIFFs). This check compares content instead: the perceptual hash (pHash) that the corpus build
already stores for every tile in the manifest, against the same hash of every downstream image, computed
the same way (each band scaled by the image's own p2..p98 range, the grey mean of the bands, a 32 x 32
box-filtered quicklook; see rsbench.corpus.filters). pHash keeps only the signs of the lowest 2-D DCT
frequencies around their median, so resizing, re-encoding and a change of contrast move few bits, while
two different scenes differ in about half of the 64.

Where an image is larger than a tile it is also hashed window by window, in tile-size windows at half a
tile's stride after resampling to the corpus's ground sampling distance when both are known, so an image
that was cut into several corpus tiles is still found. Each image is reported with its closest kept tile.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning

from rsbench.contracts.corpus_info import MANIFEST
from rsbench.corpus import filters as F
from rsbench.data.images import list_images
from rsbench.errors import DataError

# Folders that hold labels, not imagery, in the layouts rsbench reads (masks/, annotations/, labels/).
LABEL_FOLDERS = frozenset({"masks", "mask", "labels", "annotations", "gt"})
# Default largest Hamming distance (of 64 bits) that counts as the same content. Chosen by measurement on
# the shared data (tests/test_corpus_contamination.py): copies resized 2x and re-encoded as JPEG land at
# 0-6 bits; the closest pair of unrelated EuroSAT images and corpus tiles of the shared rasters is further
# than this.
DEFAULT_MAX_DISTANCE = 8


@dataclass(frozen=True)
class CorpusHashes:
    keys: list[str]
    hashes: np.ndarray  # uint64, one per kept tile with a stored hash
    tile_size: int | None
    gsd: float | None


def corpus_hashes(corpus_dir: Path) -> CorpusHashes:
    """The stored pHash of every kept tile, read column by column, row group by row group."""
    path = Path(corpus_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{corpus_dir} is not a corpus: {MANIFEST} not found")
    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"cannot read {path}: {e}") from None
    keys: list[str] = []
    hashes: list[int] = []
    sizes: set[int] = set()
    gsds: set[float] = set()
    for batch in parquet.iter_batches(columns=["key", "phash", "kept", "width", "gsd"]):
        cols = batch.to_pydict()
        for key, phash, kept, width, gsd in zip(cols["key"], cols["phash"], cols["kept"], cols["width"], cols["gsd"]):
            if not kept or phash is None:
                continue
            keys.append(key)
            hashes.append(int(phash, 16))
            sizes.add(int(width))
            if gsd is not None:
                gsds.add(round(float(gsd), 6))
    if not keys:
        raise DataError(
            f"corpus {corpus_dir} stores no tile hashes (it was built with --no-dedup or kept no tile); "
            "rebuild it with the duplicate filter on to check it for contamination"
        )
    return CorpusHashes(
        keys,
        np.asarray(hashes, dtype=np.uint64),
        sizes.pop() if len(sizes) == 1 else None,
        gsds.pop() if len(gsds) == 1 else None,
    )


def find_images(data: Path) -> list[Path]:
    """Image files below `data` (or `data` itself), label folders left out, in a stable order."""
    data = Path(data)
    if data.is_file():
        return [data]
    if not data.exists():
        raise DataError(f"downstream data {data} not found")
    found = [
        p
        for p in list_images(data)
        if not LABEL_FOLDERS.intersection(part.lower() for part in p.relative_to(data).parts[:-1])
    ]
    if not found:
        raise DataError(f"no images outside label folders ({', '.join(sorted(LABEL_FOLDERS))}) in {data}")
    return found


def _hash_of(array: np.ndarray) -> int:
    """pHash of a C x H x W array: bands scaled by their own p2..p98 range, as the corpus scales a raster."""
    scaled = F.scaled(array, F.percentile_reference(array.reshape(array.shape[0], -1)))
    grey = F.quicklook(scaled, np.ones(array.shape[1:], dtype=bool))
    small = F.hash_quicklook(grey)
    return int(F.perceptual_hashes(small[None])[0]) & 0xFFFF_FFFF_FFFF_FFFF


def _metres_per_pixel(src) -> float | None:
    if src.crs is None or not src.crs.is_projected or src.transform.is_identity:
        return None
    return float(abs(src.transform.a))


def image_hashes(path: Path, tile_size: int | None, corpus_gsd: float | None) -> Iterator[int]:
    """pHashes of the whole image and, when it is larger than a corpus tile, of tile-size windows."""
    try:
        with warnings.catch_warnings():
            # JPEG/PNG chips have no georeferencing; that is expected here, not worth a warning.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                gsd = _metres_per_pixel(src)
                scale = gsd / corpus_gsd if gsd and corpus_gsd else 1.0
                height, width = max(1, round(src.height * scale)), max(1, round(src.width * scale))
                array = src.read(out_shape=(src.count, height, width), resampling=Resampling.bilinear)
    except rasterio.errors.RasterioIOError as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    yield _hash_of(array)
    if tile_size is None or max(height, width) < 1.5 * tile_size:
        return
    step = max(1, tile_size // 2)
    for row in range(0, max(1, height - tile_size + 1), step):
        for col in range(0, max(1, width - tile_size + 1), step):
            yield _hash_of(array[:, row : row + tile_size, col : col + tile_size])


def nearest_tiles(queries: np.ndarray, hashes: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(index, Hamming distance) of the closest corpus hash for each query hash, in chunks of queries."""
    index = np.empty(len(queries), dtype=np.int64)
    distance = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        d = np.bitwise_count(queries[start : start + chunk, None] ^ hashes[None, :])
        index[start : start + chunk] = d.argmin(axis=1)
        distance[start : start + chunk] = d.min(axis=1)
    return index, distance


def check_contamination(
    corpus_dir: Path,
    datasets: Iterable[Path],
    max_distance: int = DEFAULT_MAX_DISTANCE,
    on_start: Callable[[int], None] | None = None,
    on_image: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """{"corpus", "max_distance", "tile_size", "gsd", "datasets": [{"data", "images", "duplicates": [
    {"image", "tile", "distance"}]}]}: for every downstream image, its closest kept tile when that is
    within `max_distance` bits. Progress: `on_start(number of images)` once they are listed, then
    `on_image()` after each image."""
    corpus = corpus_hashes(corpus_dir)
    listed = [(Path(data), find_images(data)) for data in datasets]
    if on_start is not None:
        on_start(sum(len(images) for _, images in listed))
    report: dict[str, Any] = {
        "corpus": str(corpus_dir),
        "max_distance": int(max_distance),
        "tile_size": corpus.tile_size,
        "gsd": corpus.gsd,
        "datasets": [],
    }
    for data, images in listed:
        duplicates = []
        for path in images:
            queries = np.fromiter(image_hashes(path, corpus.tile_size, corpus.gsd), dtype=np.uint64)
            index, distance = nearest_tiles(queries, corpus.hashes)
            best = int(distance.argmin())
            if distance[best] <= max_distance:
                duplicates.append(
                    {"image": str(path), "tile": corpus.keys[index[best]], "distance": int(distance[best])}
                )
            if on_image is not None:
                on_image()
        report["datasets"].append({"data": str(data), "images": len(images), "duplicates": duplicates})
    return report
