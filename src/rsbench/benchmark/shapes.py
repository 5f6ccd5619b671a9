"""Input shapes at plan time: what image size, ViT token count and bands each evaluation cell will see,
so that baselines can inherit the shape of the runs they are compared with and a leaderboard that would
compare inits at different input shapes fails before any work.

Nothing here imports the stages (torch): the defaults the stages apply are read from their config models
in rsbench.contracts, and names are interpreted by rsbench.contracts.architectures.

Where the size comes from (mirrors rsbench.evaluate):
- classification: the backbone's own input size: a pretraining run's `image_size` (PretrainConfig
  default 64); a random / ImageNet / weights-file baseline's `image_size` (else 64); a run directory's
  backbone.json. The task's `image_size` only reaches baselines (a run ignores it, with a warning).
- segmentation, detection (every other task kind): the task's `image_size` (crop size) for every init,
  else the init's own size as above.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsbench.contracts.architectures import is_vit_name, patch_size_from_name
from rsbench.contracts.backbone_export import BackboneExport
from rsbench.contracts.corpus_info import parse_group_selector
from rsbench.contracts.evaluate_config import DEFAULT_BACKBONE, DEFAULT_IMAGE_SIZE
from rsbench.contracts.pretrain_config import PretrainConfig
from rsbench.errors import ConfigError, RsbenchError
from rsbench.settings import load_yaml_mapping
from rsbench.ssl.catalog import CATALOG

# PretrainConfig's defaults, read from the model (rsbench.contracts.pretrain_config imports no torch).
PRETRAIN_METHOD = str(PretrainConfig.model_fields["method"].default)
PRETRAIN_IMAGE_SIZE = int(PretrainConfig.model_fields["image_size"].default)
# rsbench.evaluate.inits.BASELINES: no network, so no backbone or patch size to inherit.
NETWORK_FREE = ("bandstats", "pixels")
TORCHGEO_PREFIX = "torchgeo:"
CLASSIFICATION = "classification"
# Keys a baseline inherits from the runs it is compared with (and keeps when it sets them itself).
SHAPE_KEYS = ("backbone", "image_size", "patch_size")


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None  # the stage's own validation names the key later


def _bands(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return tuple(str(v) for v in value) if isinstance(value, (list, tuple)) else None


def _group(value: Any) -> str | None:
    """A run's `bands` (band count, names or group key) in one spelling, so equal selections compare equal."""
    try:
        selector = parse_group_selector(value)
    except ValueError:
        return None  # the stage's own validation names the key later
    if selector is None:
        return None
    return ",".join(str(b).strip().lower() for b in selector) if isinstance(selector, list) else str(selector)


