"""Spatial train/test split of georeferenced images (`split: spatial`, `block_m`).

Nearby pixels look alike, so a test tile beside a train tile measures interpolation, not generalisation
(Roberts et al. 2017, "Cross-validation strategies for data with temporal, spatial, hierarchical, or
phylogenetic structure"). Here the images' CRS is cut into square blocks of `block_m` metres on a grid
anchored at the CRS origin (so every image and every seed share it); each image is cut along the block
edges into regions; a seeded draw puts round(test_fraction x blocks) blocks in test; and a region of any
other block lying closer than `block_m` to a test region is dropped (the buffer), so no train region is
within `block_m` of a test region. The same seed gives the same split.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rsbench.errors import ConfigError, DataError
from rsbench.evaluate.datasets.tiling import ArrayWindow, Region


@dataclass(frozen=True)
class Georef:
    """An image's north-up pixel grid: world x = x0 + col * dx, world y = y0 - row * dy (metres)."""

    crs: str
    x0: float
    y0: float
    dx: float
    dy: float


def read_georefs(paths: Sequence[str | Path]) -> list[Georef]:
    """The pixel grids of `paths`; ConfigError naming the file when one has no CRS, a CRS not in metres, a
    rotated grid, or a CRS other than the first image's."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    out: list[Georef] = []
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)  # that is what is checked here
                with rasterio.open(path) as src:
                    crs, t = src.crs, src.transform
        except rasterio.RasterioIOError as e:
            raise DataError(f"cannot read image {path}: {str(e).splitlines()[0]}") from None
        if crs is None:
            raise ConfigError(f"split: spatial needs georeferenced images; {path} has no CRS (use split: random)")
        if not crs.is_projected or abs((crs.linear_units_factor or ("", 0))[1] - 1.0) > 1e-9:
            raise ConfigError(f"split: spatial needs a CRS in metres; {path} is in {crs.to_string()}")
        if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
            raise ConfigError(f"split: spatial needs north-up images; {path} has a rotated or flipped grid")
        if out and crs.to_string() != out[0].crs:
            raise ConfigError(
                f"split: spatial needs one CRS; {path} is in {crs.to_string()}, {paths[0]} in {out[0].crs}"
            )
        out.append(Georef(crs.to_string(), t.c, t.f, t.a, -t.e))
    return out


def footprint(g: Georef, w: ArrayWindow) -> tuple[float, float, float, float]:
    """(x_min, y_min, x_max, y_max) in metres of window `w` of the image with grid `g`."""
    return (g.x0 + w.col * g.dx, g.y0 - (w.row + w.height) * g.dy, g.x0 + (w.col + w.width) * g.dx, g.y0 - w.row * g.dy)


def distance(a: tuple, b: tuple) -> float:
    """Shortest distance between two axis-aligned rectangles (0 when they touch or overlap)."""
    dx = max(0.0, b[0] - a[2], a[0] - b[2])
    dy = max(0.0, b[1] - a[3], a[1] - b[3])
    return math.hypot(dx, dy)


def _edges(start: float, step: float, n: int, block_m: float, sign: int) -> list[int]:
    # Pixel indices (0..n) where world coordinate start + sign * i * step crosses a multiple of block_m.
    lo, hi = sorted((start, start + sign * n * step))
    cuts = [
        round((k * block_m - start) / (sign * step))
        for k in range(math.ceil(lo / block_m), math.floor(hi / block_m) + 1)
    ]
    return sorted({0, n, *(c for c in cuts if 0 < c < n)})


def block_regions(
    shapes: Sequence[tuple[int, int]], georefs: Sequence[Georef], block_m: float
) -> list[tuple[Region, tuple[int, int]]]:
    """Every image cut along the block edges: (region, its block (column, row) on the CRS grid)."""
    out = []
    for scene, ((h, w), g) in enumerate(zip(shapes, georefs)):
        cols, rows = _edges(g.x0, g.dx, w, block_m, 1), _edges(g.y0, g.dy, h, block_m, -1)
        for r0, r1 in zip(rows[:-1], rows[1:]):
            for c0, c1 in zip(cols[:-1], cols[1:]):
                win = ArrayWindow(r0, c0, r1 - r0, c1 - c0)
                x_min, y_min, x_max, y_max = footprint(g, win)
                block = (math.floor((x_min + x_max) / 2 / block_m), math.floor((y_min + y_max) / 2 / block_m))
                out.append((Region(scene, win), block))
    return out


def spatial_split(
    shapes: Sequence[tuple[int, int]],
    georefs: Sequence[Georef],
    block_m: float,
    test_fraction: float,
    seed: int,
) -> tuple[list[Region], list[Region], str, dict]:
    """(train regions, test regions, description, the rows' split_spec) of one seed."""
    cells = block_regions(shapes, georefs, block_m)
    blocks = sorted({b for _, b in cells})
    if len(blocks) < 2:
        raise DataError(f"split: spatial with block_m={block_m} puts all images in one block; use a smaller block_m")
    order = np.random.default_rng([seed, 3]).permutation(len(blocks))  # [seed, 2]: label fractions
    n_test = min(max(int(round(test_fraction * len(blocks))), 1), len(blocks) - 1)
    test_blocks = {blocks[i] for i in order[:n_test]}
    test = [r for r, b in cells if b in test_blocks]
    test_fp = [footprint(georefs[r.scene], r.window) for r in test]
    train, dropped = [], 0
    for r, b in cells:
        if b in test_blocks:
            continue
        fp = footprint(georefs[r.scene], r.window)
        if any(distance(fp, t) < block_m for t in test_fp):
            dropped += 1
        else:
            train.append(r)
    if not train:
        raise DataError(
            f"split: spatial with block_m={block_m}: every train block lies within {block_m} m of a test block; "
            f"use a smaller block_m or more images"
        )
    how = (
        f"spatial: {len(blocks)} blocks of {block_m:g} m, {n_test} test, {dropped} region(s) within "
        f"{block_m:g} m of a test region dropped, test_fraction={test_fraction}"
    )
    spec = {
        "kind": "spatial",
        "block_m": float(block_m),
        "buffer_m": float(block_m),
        "crs": georefs[0].crs,
        "blocks": len(blocks),
        "test_blocks": sorted([list(b) for b in test_blocks]),
        "dropped_regions": dropped,
        "test_fraction": test_fraction,
        "seed": seed,
    }
    return train, test, how, spec
