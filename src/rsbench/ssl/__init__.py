"""SSL methods: a registry of LightningModules over a shared base (one short file per method).

What a method is (name, paper, default backbone and recipe) lives in rsbench.ssl.catalog, which
imports no torch; its code (rsbench.ssl.<method>, torch + Lightning + lightly) is imported on first
use: `get_method(name)` loads one method, `METHODS` (built on first access, PEP 562) loads them all,
and `SSLMethod` loads the base. So `rsbench methods`, recipe checks and the benchmark planner stay
fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rsbench.errors import ConfigError
from rsbench.ssl.catalog import CATALOG, MethodCard, get_card
from rsbench.ssl.recipe import PAPER, Recipe

if TYPE_CHECKING:
    from rsbench.ssl.base import SSLMethod

    METHODS: dict[str, type[SSLMethod]]


def _registry() -> dict[str, type[SSLMethod]] | None:
    """METHODS once built (it may then also hold methods registered by hand), else None."""
    return globals().get("METHODS")


def get_method(name: str) -> type[SSLMethod]:
    """The method's class; imports its module (and torch) on first use."""
    registry = _registry()
    if registry is not None:
        try:
            return registry[name]
        except KeyError:
            raise ConfigError(f"unknown SSL method '{name}' (available: {', '.join(sorted(registry))})") from None
    return get_card(name).load()


def resolve_recipe(name: str, overrides: dict | None, preset: str = PAPER) -> Recipe:
    """The recipe `name` would train with under `preset` and `overrides` (validates keys before any work
    starts). Reads the catalog: no torch."""
    registry = _registry()
    if registry is not None and name in registry:
        return registry[name].base_recipe(preset, overrides)
    return get_card(name).recipe(preset, overrides)


def __getattr__(name: str) -> Any:
    if name == "METHODS":
        methods = {card_name: card.load() for card_name, card in CATALOG.items()}
        globals()["METHODS"] = methods  # built once: later additions (a test's own method) are kept
        return methods
    if name == "SSLMethod":
        from rsbench.ssl.base import SSLMethod

        return SSLMethod
    raise AttributeError(f"module 'rsbench.ssl' has no attribute {name!r}")


__all__ = ["CATALOG", "METHODS", "MethodCard", "Recipe", "SSLMethod", "get_card", "get_method", "resolve_recipe"]