@dataclass(frozen=True)
class InputShape:
    image_size: int | None  # None: decided by something the plan cannot read (published weights)
    arch: str | None
    patch_size: int | None  # ViTs only
    bands: tuple[str, ...] | None = None  # evaluation `bands`: the data's band names, as the init sees them
    band_group: str | None = None  # a pretraining run's corpus band group (`bands` of rsbench pretrain), as given

    @property
    def tokens(self) -> int | None:
        if not is_vit_name(self.arch) or not self.image_size or not self.patch_size:
            return None
        return (self.image_size // self.patch_size) ** 2

    def describe(self) -> str:
        parts = [f"{self.image_size} px" if self.image_size else "size set by its weights"]
        if is_vit_name(self.arch):
            parts.append(f"patch {self.patch_size}" if self.patch_size else "default patch")
            if self.tokens:
                parts.append(f"{self.tokens} tokens")
        return ", ".join(parts)

    def describe_bands(self, group: bool = False) -> str:
        if group:
            return (
                f"{self.band_group}-band corpus group"
                if self.band_group.isdigit()
                else f"corpus group {self.band_group}"
            )
        return "bands " + ",".join(self.bands or ())


@dataclass(frozen=True)
class TaskView:
    """What decides input shapes on one task: its kind and the evaluation options every init gets
    (task spec file values < experiment `evaluate` < the task's own options)."""

    kind: str
    options: dict[str, Any]

    @property
    def dense(self) -> bool:
        return self.kind != CLASSIFICATION


def task_view(evaluate: dict[str, Any], task_options: dict[str, Any]) -> TaskView:
    merged = {**evaluate, **task_options}
    spec: dict[str, Any] = {}
    path = merged.get("task_spec")
    if path:
        try:
            raw = load_yaml_mapping(Path(str(path)).expanduser())
        except RsbenchError:
            raw = {}  # a missing/bad spec file is reported by the stage's own validation
        spec = {k: raw[k] for k in ("task", "image_size", "bands") if raw.get(k) is not None}
    options = {**spec, **merged}
    return TaskView(str(options.get("task") or CLASSIFICATION), options)


def run_arch(options: dict[str, Any]) -> str:
    """The backbone `rsbench pretrain` builds for these options (a method's default: its catalog card)."""
    method = str(options.get("method") or PRETRAIN_METHOD)
    card = CATALOG.get(method)  # an unknown method fails the stage's own validation later
    return str(options.get("backbone") or (card.default_backbone if card else DEFAULT_BACKBONE))


def run_shape(options: dict[str, Any], view: TaskView) -> InputShape:
    """The input shape a pretraining run (or one of its checkpoints) is evaluated at on a task."""
    arch = run_arch(options)
    own = _int(options.get("image_size")) or PRETRAIN_IMAGE_SIZE
    size = (_int(view.options.get("image_size")) or own) if view.dense else own
    patch = (_int(options.get("patch_size")) or patch_size_from_name(arch)) if is_vit_name(arch) else None
    return InputShape(size, arch, patch, _bands(view.options.get("bands")), _group(options.get("bands")))


def baseline_kind(init: str) -> str:
    """network (random, imagenet, a weights file: shaped by backbone/image_size/patch_size), run (a run
    directory, shaped by its backbone.json, or a path not there yet), torchgeo (published weights) or
    free (no network)."""
    if init in NETWORK_FREE:
        return "free"
    if init.startswith(TORCHGEO_PREFIX):
        return "torchgeo"
    if init in ("random", "imagenet") or Path(init).expanduser().is_file():
        return "network"
    return "run"


def _run_dir_meta(init: str) -> dict | None:
    try:
        meta = BackboneExport(Path(init).expanduser()).read_meta()
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def baseline_shape(spec: dict[str, Any], options: dict[str, Any], view: TaskView) -> InputShape:
    """The input shape of a baseline cell: `options` are its evaluation options (task and baseline
    options merged), `spec` its init entry, whose keys win as in rsbench.benchmark.execute.eval_values."""
    values = {**options, **{k: spec[k] for k in SHAPE_KEYS if spec.get(k) is not None}}
    size, bands = _int(values.get("image_size")), _bands(values.get("bands"))
    kind = baseline_kind(str(spec["init"]))
    if kind == "free":
        return InputShape(size or DEFAULT_IMAGE_SIZE, str(spec["init"]), None, bands)
    if kind == "torchgeo":
        return InputShape(size, None, None, bands)  # the weights fix the backbone and the default size
    if kind == "run":
        meta = _run_dir_meta(str(spec["init"]))
        if meta is None:  # not finished yet: its shape is known only once it is
            return InputShape(size if view.dense else None, None, None, bands)
        arch, own = meta.get("arch"), _int(meta.get("image_size"))
        size = (size or own) if view.dense else (own or size)
        patch = _int((meta.get("timm_kwargs") or {}).get("patch_size")) or patch_size_from_name(arch)
        return InputShape(size or DEFAULT_IMAGE_SIZE, arch, patch if is_vit_name(arch) else None, bands)
    arch = str(values.get("backbone") or DEFAULT_BACKBONE)
    patch = (_int(values.get("patch_size")) or patch_size_from_name(arch)) if is_vit_name(arch) else None
    return InputShape(size or DEFAULT_IMAGE_SIZE, arch, patch, bands)


def inherit(
    spec: dict[str, Any],
    options: dict[str, Any],
    view: TaskView,
    explicit: set[str],
    arch_from: dict[str, Any] | None,
    shape_from: list[dict[str, Any]],
) -> dict[str, Any]:
    """`spec` (a baseline's init entry) with the shape of the runs it is compared with on this task.

    `explicit`: the shape keys the baseline sets itself (kept); `arch_from`: the run options whose
    backbone it takes (None: it sets its own); `shape_from`: the options of the runs it is compared
    with, the first giving the image size, the first ViT the patch size. A key is written only when
    what `spec` already holds would give another shape, so cell ids change only when the shape does.
    """
    if not shape_from:
        return spec
    spec = dict(spec)
    kind = baseline_kind(str(spec["init"]))
    if kind == "network" and arch_from is not None and "backbone" not in explicit:
        arch = run_arch(arch_from)
        if baseline_shape(spec, options, view).arch != arch:
            spec["backbone"] = arch
    # A run directory fixes its own input size on classification (evaluate ignores image_size there).
    if "image_size" not in explicit and (kind != "run" or view.dense):
        target = run_shape(shape_from[0], view).image_size
        if baseline_shape(spec, options, view).image_size != target:
            spec["image_size"] = target
    mine = baseline_shape(spec, options, view)
    if kind == "network" and "patch_size" not in explicit and is_vit_name(mine.arch):
        vit = next((o for o in shape_from if is_vit_name(run_arch(o))), None)
        target = run_shape(vit, view).patch_size if vit is not None else None
        if target is not None and mine.patch_size != target:
            spec["patch_size"] = target
    return spec


@dataclass(frozen=True)
class Entry:
    label: str
    baseline: bool
    shape: InputShape


_FIELDS = {
    "size": lambda s: s.image_size,
    "tokens": lambda s: s.tokens,
    "bands": lambda s: s.bands,
    "group": lambda s: s.band_group,
}


def check_parity(leaderboards: dict[tuple[str, str, float | None], list[Entry]]) -> None:
    """Every init of one leaderboard (task x protocol x label fraction) must see the same image size,
    the same ViT token count (CNNs: image size only) and the same bands; else one error naming both.
    What the plan cannot know (published weights' default size, an unfinished run directory) is not compared."""
    for (task, protocol, fraction), entries in leaderboards.items():
        board = f"{task}/{protocol}" + ("" if fraction is None else f" at {fraction:g} labels")
        first: dict[str, Entry] = {}
        for e in entries:
            for what, get in _FIELDS.items():
                value = get(e.shape)
                if value is None:
                    continue
                ref = first.setdefault(what, e)
                if get(ref.shape) != value:
                    raise _parity_error(board, ref, e, what)


def _parity_error(board: str, a: Entry, b: Entry, what: str) -> ConfigError:
    if what in ("bands", "group"):
        group = what == "group"
        return ConfigError(
            f"leaderboard {board} compares inits with different band selections: {a.label} "
            f"({a.shape.describe_bands(group)}) vs {b.label} ({b.shape.describe_bands(group)}); "
            f"give every init of a task the same bands"
        )
    if a.baseline or b.baseline:
        hint = "set image_size/patch_size on the baseline or let it inherit them"
    else:
        hint = "pretrain the runs at one image_size/patch_size or compare them in separate experiments"
    return ConfigError(
        f"leaderboard {board} compares inits at different input shapes: "
        f"{a.label} ({a.shape.describe()}) vs {b.label} ({b.shape.describe()}); {hint}"
    )
