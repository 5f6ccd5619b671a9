"""SSL methods: a registry of LightningModules over a shared base (one short file per method)."""

from __future__ import annotations

from rsbench.errors import ConfigError
from rsbench.ssl.base import Recipe, SSLMethod
from rsbench.ssl.simclr import SimCLR

METHODS: dict[str, type[SSLMethod]] = {cls.name: cls for cls in (SimCLR,)}


def get_method(name: str) -> type[SSLMethod]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown SSL method '{name}' (available: {', '.join(sorted(METHODS))})") from None


__all__ = ["METHODS", "Recipe", "SSLMethod", "get_method"]
