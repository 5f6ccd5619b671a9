"""Per-tile quality metrics and the filters built on them.

All quicklook metrics work on values scaled by the raster's radiometric reference (its p2..p98
range per band, see `raster.radiometric_reference`), so one threshold means the same thing for an
8-bit aerial photo and a 16-bit Landsat scene:

- nodata fraction: invalid pixels (nodata value, GDAL mask, implicit zero fill, NaN) / all pixels;
- saturated fraction (integer rasters): valid pixels with any band at the dtype maximum;
- cloud fraction: valid pixels that are bright in *every* band (scaled value >= cloud_brightness).
  Clouds are bright from the visible to the SWIR; water, vegetation, soil and (with a SWIR band)
  snow are dark in at least one band. A heuristic, documented as such;
- blank: every band's std below `min_std`, or the 8-bit quicklook's entropy below `min_entropy` bits;
- near-duplicates: a perceptual hash (imagehash's pHash, computed for many tiles at once) of the
  32 x 32 quicklook, decided later, globally.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

REJECT_OVERLAPS_EVAL = "overlaps_eval"
REJECT_NODATA = "nodata"
REJECT_SATURATED = "saturated"
REJECT_CLOUD = "cloud"
REJECT_BLANK = "blank"
REJECT_DUPLICATE = "duplicate"
REJECT_MAX_TILES = "max_tiles"
# Order of precedence: a tile is recorded with the first reason that applies.
REASONS = (
    REJECT_OVERLAPS_EVAL,
    REJECT_NODATA,
    REJECT_SATURATED,
    REJECT_CLOUD,
    REJECT_BLANK,
    REJECT_DUPLICATE,
    REJECT_MAX_TILES,
)
QUICKLOOK = 32
FEATURE_DIM = 12


def valid_pixels(array: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """C x N C-contiguous array of the valid pixels.

    Not `array[:, valid]`: numpy returns that one transposed in memory (N x C strides), which makes
    every later per-band reduction an order of magnitude slower.
    """
    flat = array.reshape(array.shape[0], -1)
    return flat if valid.all() else np.compress(valid.ravel(), flat, axis=1)


def percentile_reference(pixels: np.ndarray) -> dict[str, list[float]]:
    """The radiometric reference of C x N valid pixels: each band's p2 and p98 (p98 > p2 always, so a
    constant band still scales); {0, 1} per band when there are no pixels."""
    if pixels.shape[1] == 0:
        return {"low": [0.0] * pixels.shape[0], "high": [1.0] * pixels.shape[0]}
    if pixels.dtype.kind in "iu" and pixels.dtype.itemsize <= 2:
        low, high = counted_percentiles(pixels, [2, 98])
    else:
        low, high = np.percentile(pixels.astype(np.float64), [2, 98], axis=1)
    high = np.where(high > low, high, low + 1.0)
    return {"low": low.tolist(), "high": high.tolist()}


def counted_percentiles(pixels: np.ndarray, percents: list[float]) -> np.ndarray:
    """np.percentile(pixels, percents, axis=1) of C x N integer pixels of at most 16 bits, with numpy's
    default (linear) method, to the last bit: the order statistics are read off each band's cumulative
    value counts instead of partitioning the float64 pixels (5-10x faster on a small raster)."""
    n = pixels.shape[1]
    virtual = (n - 1) * np.true_divide(percents, 100)  # numpy's virtual index and weight
    previous = np.floor(virtual)
    gamma = virtual - previous
    last = virtual >= n - 1
    below = np.where(last, n - 1, previous).astype(np.int64)
    above = np.where(last, n - 1, previous + 1).astype(np.int64)
    out = np.empty((len(percents), pixels.shape[0]))
    for band, values in enumerate(pixels):
        offset = int(values.min())
        cumulative = np.cumsum(np.bincount(values.astype(np.int64) - offset))
        a = (np.searchsorted(cumulative, below, side="right") + offset).astype(np.float64)
        b = (np.searchsorted(cumulative, above, side="right") + offset).astype(np.float64)
        diff = b - a  # numpy's _lerp, both branches
        out[:, band] = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
    return out


def scaled(array: np.ndarray, reference: dict[str, list[float]]) -> np.ndarray:
    """C x H x W float32 in [0, 1]: each band mapped from the raster's p2..p98 range."""
    low = np.asarray(reference["low"], dtype=np.float32)[:, None, None]
    return scale(array, low, np.asarray(reference["high"], dtype=np.float32)[:, None, None])


