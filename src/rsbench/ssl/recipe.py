"""Optimisation recipes: one dataclass, filled with a paper's defaults and overridden by the user.

A method's catalog card (rsbench.ssl.catalog) holds `default_recipe = Recipe(...)` with the values of
its paper. Users override any field from the `recipe:` mapping of `rsbench pretrain --config FILE.yaml`:

    recipe:
      optimizer: adamw          # lars | sgd | adamw
      lr: 0.004                 # base LR for a batch of 256 (see lr_scaling)
      temperature: 0.2          # a method-specific key: goes to `extra`
      extra: {temperature: 0.2} # the same, spelled out

Method-specific keys (temperatures, EMA momenta, head sizes...) live in `extra`; they may be given
flat or under `extra:` and are merged key by key with the method's defaults. Unknown keys and
values of the wrong type are a ConfigError naming the key.

Presets (`rsbench pretrain --recipe NAME`, `recipe_preset:` in a config; the overrides above apply on top):
  paper        the paper's ImageNet recipe (the card's `default_recipe`), large batches (256-4096).
  small-batch  AdamW, base LR 0.004 (peak 1e-3 at batch 64), weight decay 0.05, 10 % warmup, with the
               method's smaller heads and faster EMA (the card's `small_batch`): what a few-hour CPU or one-GPU
               run on a small archive needs, where LARS/SGD scaled down from batch 4096 barely moves.

Keys that count stored samples (MoCo's queue: the card's `sample_store_keys`) are fitted to the data at
pretrain start (`fit_to_data`): a value taken from the preset that exceeds half the training samples is
cut to the largest power of two not above half of them and the change is recorded in backbone.json
(`recipe_adaptations`); a value the user gave is kept, with a warning.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, get_args

from rsbench.contracts.pretrain_config import RecipePreset
from rsbench.errors import ConfigError

OPTIMIZERS = ("lars", "sgd", "adamw")
LR_SCALINGS = ("linear", "sqrt", "none")
PRESETS: tuple[str, ...] = get_args(RecipePreset)  # ("paper", "small-batch"), named in the pretrain config
PAPER, SMALL_BATCH = PRESETS
# The part of the small-batch preset every method shares; a card's `small_batch` adds its method's keys. The
# quickstart, the tiny benchmark and benchmarks/ssl_quality.py measured it on EuroSAT at batch 64 (AdamW
# learns within a few hundred steps where the papers' LARS/SGD, scaled down linearly, does not).
SMALL_BATCH_BASE: dict[str, Any] = {"optimizer": "adamw", "lr": 0.004, "weight_decay": 0.05, "warmup_fraction": 0.1}
# The paper recipes are tuned for batches of 256-4096; below this fraction of the paper's batch a run on the
# paper preset is warned (linear LR scaling over more than a factor 8 is outside what Goyal et al. 2017 tested).
SMALL_BATCH_FRACTION = 1 / 8


@dataclass
class Recipe:
    """Optimisation recipe. `lr` is the base LR for a batch of 256; `scaled_lr` applies the rule."""

    optimizer: str = "lars"
    lr: float = 0.3
    lr_scaling: str = "linear"  # linear: lr*B/256 (Goyal et al. 2017); sqrt: lr*sqrt(B/256); none: lr
    weight_decay: float = 1e-6
    weight_decay_end: float | None = None  # cosine weight-decay schedule to this value (DINO)
    momentum: float = 0.9  # SGD / LARS momentum
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    warmup_fraction: float = 0.1  # linear warmup over this fraction of the steps, then cosine
    min_lr_fraction: float = 0.0  # LR at the end of the cosine, as a fraction of the peak
    grad_clip: float | None = None  # clip the global gradient norm (DINO: 3.0)
    exclude_bias_norm: bool = True  # no weight decay / LARS adaptation for biases and norm layers
    extra: dict[str, Any] = field(default_factory=dict)

    def scaled_lr(self, batch_size: int) -> float:
        """The peak LR for a global batch of `batch_size`: the single place where LR scaling happens."""
        if self.lr_scaling == "linear":
            return self.lr * batch_size / 256
        if self.lr_scaling == "sqrt":
            return self.lr * math.sqrt(batch_size / 256)
        return self.lr

    def __getitem__(self, key: str) -> Any:
        """recipe["temperature"]: a method-specific value from `extra`."""
        return self.extra[key]


_FIELDS = {f.name for f in fields(Recipe)}
_TYPES = asdict(Recipe())  # field defaults give the types (None: an optional number)


def _check_type(key: str, value: Any, default: Any, method: str) -> Any:
    """Coerce a YAML value to the type of the default (int -> float, list -> tuple); reject the rest."""

    def bad(kind: str) -> ConfigError:
        return ConfigError(f"recipe key '{key}' of method '{method}' must be {kind}, got {value!r}")

    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if default is None:  # optional numbers: weight_decay_end, grad_clip
        if value is not None and not is_number:
            raise bad("a number or null")
        return None if value is None else float(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if not is_number or not float(value).is_integer():
            raise bad("an integer")
        return int(value)
    if isinstance(default, float):
        if not is_number:
            raise bad("a number")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise bad(f"a list of {len(default)} numbers")
        return tuple(_check_type(key, v, d, method) for v, d in zip(value, default))
    if isinstance(default, str) and not isinstance(value, str):
        raise bad("a string")
    return value


def build_recipe(default: Recipe, overrides: dict[str, Any] | None, method: str) -> Recipe:
    """The method's default recipe with the user's overrides applied and validated."""
    base = asdict(default)
    extra = dict(base.pop("extra"))
    overrides = dict(overrides or {})
    extra_overrides = overrides.pop("extra", None) or {}
    if not isinstance(extra_overrides, dict):
        raise ConfigError(f"recipe key 'extra' of method '{method}' must be a mapping")
    for key, value in overrides.items():
        if key in _FIELDS:
            base[key] = _check_type(key, value, _TYPES[key], method)
        elif key in extra:
            extra_overrides = {key: value, **extra_overrides}
        else:
            known = sorted((_FIELDS - {"extra"}) | set(extra))
            raise ConfigError(f"unknown recipe key '{key}' for method '{method}' (known: {', '.join(known)})")
    for key, value in extra_overrides.items():
        if key not in extra:
            raise ConfigError(
                f"unknown recipe key '{key}' for method '{method}' (method keys: {', '.join(sorted(extra))})"
            )
        extra[key] = _check_type(key, value, extra[key], method)
    recipe = Recipe(**base, extra=extra)
    if recipe.optimizer not in OPTIMIZERS:
        raise ConfigError(f"recipe key 'optimizer' must be one of {', '.join(OPTIMIZERS)}, got '{recipe.optimizer}'")
    if recipe.lr_scaling not in LR_SCALINGS:
        raise ConfigError(f"recipe key 'lr_scaling' must be one of {', '.join(LR_SCALINGS)}, got '{recipe.lr_scaling}'")
    if not 0 <= recipe.warmup_fraction <= 1:
        raise ConfigError(f"recipe key 'warmup_fraction' must be in [0, 1], got {recipe.warmup_fraction}")
    return recipe


def preset_recipe(
    default: Recipe, small_batch: dict[str, Any], preset: str, method: str, overrides: dict[str, Any] | None = None
) -> Recipe:
    """The recipe of preset `preset` (the paper's, `default`, or the small-batch one built on it) with the
    user's `overrides` applied and validated."""
    if preset == PAPER:
        base = default
    elif preset == SMALL_BATCH:
        base = build_recipe(default, {**SMALL_BATCH_BASE, **small_batch}, method)
    else:
        raise ConfigError(f"unknown recipe preset '{preset}' for method '{method}' (presets: {', '.join(PRESETS)})")
    return build_recipe(base, overrides, method)


def given_keys(overrides: dict[str, Any] | None) -> set[str]:
    """The recipe keys the user set, flat or under `extra:`."""
    overrides = dict(overrides or {})
    return (set(overrides) - {"extra"}) | set(overrides.get("extra") or {})


def sample_store_limit(n_samples: int) -> int:
    """The largest stored-sample count (queue, memory bank) fitted to `n_samples` training samples: the
    largest power of two not above half of them. A longer queue holds keys of the same images from earlier
    epochs, so a query's own older key becomes one of its negatives; MoCo's 65,536 keys over EuroSAT's
    2,300 images hold each image about 28 times (65,536 -> 1,024 there)."""
    return 1 << max(0, (n_samples // 2).bit_length() - 1)


@dataclass(frozen=True)
class DataFit:
    """What `fit_to_data` decided: values to train with instead of the preset's, and warnings to show."""

    overrides: dict[str, Any]  # flat recipe keys -> adapted value (applied on top of the user's overrides)
    adaptations: list[dict[str, Any]]  # for backbone.json: {"key", "preset", "used", "reason"}
    warnings: list[str]


def fit_to_data(
    recipe: Recipe,
    *,
    method: str,
    preset: str,
    sample_store_keys: tuple[str, ...],
    paper_batch_size: int,
    n_samples: int,
    batch_size: int,
    given: set[str],
) -> DataFit:
    """Check the data- and batch-dependent keys of `recipe` (the preset with the user's overrides) against the
    training set: adapt preset values that cannot fit it, warn about user values that do not."""
    overrides: dict[str, Any] = {}
    adaptations: list[dict[str, Any]] = []
    notes: list[str] = []
    limit = sample_store_limit(n_samples)
    for key in sample_store_keys:
        value = recipe.extra[key]
        if value <= limit:
            continue
        reason = f"{value} would hold each of the {n_samples} training samples {value / n_samples:.1f} times"
        if key in given:
            notes.append(
                f"recipe key '{key}' of {method} is {value}, more than half of the {n_samples} training samples; "
                f"its queue holds stale keys of the query's own image (at most {limit} fits)"
            )
        else:
            overrides[key] = limit
            adaptations.append({"key": key, "preset": value, "used": limit, "reason": reason})
    if preset == PAPER and batch_size < paper_batch_size * SMALL_BATCH_FRACTION and not given & {"optimizer", "lr"}:
        notes.append(
            f"the paper recipe of {method} ({recipe.optimizer}, base LR {recipe.lr:g}) is tuned for batch "
            f"{paper_batch_size}; at batch {batch_size} its peak LR is {recipe.scaled_lr(batch_size):.3g}. "
            f"`--recipe small-batch` is the recipe for small batches (`rsbench methods --method {method}`)"
        )
    return DataFit(overrides, adaptations, notes)
