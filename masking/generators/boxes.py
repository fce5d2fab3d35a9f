from __future__ import annotations

import torch
from torch import Tensor

from ._draw import draw_boxes
from .base import MaskGenerator, check_int_range, check_range, randint, uniform


class Boxes(MaskGenerator):
    """Axis-aligned rectangular holes.

    Args:
        boxes: (min, max) rectangles per image.
        side: (min, max) side of a rectangle as a fraction of the image side (height and width drawn
            independently).
    """

    def __init__(
        self,
        *,
        boxes: tuple[int, int] = (1, 3),
        side: tuple[float, float] = (0.1, 0.4),
        hole_ratio: tuple[float, float] | None = None,
        max_tries: int = 50,
        ramp_start: float = 1.0,
    ) -> None:
        super().__init__(hole_ratio=hole_ratio, max_tries=max_tries, ramp_start=ramp_start)
        self.boxes = check_int_range("boxes", boxes, low=0)
        self.side = check_range("side", side, low=0.0, high=1.0)

    def holes(self, height, width, scale, generator, device) -> Tensor:
        rows = []
        for _ in range(randint(generator, *self.boxes)):
            h = max(1, round(uniform(generator, *self.side) * scale * height))
            w = max(1, round(uniform(generator, *self.side) * scale * width))
            top = randint(generator, 0, height - h)
            left = randint(generator, 0, width - w)
            rows.append((top, left, h, w))
        return draw_boxes(height, width, torch.tensor(rows).view(-1, 4), device=device)

    def extra_repr(self) -> str:
        return f"boxes={self.boxes}, side={self.side}"
