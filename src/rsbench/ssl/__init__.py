"""SSL methods: a registry of LightningModules over a shared base (one short file per method)."""

from __future__ import annotations

from rsbench.errors import ConfigError
from rsbench.ssl.barlowtwins import BarlowTwins
from rsbench.ssl.base import SSLMethod
from rsbench.ssl.byol import BYOL
from rsbench.ssl.dino import DINO
from rsbench.ssl.mae import MAE
from rsbench.ssl.mocov2 import MoCoV2
from rsbench.ssl.mocov3 import MoCoV3
from rsbench.ssl.recipe import Recipe, build_recipe
from rsbench.ssl.simclr import SimCLR
from rsbench.ssl.vicreg import VICReg

METHODS: dict[str, type[SSLMethod]] = {
    cls.name: cls for cls in (SimCLR, MoCoV2, MoCoV3, BYOL, DINO, MAE, BarlowTwins, VICReg)
}


def get_method(name: str) -> type[SSLMethod]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown SSL method '{name}' (available: {', '.join(sorted(METHODS))})") from None


def resolve_recipe(name: str, overrides: dict | None) -> Recipe:
    """The recipe `name` would train with under `overrides` (validates keys before any work starts)."""
    method = get_method(name)
    return build_recipe(method.default_recipe, overrides, method.name)


__all__ = ["METHODS", "Recipe", "SSLMethod", "get_method", "resolve_recipe"]