def scale(array: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """`array` mapped from low..high (float32, broadcast against it: per band, or per window and band) to [0, 1]."""
    return np.clip((array.astype(np.float32) - low) / (high - low), 0.0, 1.0)


def grey_image(scaled_array: np.ndarray) -> np.ndarray:
    """H x W uint8 grey image (N x H x W for N windows): the mean of the scaled bands, pixel by pixel."""
    return np.rint(scaled_array.mean(axis=-3) * 255.0).astype(np.uint8)


def quicklook(scaled_array: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """H x W uint8 grey image (mean of the scaled bands), invalid pixels black."""
    return np.where(valid, grey_image(scaled_array), np.uint8(0))


SCALED_CHUNK_BYTES = 16 * 2**20  # float32 bytes of a strip scaled at once: a wide strip is scaled piece by piece


class ScaledStrip:
    """A strip of windows (C x H x W, one row of the grid) scaled once: its scaled values, grey quicklook and
    all-bands-bright mask, made as the windows ask for them, at most SCALED_CHUNK_BYTES of columns at a time
    (windows come in increasing column order). Each is computed pixel by pixel, so a window's slice of them is
    what the window alone would give, bit for bit; overlapping windows (stride < tile) and many small windows
    then share one pass instead of one each."""

    def __init__(self, strip: np.ndarray, reference: dict[str, list[float]], brightness: float) -> None:
        self.strip, self.reference, self.brightness = strip, reference, brightness
        self.start = self.stop = 0  # the columns scaled now
        self.scaled = self.grey = self.bright = np.empty(0)

    def window(self, x0: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scaled C x H x w, grey H x w before masking, bright H x w) of the columns x0 .. x0 + width."""
        if not self.start <= x0 <= x0 + width <= self.stop:
            bands, height, total = self.strip.shape
            span = max(width, SCALED_CHUNK_BYTES // (4 * bands * height))
            self.start, self.stop = x0, min(total, x0 + span)
            self.scaled = scaled(self.strip[:, :, self.start : self.stop], self.reference)
            self.grey = grey_image(self.scaled)
            self.bright = self.scaled.min(axis=0) >= self.brightness
        cols = slice(x0 - self.start, x0 - self.start + width)
        return self.scaled[:, :, cols], self.grey[:, cols], self.bright[:, cols]


METRICS = ("nodata_fraction", "saturated_fraction", "cloud_fraction", "std", "entropy")


def window_metrics(
    arrays: np.ndarray,
    valid: np.ndarray,
    pieces: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]] | None,
    f: dict[str, Any],
    quicklook: bool,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Metrics of N windows at once: ({name: float64 (N,)}, quicklooks N x H x W uint8 or None).

    arrays N x C x H x W pixels, valid N x H x W; `pieces(which)`: the scaled values (n x C x H x W float32),
    unmasked grey and all-bands-bright mask (n x H x W) of the windows `which`, or None when no filter needs
    them; `quicklook`: dedup or diversity need the quicklooks. Windows the nodata filter rejects are measured
    no further (neither scaled nor measured: mostly-empty scenes stay cheap). A metric that is not computed
    (its filter is off, or the window is rejected for nodata) is NaN, stored as null; so is such a window's
    quicklook, left black. Fractions are exact counts over the valid pixels; std and entropy sum in float64.
    """
    n, pixels = len(arrays), valid[0].size if len(valid) else 0
    counts = valid.reshape(n, -1).sum(axis=1)
    nodata = 1.0 - counts / max(pixels, 1)
    metrics = {name: np.full(n, np.nan) for name in METRICS}
    metrics["nodata_fraction"] = nodata
    looked = np.flatnonzero((counts > 0) & (nodata <= f["max_nodata_fraction"]))
    if not len(looked):
        return metrics, None
    arrays, valid, per_valid = arrays[looked], valid[looked], counts[looked]
    m = len(looked)
    if f["saturation_filter"] and np.issubdtype(arrays.dtype, np.integer):
        top = np.iinfo(arrays.dtype).max
        metrics["saturated_fraction"][looked] = ((arrays >= top).any(axis=1) & valid).reshape(m, -1).sum(
            axis=1
        ) / per_valid
    if pieces is None:
        return metrics, None
    scaled_windows, greys, bright = pieces(looked)
    if f["cloud_filter"]:
        metrics["cloud_fraction"][looked] = (bright & valid).reshape(m, -1).sum(axis=1) / per_valid
    if f["blank_filter"]:
        weight = valid[:, None].astype(np.float32)
        means = np.einsum("nchw,nchw->nc", scaled_windows, weight, dtype=np.float64) / per_valid[:, None]
        d = (scaled_windows - means[:, :, None, None].astype(np.float32)) * weight
        variance = np.einsum("nchw,nchw->nc", d, d, dtype=np.float64) / per_valid[:, None]
        metrics["std"][looked] = np.sqrt(variance).max(axis=1)
    if not (f["blank_filter"] or quicklook):
        return metrics, None
    seen = np.where(valid, greys, np.uint8(0))  # = quicklook(scaled, valid), window by window
    looks = np.zeros((n, *greys.shape[1:]), dtype=np.uint8)
    looks[looked] = seen
    metrics["entropy"][looked] = entropy_bits_many(seen, valid, per_valid)
    return metrics, looks


def entropy_bits_many(looks: np.ndarray, valid: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Shannon entropy (bits) of each window's valid quicklook values: N windows at once."""
    n = len(looks)
    codes = looks.reshape(n, -1).astype(np.int64) + 256 * np.arange(n)[:, None]
    hist = np.bincount(codes[valid.reshape(n, -1)], minlength=256 * n).reshape(n, 256)
    p = hist / np.maximum(counts, 1)[:, None]
    terms = np.where(hist > 0, p * np.log2(np.where(hist > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=1)


def reject_codes(metrics: dict[str, np.ndarray], f: dict[str, Any]) -> np.ndarray:
    """Per window, the index in REASONS of the first per-tile filter that rejects it, or -1 (passes).
    Duplicates and max_tiles are decided later, globally."""
    nf = metrics["nodata_fraction"]
    code = np.full(len(nf), -1, dtype=np.int8)
    with np.errstate(invalid="ignore"):  # NaN (not measured) compares False
        tests = [
            (REJECT_NODATA, (nf > f["max_nodata_fraction"]) | (nf >= 1.0)),
            (REJECT_SATURATED, f["saturation_filter"] & (metrics["saturated_fraction"] > f["max_saturated_fraction"])),
            (REJECT_CLOUD, f["cloud_filter"] & (metrics["cloud_fraction"] > f["max_cloud_fraction"])),
            (
                REJECT_BLANK,
                f["blank_filter"] & ((metrics["std"] < f["min_std"]) | (metrics["entropy"] < f["min_entropy"])),
            ),
        ]
    for reason, rejected in reversed(tests):  # the first reason that applies wins
        code[rejected] = REASONS.index(reason)
    return code


def hash_quicklook(grey: np.ndarray) -> np.ndarray:
    """The 32 x 32 uint8 image that is hashed (PIL's box filter, as imagehash users would resize)."""
    return hash_quicklooks(grey[None])[0]


def hash_quicklooks(greys: np.ndarray) -> np.ndarray:
    """`hash_quicklook` of N H x W grey images at once: N x 32 x 32."""
    h, w = greys.shape[1:]
    if h == w and h % QUICKLOOK == 0 and _power_of_two(h // QUICKLOOK):
        return _box_reduce(greys, h // QUICKLOOK)
    out = np.empty((len(greys), QUICKLOOK, QUICKLOOK), dtype=np.uint8)
    for i, grey in enumerate(greys):
        small = Image.fromarray(grey).resize((QUICKLOOK, QUICKLOOK), Image.BOX)
        out[i] = np.frombuffer(small.tobytes(), dtype=np.uint8).reshape(QUICKLOOK, QUICKLOOK)
    return out


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _box_reduce(greys: np.ndarray, n: int) -> np.ndarray:
    """PIL's BOX resize of N images by an integer factor n that is a power of two, to the last bit, without PIL (a
    tenth of its time on a 64 px tile). PIL filters rows, rounds to uint8, then columns, rounding half up each
    time; with n a power of two its fixed-point weights 1/n are exact, so each pass is (sum + n/2) // n.
    tests/test_corpus_filters.py checks it against PIL."""
    count, h, w = greys.shape
    rows = (greys.reshape(count, h, w // n, n).sum(axis=3, dtype=np.int32) + n // 2) // n
    cols = (rows.reshape(count, h // n, n, w // n).sum(axis=2) + n // 2) // n
    return cols.astype(np.uint8)


# Rows 0-7 of the unnormalised DCT-II matrix (scipy.fftpack.dct's convention, which imagehash uses).
_DCT_LOW = 2.0 * np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(QUICKLOOK)[None, :] + 1) / (2 * QUICKLOOK))


def perceptual_hashes(smalls: np.ndarray) -> np.ndarray:
    """64-bit pHashes of N 32 x 32 quicklooks (N, 32, 32) as signed int64 (what Parquet stores natively).

    imagehash.phash's algorithm (the 8 x 8 lowest 2-D DCT frequencies, each bit = above their median),
    as two matrix products over the whole batch: one call per raster part instead of one per tile,
    and no scipy/pandas import. tests/test_corpus_filters.py checks it against imagehash itself.
    """
    low = (_DCT_LOW @ smalls.astype(np.float64) @ _DCT_LOW.T).reshape(len(smalls), 64)
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">i8").ravel().astype(np.int64)


def features(grey: np.ndarray, valid: np.ndarray, entropy: float) -> np.ndarray:
    """Cheap, band-count independent tile descriptor for diversity k-means (FEATURE_DIM floats).

    Brightness, contrast, entropy, edge density and an 8-bin histogram of the quicklook: enough to
    separate water, fields, forest, urban texture and cloud without any network.
    """
    g = grey.astype(np.float32) / 255.0
    v = g[valid]
    grad = (np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean()) / 2.0
    hist = np.bincount(np.minimum((v * 8).astype(np.int64), 7), minlength=8) / max(1, v.size)
    return np.concatenate([[v.mean(), v.std(), entropy / 8.0, grad], hist]).astype(np.float32)


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & 0xFFFF_FFFF_FFFF_FFFF).bit_count()
