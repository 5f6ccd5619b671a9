"""Fair comparisons in one results folder: a new init is scored at the input shape of the rows already there.

`rsbench benchmark` refuses a matrix that compares inits at different image sizes, token counts or band
sets (rsbench.benchmark.shapes). One `rsbench evaluate` after another into the same folder is the same
comparison built by hand: before any work, the new init's image size and ViT token count are compared
with the rows already in the folder for the same task and dataset, and the band set once the rows exist.
A difference is a one-line ConfigError naming both and the option that matches them; `--allow-mixed`
turns it into a warning, and every new row records it (`mixed_inputs`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rsbench.contracts.results import RESULTS_FILE, read_results_file
from rsbench.errors import ConfigError


def _tokens(row: dict[str, Any]) -> int | None:
    size, patch = row.get("image_size"), row.get("patch_size")
    return (size // patch) ** 2 if size and patch else None


def _bands(row: dict[str, Any]) -> str | None:
    norm = row.get("normalization") or {}
    if norm.get("bands"):
        return ",".join(map(str, norm["bands"]))
    return f"{len(norm['mean'])} band(s)" if norm.get("mean") else None


ASPECTS = {  # what is compared: (how it is read from a row, how it is named, the option that sets it)
    "image size": (lambda r: r.get("image_size"), lambda v: f"{v} px", "--image-size {}"),
    "token count": (_tokens, lambda v: f"{v} tokens", "--image-size/--patch-size giving {} tokens"),
    "band set": (_bands, lambda v: f"bands {v}", "data with bands {}"),
}


def existing_rows(out_dir: Path, task: str, dataset: str) -> list[dict[str, Any]]:
    path = Path(out_dir) / RESULTS_FILE
    if not path.is_file():
        return []
    return [r for r in read_results_file(path) if (r["task"], r["dataset"]) == (task, dataset)]


def differences(old: Iterable[dict[str, Any]], new: dict[str, Any], aspects: Iterable[str]) -> list[str]:
    """One phrase per aspect in which `new` differs from a row of `old` (aspects unknown on either side skip)."""
    out = []
    for aspect in aspects:
        get, name, option = ASPECTS[aspect]
        mine = get(new)
        if mine is None:
            continue
        for row in old:
            theirs = get(row)
            if theirs is not None and theirs != mine:
                out.append(
                    f"{row['init']} was scored at {name(theirs)}, {new['init']} would be at {name(mine)} "
                    f"(pass {option.format(theirs)})"
                )
                break
    return out


def check_comparable(cfg, new: dict[str, Any], aspects: Iterable[str], console=None) -> str | None:
    """ConfigError when `new` (a row's fields) would be compared in cfg.out at another input shape than the
    rows there for its task and dataset; with cfg.allow_mixed a warning instead. Returns the note the new
    rows record (None when nothing differs)."""
    old = existing_rows(cfg.out, new["task"], new["dataset"])
    found = differences(old, new, aspects)
    if not found:
        return None
    where = f"{cfg.out} already holds {new['task']} rows on {new['dataset']}"
    if not getattr(cfg, "allow_mixed", False):
        raise ConfigError(f"{where}: {'; '.join(found)}; or --allow-mixed to compare them anyway (recorded)")
    note = f"compared with rows at other inputs (--allow-mixed): {'; '.join(found)}"
    if console is not None:
        console.print(f"warning: {where}: {'; '.join(found)}; kept with --allow-mixed", markup=False)
    return note
