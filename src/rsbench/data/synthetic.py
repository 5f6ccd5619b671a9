"""Procedural multispectral scenes and chips, written as real GeoTIFFs, for the offline quickstart.

Every land-cover class has a spectral signature *and* a procedural texture. Each sample also gets
a random illumination (gain, per-band tint, haze) and sensor noise, so that the mean colour alone
is an unreliable cue and a model has to learn structure. Scenes and classification chips share
the same renderers, so features pretrained on the scenes transfer to the chips.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

from rsbench.errors import ConfigError

BAND_NAMES = ("blue", "green", "red", "nir")
Seed = int | Sequence[int]

# Secondary materials mixed into textures (surface reflectance x 10000, B/G/R/NIR).
_SOIL = np.array([900, 1200, 1600, 2100], np.float64)
_ASPHALT = np.array([650, 700, 750, 850], np.float64)
_GRASS = np.array([400, 700, 500, 2600], np.float64)
# Atmospheric path radiance scatters short wavelengths most, so haze brightens blue most.
_HAZE = np.array([1.0, 0.7, 0.45, 0.2])


def _noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered white noise (FFT blur with std `sigma` px).

    The field is drawn on a canvas of at least 4 sigma so that small chips show the same
    spatial statistics as big scenes instead of one wrapped-around period.
    """
    ch, cw = max(h, int(4 * sigma) + 1), max(w, int(4 * sigma) + 1)
    white = rng.standard_normal((ch, cw))
    fy = np.fft.fftfreq(ch)[:, None]
    fx = np.fft.rfftfreq(cw)[None, :]
    field = np.fft.irfft2(np.fft.rfft2(white) * np.exp(-2.0 * (np.pi * sigma) ** 2 * (fx**2 + fy**2)), s=(ch, cw))
    field = (field - field.mean()) / (field.std() + 1e-12)
    return field[:h, :w]


