import os

import pytest
import torch

if not torch.cuda.is_available():
    # Without a GPU the Triton kernels are tested on CPU tensors by the interpreter. The variable is
    # read when triton.language is imported (Lightning imports it), so it is set before any test
    # module loads: set later, triton's own @jit helpers (tl.max, tl.cdiv) fail inside interpreted
    # kernels.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
