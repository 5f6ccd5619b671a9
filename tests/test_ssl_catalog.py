"""rsbench.ssl.catalog agrees with the method implementations it points to."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import rsbench.ssl
from rsbench.errors import ConfigError
from rsbench.ssl import METHODS, SSLMethod, get_method
from rsbench.ssl.catalog import CATALOG, get_card


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_card_resolves_to_a_class_with_its_defaults(name):
    card = CATALOG[name]
    cls = card.load()
    assert cls.__name__ == card.implementation.partition(":")[2] and cls.__module__ == card.implementation.split(":")[0]
    assert cls.card is card and cls.name == card.name == name
    assert cls.default_recipe is card.default_recipe and cls.default_backbone == card.default_backbone
    assert (cls.paper, cls.paper_epochs, cls.paper_batch_size) == (card.paper, card.paper_epochs, card.paper_batch_size)
    assert card.summary and "\n" not in card.summary
    assert get_method(name) is cls and METHODS[name] is cls


def test_catalog_lists_every_method_module_of_rsbench_ssl():
    defined = {}
    for info in pkgutil.iter_modules(rsbench.ssl.__path__):
        module = importlib.import_module(f"rsbench.ssl.{info.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, SSLMethod) and obj is not SSLMethod and obj.__module__ == module.__name__:
                defined[obj.name] = obj
    assert set(defined) == set(CATALOG) == set(METHODS)
    assert list(METHODS) == list(CATALOG)  # `rsbench methods` order


def test_unknown_method_names_the_known_ones():
    for lookup in (get_card, get_method):
        known = r"\(available: barlowtwins, byol, dino, dinov2, distill, mae,"
        with pytest.raises(ConfigError, match=r"unknown SSL method 'nope' " + known):
            lookup("nope")