def _rotated_coords(rng: np.random.Generator, h: int, w: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by `theta`, with a random offset so patterns do not all start at (0, 0)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    y += rng.uniform(0, 1000)
    x += rng.uniform(0, 1000)
    c, s = np.cos(theta), np.sin(theta)
    return x * c + y * s, -x * s + y * c


def _water(rng, h, w, sig):
    # Turbidity drifts slowly and mostly in the visible; wind ripples are a faint oriented pattern.
    turbidity = _noise(rng, h, w, 30) * rng.uniform(0.03, 0.08)
    u, _ = _rotated_coords(rng, h, w, rng.uniform(0, np.pi))
    ripples = np.sin(2 * np.pi * u / rng.uniform(5, 12)) * (1 + 0.5 * _noise(rng, h, w, 12))
    field = turbidity[None] * np.array([0.8, 1.0, 1.4, 0.4])[:, None, None] + rng.uniform(0.01, 0.03) * ripples[None]
    return sig[:, None, None] * (1 + field)


def _forest(rng, h, w, sig):
    # Stand density (low frequency) trades red for NIR; crowns and their shadows (medium) modulate all bands.
    density = _noise(rng, h, w, 10)
    crowns = _noise(rng, h, w, 1.6)
    out = sig[:, None, None] * (1 + 0.22 * crowns[None])
    out *= 1 + np.array([-0.08, -0.05, -0.12, 0.10])[:, None, None] * density[None]
    return out


def _cropland(rng, h, w, sig):
    # Rectangular parcels along a random grid orientation; each parcel has its own green-up
    # fraction and row direction, rows have a random period, and grassy margins separate parcels.
    u, v = _rotated_coords(rng, h, w, rng.uniform(0, np.pi))
    pw, pl = rng.uniform(20, 60), rng.uniform(25, 80)
    ku, kv = np.floor(u / pw).astype(np.int64) % 32, np.floor(v / pl).astype(np.int64) % 32
    green = rng.uniform(0.1, 1.0, (32, 32))[ku, kv]
    along_u = rng.random((32, 32))[ku, kv] < 0.5
    period = rng.uniform(3, 8)
    rows = 0.5 + 0.5 * np.sin(2 * np.pi * np.where(along_u, v, u) / period)
    veg = green * (0.65 + 0.35 * rows)
    out = _SOIL[:, None, None] * (1 - veg) + sig[:, None, None] * veg
    margin = ((u % pw) < 1.5) | ((v % pl) < 1.5)
    out[:, margin] = _GRASS[:, None]
    return out


def _urban(rng, h, w, sig):
    # A rotated street grid: dark asphalt streets around blocks, each block split into lots whose
    # roofs differ in brightness; narrow gaps between lots are yards (darker, some vegetation).
    u, v = _rotated_coords(rng, h, w, rng.uniform(0, np.pi / 2))
    block, street = rng.uniform(14, 30), rng.uniform(2, 4)
    nlots = int(rng.integers(1, 4))
    lot = (block - street) / nlots
    fu, fv = u % block - street, v % block - street
    lu = np.floor(u / block).astype(np.int64) * 4 + np.floor(np.maximum(fu, 0) / lot).astype(np.int64)
    lv = np.floor(v / block).astype(np.int64) * 4 + np.floor(np.maximum(fv, 0) / lot).astype(np.int64)
    roof = rng.uniform(0.7, 1.4, (64, 64))[lu % 64, lv % 64]
    out = sig[:, None, None] * roof[None]
    yard = ((fu % lot) < 1.0) | ((fv % lot) < 1.0)
    out[:, yard] = (0.5 * _ASPHALT + 0.5 * _GRASS)[:, None]
    out[:, (fu < 0) | (fv < 0)] = _ASPHALT[:, None]
    return out


def _bare_soil(rng, h, w, sig):
    # Fine grain (clods, stones) on top of broad moisture patches (wet soil is darker).
    grain = _noise(rng, h, w, 0.6)
    moisture = _noise(rng, h, w, 20)
    return sig[:, None, None] * ((1 + 0.12 * grain) * (1 - 0.07 * moisture))[None]


@dataclass(frozen=True)
class LandCoverClass:
    name: str
    signature: tuple[int, int, int, int]  # dominant material, B/G/R/NIR reflectance x 10000
    texture: Callable[[np.random.Generator, int, int, np.ndarray], np.ndarray]


LAND_COVER_CLASSES: tuple[LandCoverClass, ...] = (
    LandCoverClass("water", (650, 600, 380, 220), _water),
    LandCoverClass("forest", (320, 520, 300, 3100), _forest),
    LandCoverClass("cropland", (400, 700, 420, 3400), _cropland),
    LandCoverClass("urban", (1350, 1400, 1450, 1650), _urban),
    LandCoverClass("bare_soil", (1050, 1350, 1800, 2300), _bare_soil),
)
CLASS_NAMES = tuple(c.name for c in LAND_COVER_CLASSES)


def _render_class(rng: np.random.Generator, cls: LandCoverClass, h: int, w: int) -> np.ndarray:
    # Per-sample material variation (species, crop, roof type) jitters each band independently.
    sig = np.asarray(cls.signature, np.float64) * np.exp(rng.normal(0.0, 0.2, 4))
    return cls.texture(rng, h, w, sig)


def _acquire(rng: np.random.Generator, reflectance: np.ndarray) -> np.ndarray:
    """Illumination, calibration tint, haze and sensor noise; returns uint16 DN that are never 0 (nodata)."""
    gain = rng.uniform(0.7, 1.3) * np.exp(rng.normal(0.0, 0.12, 4))
    haze = rng.uniform(0, 250) * _HAZE
    img = reflectance * gain[:, None, None] + haze[:, None, None]
    img += rng.standard_normal(img.shape) * (20.0 + 0.01 * img)
    return np.clip(np.rint(img), 1, 65535).astype(np.uint16)


def _footprint(rng: np.random.Generator, size: int, border: int, collar: bool) -> np.ndarray:
    """Valid-data mask: a `border` px frame of nodata plus, optionally, a slanted jagged collar on one
    side, like the edge of a rotated satellite swath cut into a map-aligned tile."""
    valid = np.zeros((size, size), bool)
    valid[border : size - border, border : size - border] = True
    if collar:
        x = np.arange(size)
        slope = rng.uniform(0.05, 0.2) * rng.choice([-1, 1])
        depth = border + np.floor((x * slope if slope > 0 else (x - size) * slope) / 3) * 3  # stair-stepped
        cut = np.arange(size)[:, None] < depth[None, :]
        valid &= ~np.rot90(cut, k=int(rng.integers(4)))
    return valid


def render_scene(
    size: int = 512, seed: Seed = 0, nodata_border: int = 16, collar: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """A (4, size, size) uint16 scene and its (size, size) int8 class map (-1 = nodata)."""
    # The frame may take at most half of each side, so that the collar cannot consume the whole scene.
    if size < 16 or not 0 <= 4 * nodata_border <= size:
        raise ConfigError(
            f"synthetic scene needs size >= 16 and 0 <= nodata_border <= size/4 (got {size}, {nodata_border})"
        )
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 16))
    seeds = rng.uniform(0, size, (n, 2))
    # Domain-warped Voronoi: region borders meander like real field and shore boundaries.
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    warp = 0.05 * size
    y += warp * _noise(rng, size, size, size / 12)
    x += warp * _noise(rng, size, size, size / 12)
    dist2 = (y[None] - seeds[:, 0, None, None]) ** 2 + (x[None] - seeds[:, 1, None, None]) ** 2
    region = np.argmin(dist2, axis=0)
    # Cycle through a permutation so that every class appears whenever n >= number of classes.
    region_class = rng.permutation(np.resize(rng.permutation(len(LAND_COVER_CLASSES)), n))

    refl = np.empty((4, size, size))
    for k in range(n):
        ys, xs = np.nonzero(region == k)
        if ys.size == 0:
            continue
        y0, x0 = ys.min(), xs.min()
        patch = _render_class(rng, LAND_COVER_CLASSES[region_class[k]], ys.max() - y0 + 1, xs.max() - x0 + 1)
        refl[:, ys, xs] = patch[:, ys - y0, xs - x0]

    img = _acquire(rng, refl)
    valid = _footprint(rng, size, nodata_border, collar)
    img[:, ~valid] = 0
    class_map = np.where(valid, region_class[region], -1).astype(np.int8)
    return img, class_map


