"""The examples in public docstrings run and print what they claim."""

import doctest
import importlib

import pytest

MODULES = [
    "masking.functional.mask_product",
    "masking.functional.masked_linear",
    "masking.pruning.sparsify",
    "masking.functional.partial_conv",
    "masking.functional.gated_conv",
    "masking.layers.partial_conv",
    "masking.layers.gated_conv",
    "masking.layers.vanilla_conv",
    "masking.layers.create_conv",
    "masking.models.pconv_unet",
    "masking.models.deepfill",
    "masking.generators.mixed",
    "datamodules.photos",
    "datamodules.digits",
    "masking.models.resnet",
    "masking.pruning.schedule",
    "masking.pruning.granularity",
    "masking.pruning.graph",
    "masking.pruning.compact",
    "masking.pruning.export",
    "tasks.profile",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    globs = {"torch": importlib.import_module("torch"), **vars(module)}
    result = doctest.testmod(module, globs=globs, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
