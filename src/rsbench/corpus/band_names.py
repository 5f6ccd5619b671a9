"""What each raster's bands are: names given per raster, the band group key, the sensor label.

A raster's bands are named, first found wins:
  1. its line in an `--input-list` file: `path  bands=red,green,blue,nir  sensor=naip  units=dn`;
  2. a sidecar file beside it, `<raster file name>.bands` (e.g. `scene.tif.bands`), holding the same
     `key=value` words (`bands=blue,green,red,nir sensor=spacenet6`) or just the comma-separated names;
  3. the GeoTIFF's band descriptions (`B4_red`, 'Red', ...);
  4. none: the bands are called B1, B2, ... (a bare number says nothing about the colour).
Names are read with the canonical vocabulary of `rsbench.bands` ('B4_red' -> red, 'R' -> red), so
`--bands red,green,blue` finds the same three bands in NAIP (R,G,B,NIR), SpaceNet-6 (B,G,R,NIR) and
Landsat 8 (described B1_coastal ... B7_swir2), in the order asked for.

A band group of the corpus is keyed by its band names and units (`red,green,blue|uint8`): tiles that
share a mean and std must share a band order and a value scale. `units` is the raster's dtype unless the
input list or sidecar says otherwise (`units=dn` on two rasters of different dtypes that hold values on
one scale pools them). A raster's *sensor* is its `sensor=` word, else its source layout (dtype and band
names in file order); a group pooled from more than one sensor is reported (a warning at build time,
`sensors` and `pooled_sensors` in corpus.json).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rsbench.bands import canonical_or_none, infer_sensor, pick_bands, sensor_key
from rsbench.contracts.corpus_info import describe_group
from rsbench.corpus.inputs import is_gdal_path, list_line_options, read_input_list_lines
from rsbench.errors import ConfigError, DataError

SIDECAR_SUFFIX = ".bands"
__all__ = ["BandMismatch", "describe_group", "group_key", "raster_options", "select"]
OPTION_KEYS = ("bands", "sensor", "units")


class BandMismatch(Exception):
    """The raster's bands cannot satisfy the band selection (the raster is skipped, not failed)."""


def _absolute(path: str) -> str:
    return path if is_gdal_path(path) else str(Path(path).expanduser().resolve())


def parse_options(words: dict[str, str], where: str) -> dict[str, Any]:
    """{'bands': [...], 'sensor': str, 'units': str} from `key=value` words; DataError naming `where`."""
    unknown = sorted(set(words) - set(OPTION_KEYS))
    if unknown:
        raise DataError(f"{where}: unknown option(s) {', '.join(unknown)} (known: {', '.join(OPTION_KEYS)})")
    out: dict[str, Any] = {}
    if "bands" in words:
        names = [b.strip() for b in words["bands"].split(",") if b.strip()]
        if not names:
            raise DataError(f"{where}: bands= names no band")
        out["bands"] = names
    for key in ("sensor", "units"):
        if words.get(key):
            out[key] = words[key].strip()
    return out


def read_sidecar(raster: str) -> dict[str, Any]:
    """The options in `<raster>.bands` beside a local raster, or {} when there is none."""
    if is_gdal_path(raster):
        return {}
    path = Path(raster + SIDECAR_SUFFIX)
    if not path.is_file():
        return {}
    try:
        text = " ".join(line.split("#", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()).strip()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read band sidecar {path}: {e}") from None
    if text and "=" not in text:
        text = f"bands={text.replace(' ', '')}"
    _, words = list_line_options(f"- {text}")
    return parse_options(words, f"band sidecar {path}")


def raster_options(paths: Sequence[str], input_lists: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per raster path (as `discover_inputs` returns it): its band names, sensor and units, from the input
    lists (their lines win) and sidecar files. Rasters with neither are absent."""
    out: dict[str, dict[str, Any]] = {}
    for list_file in input_lists:
        for number, (item, words) in read_input_list_lines(list_file):
            if words:
                out[_absolute(item)] = parse_options(words, f"input list {list_file} line {number}")
    for path in paths:
        sidecar = read_sidecar(path)
        if sidecar:
            out[path] = {**sidecar, **out.get(path, {})}
    return out


def label(name: str, sensor: str | None) -> str:
    """The canonical name of a band when the vocabulary knows it ('B4_red' -> 'red'), else the name as given."""
    return canonical_or_none(name, sensor) or name


def describe_raster_bands(
    count: int, descriptions: Sequence[str | None], dtype: str, options: dict[str, Any] | None
) -> dict[str, Any]:
    """The raster's band names in file order, where they came from, its sensor key (for band numbers),
    sensor label and units; DataError when given names do not fit the band count."""
    options = options or {}
    if options.get("bands"):
        names, source = list(options["bands"]), "input list or sidecar"
        if len(names) != count:
            raise DataError(f"bands={','.join(names)} names {len(names)} band(s) but the raster has {count}")
    elif any(descriptions):
        names, source = [d or f"B{i + 1}" for i, d in enumerate(descriptions)], "band descriptions"
    else:
        names, source = [f"B{i + 1}" for i in range(count)], None
    try:
        number_sensor = sensor_key(options.get("sensor")) if options.get("sensor") else None
    except ConfigError:
        number_sensor = None  # a sensor label rsbench.bands does not know: only a label here
    number_sensor = number_sensor or infer_sensor(names)
    layout = ",".join(label(n, number_sensor) for n in names)
    return {
        "names": names,
        "names_source": source,
        "number_sensor": number_sensor,
        "sensor": options.get("sensor") or f"{dtype} [{layout}]",
        "units": options.get("units") or dtype,
    }


def select(selection: Sequence[int | str] | None, names: Sequence[str], number_sensor: str | None) -> list[int]:
    """1-based band indexes in the selection's order: integers are indexes, words are band names matched
    exactly, else by canonical name; BandMismatch naming what is missing (the raster is skipped)."""
    count = len(names)
    if selection is None:
        return list(range(1, count + 1))
    out = []
    for item in selection:
        if isinstance(item, int):
            if item > count:
                raise BandMismatch(f"band {item} selected but the raster has {count} band(s)")
            out.append(item)
            continue
        try:
            out.append(pick_bands([item], names, number_sensor, what="this raster")[0] + 1)
        except ConfigError:
            have = ", ".join(names)
            raise BandMismatch(
                f"no band named '{item}' (its bands: {have}; name them in the input list, e.g. "
                f"'path  bands=red,green,blue,nir', or in a {SIDECAR_SUFFIX} sidecar)"
            ) from None
    if len(set(out)) != len(out):
        raise BandMismatch(f"the selection {','.join(map(str, selection))} picks one band twice")
    return out


def group_key(band_names: Sequence[str], units: str) -> str:
    """The corpus.json key of a band group: band names and units (`red,green,blue|uint8`)."""
    return f"{','.join(band_names)}|{units}"
