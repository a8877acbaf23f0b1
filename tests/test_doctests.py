"""The examples in the package's docstrings run and print what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import qa

MODULES = sorted(m.name for m in pkgutil.iter_modules(qa.__path__))


def test_every_module_is_listed():
    assert {"answer", "engine", "followup", "retrieve", "evaluate"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, seeds_index, monkeypatch):
    monkeypatch.setenv("QA_INDEX", str(seeds_index))  # engine's example opens the default index
    module = importlib.import_module(f"qa.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in qa.{name} failed"
