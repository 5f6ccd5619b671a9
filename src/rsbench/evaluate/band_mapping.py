"""Which input channel is red, green, blue: a small canonical band vocabulary and the mapping of ImageNet's
RGB first-layer filters onto multispectral data.

`canonical_band` turns the many spellings of a band into one name of `CANONICAL_BANDS`: colour words
('red', 'R', 'Red', 'near infrared', 'SWIR 1', STAC common names such as 'swir16'), descriptions that
contain such a word ('B4_red', 'Band 4 (red)', 'red (B4)': the word decides), and bare band numbers
('B04', 'B2', 'band 4', '8A'), which mean different bands on different sensors (Sentinel-2 and
Landsat 8 B4 are red, Landsat 7 B4 is near-infrared) and so need a `sensor`.

`imagenet_band_mapping` / `rgb_indices` find the red, green and blue channels of the data (from
`--rgb-bands`, else the band names, else "3 unnamed bands are RGB"); they never fall back to "channels
0-2 are RGB" on more than 3 bands: missing or ambiguous information is a one-line `ConfigError` that
names the fix.
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


def _sensor(sensor: str | None) -> str | None:
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


def _by_number(name: str) -> bool:
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
    sensor = _sensor(sensor)
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


def _pick(item: str, bands: list[str] | None, in_chans: int, colour: str, sensor: str | None) -> int:
    """0-based channel of one --rgb-bands item: a 1-based index, or a band name (exact, else canonical)."""
    item = str(item).strip()
    if re.fullmatch(r"\d+", item):
        i = int(item)
        if not 1 <= i <= in_chans:
            raise ConfigError(
                f"--rgb-bands {colour} band {i} is out of range: the data has {in_chans} band(s) (indices are 1-based)"
            )
        return i - 1
    if not bands:
        raise ConfigError(
            f"--rgb-bands names band '{item}' but the data's bands are not named; give 1-based "
            f"indices (e.g. --rgb-bands 4,3,2) or name the bands with --bands"
        )
    exact = [i for i, b in enumerate(bands) if b.strip().lower() == item.lower()]
    if len(exact) == 1:
        return exact[0]
    want = canonical_band(item, sensor)
    hits = [i for i, b in enumerate(bands) if want is not None and _safe_canonical(b, sensor) == want]
    if len(hits) != 1:
        how = "is not among" if not hits else "matches more than one of"
        raise ConfigError(
            f"--rgb-bands {colour} band '{item}' {how} the data's bands ({', '.join(bands)}); "
            f"give 1-based indices, e.g. --rgb-bands 4,3,2"
        )
    return hits[0]


def _safe_canonical(name: str, sensor: str | None) -> str | None:
    try:
        return canonical_band(name, sensor)
    except ConfigError:
        return None


def imagenet_band_mapping(
    in_chans: int,
    bands: Sequence[str] | None = None,
    rgb_bands: Sequence[str | int] | None = None,
    sensor: str | None = None,
) -> dict:
    """Where ImageNet's red, green and blue first-layer filters go on data with `in_chans` channels.

    A JSON-able dict: 'red', 'green', 'blue' (0-based input channels, or None with fewer than 3
    bands), 'others' (what every other channel gets), 'source' (how the channels were found), plus
    'bands' (the names, when known) and 'sensor' (when band numbers were read with one). Raises a
    one-line ConfigError naming the fix when red, green and blue cannot be told apart.
    """
    names = [str(b) for b in bands] if bands else None
    if names is not None and len(names) != in_chans:
        raise ConfigError(f"--bands names {len(names)} band(s) but the data has {in_chans}; {FIX}")
    inferred = sensor is None and infer_sensor(names) is not None
    sensor = _sensor(sensor) or infer_sensor(names)
    out: dict = {}
    if rgb_bands:
        if len(rgb_bands) != 3:
            raise ConfigError(f"--rgb-bands takes exactly 3 bands (red, green, blue), got {len(rgb_bands)}")
        if in_chans < 3:
            raise ConfigError(f"--rgb-bands picks 3 bands but the data has {in_chans}")
        idx = [_pick(str(item), names, in_chans, colour, sensor) for item, colour in zip(rgb_bands, RGB)]
        if len(set(idx)) != 3:
            raise ConfigError(
                f"--rgb-bands {','.join(map(str, rgb_bands))} picks the same band twice; "
                f"give three different bands for red, green, blue"
            )
        out = {"red": idx[0], "green": idx[1], "blue": idx[2], "source": "--rgb-bands"}
    elif in_chans < 3:
        out = {"red": None, "green": None, "blue": None, "source": f"{in_chans} band(s): no RGB channels"}
    elif names is not None:
        canon = [canonical_band(b, sensor) for b in names]
        idx = []
        for colour in RGB:
            hits = [i for i, c in enumerate(canon) if c == colour]
            if len(hits) != 1:
                what = (
                    f"no band is {colour}"
                    if not hits
                    else f"bands {', '.join(names[i] for i in hits)} are all {colour}"
                )
                raise ConfigError(f"cannot place ImageNet's RGB filters: {what} (bands: {', '.join(names)}); {FIX}")
            idx.append(hits[0])
        out = {"red": idx[0], "green": idx[1], "blue": idx[2], "source": "band names"}
    elif in_chans == 3:
        out = {"red": 0, "green": 1, "blue": 2, "source": "assumed RGB order (3 unnamed bands)"}
    else:
        raise ConfigError(f"the data has {in_chans} unnamed bands: which are red, green and blue? {FIX}")
    out["others"] = "mean RGB filter"
    if names is not None:
        out["bands"] = names
    if sensor is not None and names is not None and any(_by_number(b) for b in names):
        out["sensor"] = f"{sensor} (inferred from the band names)" if inferred else sensor
    return out


def rgb_indices(
    bands: Sequence[str] | None,
    rgb_bands: Sequence[str | int] | None = None,
    *,
    in_chans: int | None = None,
    sensor: str | None = None,
) -> tuple[int, int, int]:
    """The 0-based input channels of red, green and blue (see `imagenet_band_mapping`).

    `in_chans` defaults to len(bands); with neither names nor `in_chans` it is an error.
    """
    if in_chans is None:
        if not bands:
            raise ConfigError(f"the data's bands are not named: which are red, green and blue? {FIX}")
        in_chans = len(bands)
    m = imagenet_band_mapping(in_chans, bands, rgb_bands, sensor)
    if m["red"] is None:
        raise ConfigError(f"the data has {in_chans} band(s): there are no red, green and blue bands to find")
    return m["red"], m["green"], m["blue"]
