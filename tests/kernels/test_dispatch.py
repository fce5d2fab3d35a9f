import types

import pytest
import torch

from masking import kernels
from masking.kernels import dispatch


@pytest.fixture
def broken_triton(monkeypatch):
    def fail(*args):
        raise RuntimeError("no kernel image for this GPU\nsecond line")

    fake = types.SimpleNamespace(mask_product=fail)
    monkeypatch.setattr(dispatch, "triton_kernels", lambda t: fake)
    monkeypatch.setattr(dispatch, "_triton_broken", None)
    return fake


def test_auto_falls_back_once_with_a_warning(broken_triton):
    x = torch.ones(3)
    with pytest.warns(
        RuntimeWarning, match=r"no kernel image for this GPU\); using the PyTorch reference"
    ):
        assert dispatch.run_kernel("mask_product", x, x) is None
    assert dispatch._triton_broken == "RuntimeError: no kernel image for this GPU"
    broken_triton.mask_product = lambda *a: pytest.fail("Triton must not be retried")
    assert dispatch.run_kernel("mask_product", x, x) is None


def test_forced_triton_raises(broken_triton):
    with kernels.backend("triton"), pytest.raises(RuntimeError, match="no kernel image"):
        dispatch.run_kernel("mask_product", torch.ones(3), torch.ones(3))


def test_cpu_tensors_use_the_reference_in_auto_mode():
    assert dispatch.get_backend() == "auto"
    assert dispatch.triton_kernels(torch.ones(3)) is None
    with kernels.backend("reference"):
        assert dispatch.triton_kernels(torch.ones(3)) is None


def test_traced_tensors_never_reach_triton(broken_triton):
    # the autograd formulas run under torch.compile's tracing: a kernel launched on a fake tensor
    # would fail, and in auto mode that failure would turn Triton off for the whole process
    from torch._subclasses.fake_tensor import FakeTensorMode

    broken_triton.mask_product = lambda *a: pytest.fail("a traced tensor reached Triton")
    with FakeTensorMode():
        fake = torch.empty(3)
        assert dispatch.traced(fake)
        assert dispatch.run_kernel("mask_product", fake, fake) is None
    assert dispatch._triton_broken is None
    assert not dispatch.traced(torch.ones(3)) and not dispatch.traced(
        torch.nn.Parameter(torch.ones(3))
    )
