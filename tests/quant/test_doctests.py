"""Run the docstring examples of wqcompile.quant so they cannot go stale."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "wqcompile.quant.act_quantizer",
    "wqcompile.quant.codebook",
    "wqcompile.quant.log_histogram",
    "wqcompile.quant.weighted_entropy",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"np": importlib.import_module("numpy")})
    assert result.attempted > 0 and result.failed == 0
