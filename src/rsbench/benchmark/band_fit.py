"""At plan time: does each pretraining run's corpus band group fit the bands of the tasks it is evaluated on?

A run trains on one band group of its corpus (`bands` of rsbench pretrain; unset: the group with the most
tiles). A backbone trained on 4 bands cannot be evaluated on 3-band data; learning that after the
pretraining has run wastes the run. So a benchmark whose run and task bands differ fails before any work,
naming both band sets and the command that fixes it: pretrain on another group of the corpus when it has
one with the task's bands, else rebuild the corpus with `--bands` set to them.

What is compared: the group's band count, and its band names with the task's when the task names its
bands (`bands` of the task); 3 unnamed bands of a task are red, green, blue, as in evaluation. A corpus
not built yet, or task data that is not a local image folder, is not checked (nothing to read).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rsbench.bands import RGB, canonical_or_none
from rsbench.benchmark.matrix import PRETRAIN, Cell
from rsbench.benchmark.shapes import task_view
from rsbench.contracts.corpus_info import CorpusInfo, choose_group, describe_group
from rsbench.errors import ConfigError, RsbenchError


def task_bands(options: dict[str, Any]) -> list[str] | int | None:
    """The task's band names (its `bands`), else its band count read from its first image, else None."""
    if options.get("bands"):
        value = options["bands"]
        return [b.strip() for b in value.split(",")] if isinstance(value, str) else [str(b) for b in value]
    data = options.get("data")
    if not data or not Path(str(data)).expanduser().is_dir():
        return None
    from rsbench.data.images import list_images, read_image

    try:
        return int(read_image(list_images(Path(str(data)).expanduser())[0]).shape[0])
    except RsbenchError:
        return None  # the evaluation stage reports unreadable data with its own error


def _canonical(names: Sequence[str]) -> list[str]:
    return [canonical_or_none(n, None) or n.lower() for n in names]


def _fits(group: dict[str, Any], wanted: list[str] | int) -> bool:
    if isinstance(wanted, int):
        return group["bands"] == wanted
    return _canonical(group["band_names"]) == _canonical(wanted)


def _wanted_names(wanted: list[str] | int) -> list[str] | None:
    if isinstance(wanted, list):
        return wanted
    return list(RGB) if wanted == 3 else None


def _fix(info: dict[str, Any], wanted: list[str] | int, corpus: str) -> str:
    fitting = [g for g in info["band_groups"].values() if _fits(g, wanted)]
    names = _wanted_names(wanted)
    if fitting:
        best = max(fitting, key=lambda g: g["tiles"])
        return (
            f"pretrain on the corpus's {describe_group(best)} group ({best['tiles']} tiles): set "
            f"`bands: {','.join(best['band_names'])}` in the run's options"
        )
    select = f"--bands {','.join(names)}" if names else f"--bands with the task's {wanted} bands"
    return (
        f"rebuild the corpus with the task's bands: rsbench corpus build ... --out {corpus} {select} --overwrite "
        f"(name unnamed rasters' bands in the --input-list, e.g. 'scene.tif  bands=red,green,blue,nir')"
    )


def check_band_fit(cells: Sequence[Cell], tasks: Sequence[Any], evaluate: dict[str, Any], source: str) -> None:
    """ConfigError when a run's corpus band group differs from the bands of a task it is evaluated on."""
    views = [(t.name, task_view(evaluate, t.options).options) for t in tasks]
    wanted_of = {name: task_bands(options) for name, options in views}
    for cell in cells:
        if cell.kind != PRETRAIN:
            continue
        options = cell.config["options"]
        corpus = options.get("corpus")
        if not corpus or not CorpusInfo(Path(str(corpus)).expanduser()).is_built():
            continue
        info = CorpusInfo(Path(str(corpus)).expanduser()).read()
        try:
            group = choose_group(info, options.get("bands"), where=f"corpus {corpus}")
        except RsbenchError as e:
            raise ConfigError(f"invalid key '{cell.where}.bands' in {source}: {e}") from None
        for name, wanted in wanted_of.items():
            if wanted is None or _fits(group, wanted):
                continue
            have = f"{group['bands']} band(s): {describe_group(group)}"
            need = f"{wanted} band(s)" if isinstance(wanted, int) else f"bands {','.join(wanted)}"
            raise ConfigError(
                f"run '{cell.init_label}' ({cell.where}) pretrains on corpus {corpus}'s band group of {have}, but "
                f"task '{name}' has {need}; {_fix(info, wanted, str(corpus))}"
            )