def render_chip(class_name: str, size: int = 32, seed: Seed = 0) -> np.ndarray:
    """A (4, size, size) uint16 chip entirely of one land-cover class."""
    if class_name not in CLASS_NAMES:
        raise ConfigError(f"unknown land-cover class {class_name!r} (choose from {', '.join(CLASS_NAMES)})")
    rng = np.random.default_rng(seed)
    cls = LAND_COVER_CLASSES[CLASS_NAMES.index(class_name)]
    return _acquire(rng, _render_class(rng, cls, size, size))


def _from_origin(west: float, north: float, gsd: float) -> Affine:
    # Same as rasterio.transform.from_origin, which warns (PendingDeprecationWarning) on every call with affine>=3.
    return Affine(gsd, 0.0, west, 0.0, -gsd, north)


def _write_geotiff(path: str | os.PathLike, img: np.ndarray, crs: str, transform, tags: dict, tiled: bool) -> Path:
    """Write a deflate-compressed GeoTIFF atomically (temp file beside it, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # GDAL creates the temp file itself (not mkstemp), so it gets umask permissions rather than 0600.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    profile = dict(
        driver="GTiff",
        width=img.shape[2],
        height=img.shape[1],
        count=img.shape[0],
        dtype="uint16",
        crs=crs,
        transform=transform,
        nodata=0,
        compress="deflate",
        predictor=2,
    )
    if tiled:
        # Tiles must be multiples of 16; at least 2x2 of them, since a single image-sized tile
        # is not recognisably tiled (rasterio reports it as a strip layout).
        block = min(256, max(16, -(-max(img.shape[1:]) // 32) * 16))
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(img)
            dst.descriptions = BAND_NAMES
            dst.update_tags(**{k: str(v) for k, v in tags.items()})
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def generate_scene(
    path: str | os.PathLike,
    size: int = 512,
    seed: Seed = 0,
    nodata_border: int = 16,
    crs: str = "EPSG:32631",
    origin: tuple[float, float] = (500000, 5700000),
    gsd: float = 10.0,
    collar: bool = True,
) -> Path:
    """Write one 4-band uint16 scene (land-cover mosaic with a nodata footprint edge); `origin` is the
    map coordinate of the top-left corner."""
    img, _ = render_scene(size, seed, nodata_border, collar)
    transform = _from_origin(origin[0], origin[1], gsd)
    tags = {"generator": "rsbench.synthetic", "seed": seed, "classes": ",".join(CLASS_NAMES)}
    return _write_geotiff(path, img, crs, transform, tags, tiled=True)


def generate_scenes(
    out_dir: str | os.PathLike, n: int = 4, size: int = 512, seed: int = 0, gsd: float = 10.0, nodata_border: int = 16
) -> list[Path]:
    """`n` scenes out_dir/scene_<i>.tif, laid side by side west to east like adjacent tiles."""
    out_dir = Path(out_dir)
    return [
        generate_scene(
            out_dir / f"scene_{i:03d}.tif",
            size=size,
            seed=(seed, i),
            nodata_border=nodata_border,
            origin=(500000 + i * size * gsd, 5700000),
            gsd=gsd,
        )
        for i in range(n)
    ]


def generate_classification_set(
    out_dir: str | os.PathLike, per_class: int = 60, size: int = 32, seed: int = 0, gsd: float = 10.0
) -> Path:
    """An ImageFolder out_dir/<class>/<class>_<i>.tif of single-class 4-band GeoTIFF chips.

    Chip i of a class depends only on (seed, class, i), so a larger `per_class` extends a smaller set.
    """
    out_dir = Path(out_dir)
    for c, cls in enumerate(LAND_COVER_CLASSES):
        for i in range(per_class):
            img = render_chip(cls.name, size, seed=(seed, c, i))
            # Chips sit on a grid south of the scenes, one row per class, so no two overlap.
            transform = _from_origin(500000 + i * size * gsd, 5600000 - c * size * gsd, gsd)
            tags = {"generator": "rsbench.synthetic", "seed": seed, "class": cls.name}
            # A chip is a single block anyway, so tiling would only add overhead.
            path = out_dir / cls.name / f"{cls.name}_{i:04d}.tif"
            _write_geotiff(path, img, "EPSG:32631", transform, tags, tiled=False)
    return out_dir
