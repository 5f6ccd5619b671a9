"""The canonical band vocabulary: one name per band ('blue', 'red', 'nir', 'swir1', ...) for every spelling.

`canonical_band` turns the many spellings of a band into one name of `CANONICAL_BANDS`: colour words
('red', 'R', 'Red', 'near infrared', 'SWIR 1', STAC common names such as 'swir16'), descriptions that
contain such a word ('B4_red', 'Band 4 (red)', 'red (B4)': the word decides), and bare band numbers
('B04', 'B2', 'band 4', '8A'), which mean different bands on different sensors (Sentinel-2 and
Landsat 8 B4 are red, Landsat 7 B4 is near-infrared) and so need a `sensor`.

`pick_bands` finds wanted bands (by any spelling) among a raster's, a corpus's or a dataset's bands.
Every stage that matches bands by name uses this module (corpus band groups, teacher and ImageNet band
mapping, evaluation), so a band is spelled one way everywhere. Torch-free.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rsbench.errors import ConfigError

CANONICAL_BANDS = (
    "coastal",
    "blue",
    "green",
    "yellow",
    "red",
    "rededge",
    "rededge1",
    "rededge2",
    "rededge3",
    "rededge4",
    "nir",
    "water_vapour",
    "cirrus",
    "swir",
    "swir1",
    "swir2",
    "pan",
    "tir",
    "tir1",
    "tir2",
)
RGB = ("red", "green", "blue")  # the order of ImageNet's (timm's) first-layer input channels

# Band numbers per sensor ('8a' is Sentinel-2's narrow NIR band B8A, also called red edge 4).
SENSORS: dict[str, dict[str, str]] = {
    "sentinel2": {
        "1": "coastal",
        "2": "blue",
        "3": "green",
        "4": "red",
        "5": "rededge1",
        "6": "rededge2",
        "7": "rededge3",
        "8": "nir",
        "8a": "rededge4",
        "9": "water_vapour",
        "10": "cirrus",
        "11": "swir1",
        "12": "swir2",
    },
    # Landsat 8/9 OLI + TIRS.
    "landsat8": {
        "1": "coastal",
        "2": "blue",
        "3": "green",
        "4": "red",
        "5": "nir",
        "6": "swir1",
        "7": "swir2",
        "8": "pan",
        "9": "cirrus",
        "10": "tir1",
        "11": "tir2",
    },
    # Landsat 7 ETM+ (Landsat 4/5 TM: the same without the panchromatic band 8).
    "landsat7": {"1": "blue", "2": "green", "3": "red", "4": "nir", "5": "swir1", "6": "tir", "7": "swir2", "8": "pan"},
}
SENSOR_ALIASES = {
    "sentinel2": "sentinel2",
    "s2": "sentinel2",
    "landsat8": "landsat8",
    "landsat9": "landsat8",
    "l8": "landsat8",
    "l9": "landsat8",
    "landsat7": "landsat7",
    "l7": "landsat7",
    "landsat5": "landsat7",
    "landsat4": "landsat7",
}

# Spellings (lower case, separators removed) -> canonical name. Matched against the whole name, then
# against runs of 1-3 words of a description (longest first), so 'red edge 1' is not 'red'.
_WORDS = {
    "coastal": "coastal",
    "coastalaerosol": "coastal",
    "aerosol": "coastal",
    "ultrablue": "coastal",
    "blue": "blue",
    "green": "green",
    "yellow": "yellow",
    "red": "red",
    "rededge": "rededge",
    "vre": "rededge",
    **{f"{p}{i}": f"rededge{i}" for p in ("rededge", "re", "vre") for i in (1, 2, 3, 4)},
    "rededge05": "rededge1",
    "rededge06": "rededge2",
    "rededge07": "rededge3",
    "nir": "nir",
    "nearinfrared": "nir",
    "nearir": "nir",
    "broadnir": "nir",
    "narrownir": "rededge4",
    "nirnarrow": "rededge4",
    "nir08": "rededge4",
    "watervapour": "water_vapour",
    "watervapor": "water_vapour",
    "wv": "water_vapour",
    "nir09": "water_vapour",
    "cirrus": "cirrus",
    "swir": "swir",
    "shortwaveinfrared": "swir",
    "swir1": "swir1",
    "swir16": "swir1",
    "shortwaveinfrared1": "swir1",
    "swir2": "swir2",
    "swir22": "swir2",
    "shortwaveinfrared2": "swir2",
    "pan": "pan",
    "panchromatic": "pan",
    "tir": "tir",
    "thermal": "tir",
    "thermalinfrared": "tir",
    "lwir": "tir",
    "tir1": "tir1",
    "lwir11": "tir1",
    "tir2": "tir2",
    "lwir12": "tir2",
}
# Single letters only count as the whole name ('R', 'G', 'B', 'N'), never inside a description.
_LETTERS = {"r": "red", "g": "green", "b": "blue", "n": "nir"}
# A band number: 'B04', 'b4', 'B8A', 'B08A', 'band 4', 'Band_8A', '4' (separators already removed).
_CODE = re.compile(r"(?:b|band)?0*(\d{1,2})(a?)")
_TOKEN_CODE = re.compile(r"b0*(\d{1,2})(a?)")
FIX = (
    "--bands names each band in file order (e.g. B01,B02,... or blue,green,red,nir), or --rgb-bands 4,3,2 "
    "picks the red, green, blue bands (1-based)"
)


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def sensor_key(sensor: str | None) -> str | None:
    if sensor is None:
        return None
    key = SENSOR_ALIASES.get(_squash(sensor))
    if key is None:
        raise ConfigError(f"unknown sensor '{sensor}' (known: sentinel2, landsat8, landsat9, landsat7)")
    return key


def band_code(name: str) -> str | None:
    """The band number in a name, as written ('B4_red' -> 'B4', 'Band 8A (narrow NIR)' -> '8A'), or None."""
    whole = _squash(name)
    if _CODE.fullmatch(whole):
        return name.strip()
    tokens = re.split(r"[^A-Za-z0-9]+", name.strip())
    codes = [t for t in tokens if _TOKEN_CODE.fullmatch(t.lower())]
    codes += [b for a, b in zip(tokens, tokens[1:]) if a.lower() == "band" and re.fullmatch(r"\d{1,2}[aA]?", b)]
    return codes[0] if len(codes) == 1 else None


def _number(code: str) -> str:
    m = _CODE.fullmatch(_squash(code))
    assert m is not None
    return f"{int(m.group(1))}{m.group(2)}"


def _by_sensor(name: str, code: str, sensor: str | None) -> str | None:
    number = _number(code)
    if sensor is None:
        raise ConfigError(
            f"band '{name}' is a bare band number, which means different bands on different sensors "
            f"(B4: red on Sentinel-2 and Landsat 8, near-infrared on Landsat 7); name the bands by colour "
            f"(e.g. --bands blue,green,red,nir; Sentinel-2's own zero-padded B02,B03,B04,B08 are read as "
            f"Sentinel-2) or pick red, green, blue with --rgb-bands (1-based, e.g. 4,3,2)"
        )
    return SENSORS[sensor].get(number)


def _words(name: str) -> set[str]:
    """Canonical names of the colour words in a description, longest runs of words first."""
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]
    found, i = set(), 0
    while i < len(tokens):
        for n in (3, 2, 1):
            if i + n <= len(tokens) and "".join(tokens[i : i + n]) in _WORDS:
                found.add(_WORDS["".join(tokens[i : i + n])])
                i += n
                break
        else:
            i += 1
    return found


def is_band_number(name: str) -> bool:
    """Whether `canonical_band` reads `name` as a band number (no colour word in it)."""
    whole = _squash(name)
    if whole in _WORDS or whole in _LETTERS:
        return False
    return bool(_CODE.fullmatch(whole)) or (not _words(name) and band_code(name) is not None)


def canonical_band(name: str, sensor: str | None = None) -> str | None:
    """The canonical name (one of CANONICAL_BANDS) of a band name, or None when it names no known band.

    Colour words win ('B4_red' is red for any sensor); a bare band number ('B04', 'B2', 'band 4', '8A')
    needs `sensor` ('sentinel2', 'landsat8' / 'landsat9', 'landsat7') and raises a ConfigError without
    one; a description naming two different bands ('red green') raises too.
    """
    sensor = sensor_key(sensor)
    whole = _squash(name)
    if not whole:
        return None
    if whole in _WORDS:
        return _WORDS[whole]
    if whole in _LETTERS:
        return _LETTERS[whole]
    if _CODE.fullmatch(whole):
        return _by_sensor(name, name, sensor)
    words = _words(name)
    if len(words) > 1:
        raise ConfigError(f"band name '{name}' names more than one band ({', '.join(sorted(words))}); {FIX}")
    if words:
        return words.pop()
    code = band_code(name)
    return _by_sensor(name, code, sensor) if code is not None else None


def infer_sensor(bands: Sequence[str] | None) -> str | None:
    """'sentinel2' when the names use Sentinel-2's own spelling of band numbers (zero-padded 'B02', 'B08A',
    or 'B8A', which only Sentinel-2 has); else None. Landsat products write B1 ... B11 unpadded."""
    for b in bands or []:
        code = band_code(b)
        if code is None:
            continue
        m = _CODE.fullmatch(_squash(code))
        if m and (m.group(2) or re.search(r"(?:^|[^0-9])0\d", code)):
            return "sentinel2"
    return None


def canonical_or_none(name: str, sensor: str | None) -> str | None:
    try:
        return canonical_band(name, sensor)
    except ConfigError:
        return None


def pick_bands(
    wanted: Sequence[str], available: Sequence[str], sensor: str | None = None, *, what: str = "the data"
) -> list[int]:
    """0-based indices of `wanted` bands in `available`, in the order of `wanted`.

    A name matches exactly (case-insensitive) first, else by canonical name (so 'red' finds 'B04' of a
    Sentinel-2 corpus and 'B4_red' of Landsat 8). A ConfigError names every band that is missing or
    ambiguous, and the bands that exist.
    """
    sensor = sensor_key(sensor) or infer_sensor(available)
    canon = [canonical_or_none(b, sensor) for b in available]
    found, missing = [], []
    for name in wanted:
        exact = [i for i, b in enumerate(available) if b.strip().lower() == str(name).strip().lower()]
        if len(exact) == 1:
            found.append(exact[0])
            continue
        want = canonical_or_none(str(name), sensor)
        hits = [i for i, c in enumerate(canon) if want is not None and c == want]
        if len(hits) == 1:
            found.append(hits[0])
        else:
            missing.append(f"{name}" + (" (ambiguous)" if hits else ""))
    if missing:
        have = ", ".join(map(str, available)) or "unnamed"
        raise ConfigError(f"band(s) {', '.join(missing)} not found in {what} (its bands: {have})")
    return found
