"""Which input channel is red, green, blue: the mapping of ImageNet's RGB first-layer filters onto
multispectral data (band names are read with the vocabulary in `rsbench.bands`).

`imagenet_band_mapping` / `rgb_indices` find the red, green and blue channels of the data (from
`--rgb-bands`, else the band names, else "3 unnamed bands are RGB"); they never fall back to "channels
0-2 are RGB" on more than 3 bands: missing or ambiguous information is a one-line `ConfigError` that
names the fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rsbench.bands import FIX, RGB, canonical_band, canonical_or_none, infer_sensor, is_band_number, sensor_key
from rsbench.errors import ConfigError


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
    hits = [i for i, b in enumerate(bands) if want is not None and canonical_or_none(b, sensor) == want]
    if len(hits) != 1:
        how = "is not among" if not hits else "matches more than one of"
        raise ConfigError(
            f"--rgb-bands {colour} band '{item}' {how} the data's bands ({', '.join(bands)}); "
            f"give 1-based indices, e.g. --rgb-bands 4,3,2"
        )
    return hits[0]


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
    sensor = sensor_key(sensor) or infer_sensor(names)
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
    if sensor is not None and names is not None and any(is_band_number(b) for b in names):
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
