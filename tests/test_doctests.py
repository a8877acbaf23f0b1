"""The examples in the package's docstrings run and print what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import qa

# Every module of the package and its subpackages (qa.web.*), but no launcher (__main__ serves).
MODULES = sorted(m.name.removeprefix("qa.") for m in pkgutil.walk_packages(qa.__path__, "qa.")
                 if not m.name.endswith("__main__"))


def test_every_module_is_listed():
    assert {"answer", "engine", "followup", "retrieve", "evaluate", "text", "build",
            "web", "web.render", "web.api"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, seeds_index, monkeypatch):
    monkeypatch.setenv("QA_INDEX", str(seeds_index))  # engine's example opens the default index
    module = importlib.import_module(f"qa.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in qa.{name} failed"
