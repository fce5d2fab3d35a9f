import pytest
import torch
import torch.nn.functional as F

from masking.models._upsample import upsample2x
from tests.compiled import assert_compiles_like_eager


def reference(x):
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_matches_interpolate_values_and_gradient(dtype):
    x = torch.randn(3, 5, 6, 7, dtype=dtype)
    ours_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, ref = upsample2x(ours_x), reference(ref_x)
    assert out.shape == (3, 5, 12, 14) and out.dtype == dtype
    assert torch.equal(out, ref)
    grad = torch.randn_like(ref)
    out.backward(grad)
    ref.backward(grad)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=tol, atol=tol)


def test_gradcheck_float64():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(upsample2x, (x,))
    assert torch.autograd.gradgradcheck(upsample2x, (x,))


def test_channels_last_keeps_its_layout():
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    out = upsample2x(x)
    assert torch.equal(out, reference(x))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_bool_mask():
    mask = torch.rand(2, 1, 4, 4) > 0.5
    assert torch.equal(upsample2x(mask), reference(mask.float()).bool())


def test_torch_compile():
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    assert_compiles_like_eager(upsample2x, [x], backend="aot_eager")
    # a non-contiguous input takes F.interpolate
    transposed = x.detach().transpose(2, 3).requires_grad_()
    assert_compiles_like_eager(upsample2x, [transposed], backend="aot_eager")
