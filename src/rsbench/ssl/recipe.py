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
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rsbench.errors import ConfigError

OPTIMIZERS = ("lars", "sgd", "adamw")
LR_SCALINGS = ("linear", "sqrt", "none")


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
