"""Independent references for the tests: written from the papers' formulas with unfold and einsum,
sharing no code with ``masking``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def partial_conv2d_unfold(
    x: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> tuple[Tensor, Tensor]:
    """Liu et al. 2018 in float64: returns (out, new_mask) with new_mask (B, groups, H', W')."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    x, mask, weight = x.double(), mask.double(), weight.double()
    b, c_in, h, w = x.shape
    c_out, per_group, kh, kw = weight.shape
    # a (B, 1, H, W) mask gives the same ratio as the same mask repeated on every channel
    m = mask.expand(b, c_in, h, w)
    cols = F.unfold(x * m, (kh, kw), dilation, padding, stride)
    mcols = F.unfold(m, (kh, kw), dilation, padding, stride)
    length = cols.shape[-1]
    cols = cols.view(b, groups, per_group * kh * kw, length)
    mcols = mcols.view(b, groups, per_group * kh * kw, length)
    raw = torch.einsum("gok,bgkl->bgol", weight.view(groups, c_out // groups, -1), cols)
    count = mcols.sum(2)  # (B, G, L)
    window = per_group * kh * kw
    valid = count > 0
    ratio = torch.where(valid, window / count.clamp_min(1e-300), torch.zeros_like(count))
    out = raw * ratio[:, :, None]
    if bias is not None:
        out = out + bias.double().view(1, groups, c_out // groups, 1) * valid[:, :, None]
    out_h = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return out.reshape(b, c_out, out_h, out_w), valid.double().view(b, groups, out_h, out_w)


def gated_conv2d_split(x, weight, bias, stride=1, padding=0, dilation=1, groups=1, phi=F.elu):
    """Two separate convolutions, features and gates, from the per-group [features, gates] layout."""
    c2 = weight.shape[0]
    per = c2 // (2 * groups)
    rows = torch.arange(c2).view(groups, 2, per)
    feat_rows, gate_rows = rows[:, 0].reshape(-1), rows[:, 1].reshape(-1)
    fb = None if bias is None else bias[feat_rows]
    gb = None if bias is None else bias[gate_rows]
    feature = F.conv2d(x, weight[feat_rows], fb, stride, padding, dilation, groups)
    gate = F.conv2d(x, weight[gate_rows], gb, stride, padding, dilation, groups)
    return (feature if phi is None else phi(feature)) * torch.sigmoid(gate)


def blob_mask(batch: int, size: int, hole_ratio: float, seed: int = 0) -> Tensor:
    """Smooth random holes (1 = valid) covering about ``hole_ratio`` of each image."""
    g = torch.Generator().manual_seed(seed)
    coarse = max(size // 4, 2)
    noise = torch.rand(batch, 1, coarse, coarse, generator=g)
    field = F.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
    threshold = torch.quantile(field.flatten(1), hole_ratio, dim=1).view(batch, 1, 1, 1)
    return (field > threshold).float()


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """rtol/atol from the dtype's resolution (inputs of order 1, sums over tens of terms)."""
    return {
        torch.float64: {"rtol": 1e-10, "atol": 1e-10},
        torch.float32: {"rtol": 1e-5, "atol": 1e-5},
        torch.float16: {"rtol": 1e-2, "atol": 1e-2},
        torch.bfloat16: {"rtol": 5e-2, "atol": 5e-2},
    }[dtype]


def assert_same_function(out: Tensor, expected: Tensor, leaves) -> None:
    """Equal outputs, and equal gradients of a squared loss for every leaf."""
    torch.testing.assert_close(out, expected)
    got = torch.autograd.grad(out.square().sum(), leaves)
    want = torch.autograd.grad(expected.square().sum(), leaves)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def ring_fill_loop(image: Tensor, mask: Tensor, radius: int = 3) -> Tensor:
    """Telea's (2004) fill without its gradient term, pixel by pixel in float64: each hole pixel's
    ring is its chessboard distance to the nearest known pixel; rings are filled in order, a pixel
    taking the mean of the pixels within ``radius`` (its 8 neighbours at least) of a smaller ring,
    weighted by ``|cos θ| / d² / (1 + Δring)`` with ``θ`` between the offset and the ring map's
    central-difference gradient at the pixel (edges replicated). ``image`` ``(C, H, W)``, ``mask``
    ``(H, W)``, 1 = known."""
    c, h, w = image.shape
    known = [(y, x) for y in range(h) for x in range(w) if mask[y, x] > 0.5]
    ring = torch.zeros(h, w, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            if mask[y, x] <= 0.5:
                ring[y, x] = min(max(abs(y - qy), abs(x - qx)) for qy, qx in known)
    out = image.double().clone()
    out[:, mask <= 0.5] = 0
    reach = max(radius * radius, 2)
    holes = sorted((float(ring[y, x]), y, x) for y in range(h) for x in range(w) if ring[y, x])
    for t, y, x in holes:
        gy = (ring[min(y + 1, h - 1), x] - ring[max(y - 1, 0), x]) / 2
        gx = (ring[y, min(x + 1, w - 1)] - ring[y, max(x - 1, 0)]) / 2
        norm = max(float((gy**2 + gx**2) ** 0.5), 1e-6)
        total, weights = torch.zeros(c, dtype=torch.float64), 0.0
        for dy in range(-radius - 1, radius + 2):
            for dx in range(-radius - 1, radius + 2):
                qy, qx = y + dy, x + dx
                d2 = dy * dy + dx * dx
                if not (0 < d2 <= reach and 0 <= qy < h and 0 <= qx < w and ring[qy, qx] < t):
                    continue
                cos = max(abs(float(gy) * dy + float(gx) * dx) / (d2**0.5 * norm), 1e-3)
                weight = cos / d2 / (1 + t - float(ring[qy, qx]))
                total += weight * out[:, qy, qx]
                weights += weight
        out[:, y, x] = total / weights
    return out
