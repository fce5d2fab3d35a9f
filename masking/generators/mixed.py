from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from .base import MaskGenerator


class MixedMasks(MaskGenerator):
    """Per image, one generator drawn from ``generators`` with the given probabilities.

    Args:
        generators: ``{name: generator}``; each keeps its own settings.
        probabilities: ``{name: weight}`` (normalised; default uniform).
        hole_ratio, max_tries, ramp_start: applied to the mixture's output.

    Example:
        >>> from masking.generators import Boxes, IrregularStrokes
        >>> mixed = MixedMasks({"thin": IrregularStrokes("thin"), "boxes": Boxes()},
        ...                    probabilities={"thin": 0.7, "boxes": 0.3})
        >>> mixed(4, 64, 64, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 1, 64, 64])
    """

    def __init__(
        self,
        generators: Mapping[str, MaskGenerator],
        *,
        probabilities: Mapping[str, float] | None = None,
        hole_ratio: tuple[float, float] | None = None,
        max_tries: int = 50,
        ramp_start: float = 1.0,
    ) -> None:
        super().__init__(hole_ratio=hole_ratio, max_tries=max_tries, ramp_start=ramp_start)
        if not isinstance(generators, Mapping):
            raise TypeError(
                f"generators must be a mapping {{name: MaskGenerator}}, got {type(generators).__name__}"
            )
        if not generators:
            raise ValueError("generators must name at least one mask generator")
        for name, gen in generators.items():
            if not isinstance(gen, MaskGenerator):
                raise TypeError(
                    f"generators[{name!r}] must be a MaskGenerator, got {type(gen).__name__}"
                )
        self.names = list(generators)
        self.generators = dict(generators)
        probabilities = probabilities or dict.fromkeys(self.names, 1.0)
        if not isinstance(probabilities, Mapping):
            raise TypeError(
                f"probabilities must be a mapping {{name: weight}}, got {type(probabilities).__name__}"
            )
        unknown = set(probabilities) - set(self.names)
        if unknown:
            raise ValueError(f"probabilities name unknown generators {sorted(unknown)}")
        for name, weight in probabilities.items():
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int | float)
                or not 0 <= weight < math.inf
            ):
                raise ValueError(
                    f"probabilities[{name!r}] must be a finite number >= 0, got {weight!r}"
                )
        weights = [float(probabilities.get(name, 0.0)) for name in self.names]
        if sum(weights) <= 0:
            raise ValueError(f"probabilities must have a positive sum, got {dict(probabilities)}")
        self.weights = torch.tensor(weights) / sum(weights)

    def holes(self, height, width, scale, generator, device) -> Tensor:
        index = int(torch.multinomial(self.weights, 1, generator=generator))
        return self.generators[self.names[index]].holes(height, width, scale, generator, device)

    def extra_repr(self) -> str:
        return ", ".join(f"{n}: {w:.2f}" for n, w in zip(self.names, self.weights.tolist()))
