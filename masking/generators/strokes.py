"""Brush-stroke holes: DeepFill v2's free-form strokes and LaMa-style irregular strokes."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._draw import draw_strokes
from .base import (
    MaskGenerator,
    check_finite,
    check_int_range,
    check_positive,
    check_positive_range,
    randint,
    uniform,
)


class FreeFormStrokes(MaskGenerator):
    """Free-form brush strokes as in DeepFill v2 (Yu et al., 2019).

    Each stroke is a polyline of ``vertices`` segments whose directions alternate around
    ``mean_angle ± angle_range`` and whose lengths are normal around a radius of ``diag / 8``, drawn
    with a round brush of ``width`` pixels (given for 256-px images and scaled to the image). The mask is
    then flipped left-right and up-down with probability 1/2 each; unlike the original code, where the
    flips were computed and discarded, here they happen.

    Args:
        strokes: (min, max) number of strokes per image.
        vertices: (min, max) segments per stroke.
        width: (min, max) brush width in pixels at 256 px.
        mean_angle, angle_range: stroke turning angle distribution, radians.
        flip: apply the random flips (``False`` reproduces the original code's one-sided strokes).
    """

    def __init__(
        self,
        *,
        strokes: tuple[int, int] = (1, 3),
        vertices: tuple[int, int] = (4, 12),
        width: tuple[float, float] = (12.0, 40.0),
        mean_angle: float = 2 * math.pi / 5,
        angle_range: float = 2 * math.pi / 15,
        flip: bool = True,
        hole_ratio: tuple[float, float] | None = None,
        max_tries: int = 50,
        ramp_start: float = 1.0,
    ) -> None:
        super().__init__(hole_ratio=hole_ratio, max_tries=max_tries, ramp_start=ramp_start)
        self.strokes = check_int_range("strokes", strokes, low=0)
        self.vertices = check_int_range("vertices", vertices, low=1)
        self.width = check_positive_range("width", width)
        self.mean_angle = check_finite("mean_angle", mean_angle)
        self.angle_range = check_finite("angle_range", angle_range)
        self.flip = bool(flip)

    def holes(self, height, width, scale, generator, device) -> Tensor:
        size = scale * min(height, width) / 256
        radius = scale * math.hypot(height, width) / 8
        starts, ends, widths = [], [], []
        for _ in range(randint(generator, *self.strokes)):
            n = randint(generator, *self.vertices)
            point = torch.tensor([uniform(generator, 0, height), uniform(generator, 0, width)])
            brush = uniform(generator, *self.width) * size
            for i in range(n):
                angle = uniform(
                    generator,
                    self.mean_angle - self.angle_range,
                    self.mean_angle + self.angle_range,
                )
                if i % 2 == 0:
                    angle = 2 * math.pi - angle
                length = float(torch.randn((), generator=generator)) * radius / 2 + radius
                length = min(max(length, 0.0), 2 * radius)
                step = torch.tensor([length * math.sin(angle), length * math.cos(angle)])
                end = (point + step).clamp(
                    min=torch.zeros(2), max=torch.tensor([height - 1.0, width - 1.0])
                )
                starts.append(point)
                ends.append(end)
                widths.append(brush)
                point = end
        canvas = _strokes_canvas(height, width, starts, ends, widths, device)
        if self.flip and float(torch.rand((), generator=generator)) < 0.5:
            canvas = canvas.flip(1)
        if self.flip and float(torch.rand((), generator=generator)) < 0.5:
            canvas = canvas.flip(0)
        return canvas

    def extra_repr(self) -> str:
        return f"strokes={self.strokes}, vertices={self.vertices}, width={self.width}"


# LaMa's thin / medium / thick vocabulary, in pixels at 256 px (scaled to the image):
# (min strokes, max strokes, max segment length, max brush width)
IRREGULAR_PRESETS: dict[str, tuple[int, int, float, float]] = {
    "thin": (4, 50, 40.0, 10.0),
    "medium": (4, 5, 100.0, 50.0),
    "thick": (1, 5, 200.0, 100.0),
}


class IrregularStrokes(MaskGenerator):
    """Random-walk strokes of random width, with LaMa's ``thin``, ``medium`` and ``thick`` presets.

    Each stroke takes 1 to 5 straight segments; every segment turns by up to ``max_angle`` radians
    (alternating direction), is 10 + U(0, ``max_length``) pixels long and 5 + U(0, ``max_width``) wide,
    all given at 256 px and scaled to the image.

    Args:
        preset: ``"thin"``, ``"medium"`` or ``"thick"``; explicit arguments override it.
        strokes: (min, max) strokes per image.
        max_length, max_width: segment length and brush width bounds at 256 px.
        max_angle: turning angle bound, radians.
    """

    def __init__(
        self,
        preset: str = "medium",
        *,
        strokes: tuple[int, int] | None = None,
        max_length: float | None = None,
        max_width: float | None = None,
        max_angle: float = 4.0,
        hole_ratio: tuple[float, float] | None = None,
        max_tries: int = 50,
        ramp_start: float = 1.0,
    ) -> None:
        super().__init__(hole_ratio=hole_ratio, max_tries=max_tries, ramp_start=ramp_start)
        if preset not in IRREGULAR_PRESETS:
            raise ValueError(f"preset must be one of {sorted(IRREGULAR_PRESETS)}, got {preset!r}")
        lo, hi, length, brush = IRREGULAR_PRESETS[preset]
        self.preset = preset
        self.strokes = check_int_range(
            "strokes", strokes if strokes is not None else (lo, hi), low=0
        )
        self.max_length = check_positive("max_length", length if max_length is None else max_length)
        self.max_width = check_positive("max_width", brush if max_width is None else max_width)
        self.max_angle = check_positive("max_angle", max_angle)

    def holes(self, height, width, scale, generator, device) -> Tensor:
        size = scale * min(height, width) / 256
        limit = torch.tensor([height - 1.0, width - 1.0])
        starts, ends, widths = [], [], []
        for _ in range(randint(generator, *self.strokes)):
            point = torch.tensor([uniform(generator, 0, height), uniform(generator, 0, width)])
            for i in range(randint(generator, 1, 5)):
                angle = 0.01 + uniform(generator, 0, self.max_angle)
                if i % 2 == 0:
                    angle = 2 * math.pi - angle
                length = (10 + uniform(generator, 0, self.max_length)) * size
                brush = (5 + uniform(generator, 0, self.max_width)) * size
                step = torch.tensor([length * math.sin(angle), length * math.cos(angle)])
                end = torch.minimum(torch.maximum(point + step, torch.zeros(2)), limit)
                starts.append(point)
                ends.append(end)
                widths.append(brush)
                point = end
        return _strokes_canvas(height, width, starts, ends, widths, device)

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}, strokes={self.strokes}"


def _strokes_canvas(height, width, starts, ends, widths, device) -> Tensor:
    if not starts:
        return torch.zeros(height, width, dtype=torch.bool, device=device)
    return draw_strokes(
        height, width, torch.stack(starts), torch.stack(ends), torch.tensor(widths), device=device
    )
