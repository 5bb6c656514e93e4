"""Natural perturbations: small rotations, translations, rescaling and colour jitter, swept over
a magnitude, plus the worst case over a grid of rotations and translations per image (Engstrom
et al. 2019, "Exploring the landscape of spatial robustness").

All through torchvision.transforms.v2.functional on whole batches on the model's device, bilinear,
zero fill (the black border of a rotated or shifted CIFAR image).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Dict, Sequence, Tuple

import torch

from bench.errors import BenchError


@functools.lru_cache(maxsize=None)
def _tf():
    """torchvision.transforms.v2.functional, imported on first use: importing torchvision costs
    about 2 s (it loads torch._dynamo), paid by every CLI process and worker that imports this
    module for its names alone."""
    import torchvision.transforms.v2.functional as TF
    return TF


def _affine(x, angle=0.0, dx=0.0, dy=0.0, scale=1.0):
    from torchvision.transforms import InterpolationMode
    return _tf().affine(x, angle=float(angle), translate=[float(dx), float(dy)], scale=float(scale),
                        shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR, fill=0.0)


def _translate(x, m):
    """Shift by m pixels; one magnitude is the four axis directions, each on a quarter of the
    batch in turn, so every direction is measured and the cost is one pass (image i of a batch gets
    direction i % 4: callers batch in multiples of 4, so the direction is the image's, not the
    batching's)."""
    out = torch.empty_like(x)
    for k, (dx, dy) in enumerate(((m, 0), (-m, 0), (0, m), (0, -m))):
        out[k::4] = _affine(x[k::4], dx=dx, dy=dy)
    return out


@dataclass(frozen=True)
class NaturalInfo:
    name: str
    unit: str
    magnitudes: Tuple[float, ...]  # the default sweep
    apply: Callable[[torch.Tensor, float], torch.Tensor]  # (x in [0,1], magnitude) -> x'


NATURAL: Dict[str, NaturalInfo] = {
    n.name: n for n in [
        # torchvision's affine turns a positive angle clockwise (its rotate, counter-clockwise)
        NaturalInfo("rotate", "degrees clockwise", (-30, -20, -10, -5, -2, 2, 5, 10, 20, 30), lambda x, m: _affine(x, angle=m)),
        NaturalInfo("translate", "pixels", (1, 2, 3, 4), _translate),
        NaturalInfo("scale", "factor", (0.8, 0.9, 1.1, 1.2), lambda x, m: _affine(x, scale=m)),
        NaturalInfo("brightness", "factor", (0.6, 0.8, 1.2, 1.4), lambda x, m: _tf().adjust_brightness(x, m)),
        NaturalInfo("contrast", "factor", (0.6, 0.8, 1.2, 1.4), lambda x, m: _tf().adjust_contrast(x, m)),
        NaturalInfo("saturation", "factor", (0.4, 0.7, 1.3, 1.6), lambda x, m: _tf().adjust_saturation(x, m)),
        NaturalInfo("hue", "shift", (-0.1, -0.05, 0.05, 0.1), lambda x, m: _tf().adjust_hue(x, m)),
    ]
}

# Engstrom et al. use +-30 degrees and +-3 px; this grid is coarser to stay cheap on a CPU.
WORST_GRID_ROTATIONS = (-30, -20, -10, 0, 10, 20, 30)
WORST_GRID_SHIFTS = (-3, 0, 3)


def check_natural(names: Sequence[str]):
    for n in names:
        if n not in NATURAL and n != "worst_grid":
            raise BenchError(f"unknown natural transform {n!r}; known: {', '.join([*NATURAL, 'worst_grid'])}")


def identity_magnitude(name: str) -> float:
    """The magnitude at which a transform leaves the image as it is."""
    return 1.0 if NATURAL[name].unit == "factor" else 0.0


def apply_natural(x: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    return NATURAL[name].apply(x, magnitude).clamp_(0, 1)


# the identity first: an image its model gets wrong unshifted leaves the worst case at once
WORST_GRID_POINTS = sorted(((a, dx, dy) for a in WORST_GRID_ROTATIONS for dx in WORST_GRID_SHIFTS
                            for dy in WORST_GRID_SHIFTS), key=lambda p: p != (0, 0, 0))


def grid_point(x: torch.Tensor, point) -> torch.Tensor:
    """``x`` rotated by ``point[0]`` degrees and shifted by ``point[1:]`` pixels."""
    angle, dx, dy = point
    return _affine(x, angle=angle, dx=dx, dy=dy).clamp_(0, 1)


def worst_grid(x: torch.Tensor):
    """Every (rotation, dx, dy) of the grid, as transformed batches (the identity first)."""
    for point in WORST_GRID_POINTS:
        yield point, grid_point(x, point)
