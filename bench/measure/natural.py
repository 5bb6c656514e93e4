"""Natural transforms (attacks/natural.py): accuracy under each transform at each magnitude of its
sweep, and the worst case over a grid of rotations and translations (an image counts as correct
only if it is classified correctly under every grid point), on the shift subset."""
from __future__ import annotations

import time
from typing import List, Sequence

import torch
from tqdm import tqdm

from attacks.natural import (NATURAL, WORST_GRID_POINTS, WORST_GRID_ROTATIONS, WORST_GRID_SHIFTS, apply_natural,
                             grid_point)
from bench.data import Split, to_float
from bench.measure.base import Family, Measurement, correct_mask, counted, frac, shift_subset


def natural_points(names: Sequence[str]) -> List[tuple]:
    """(transform, params) of every measurement of ``names``, in the order they are made."""
    out = []
    for name in names:
        if name == "worst_grid":
            out.append((name, {"rotations": list(WORST_GRID_ROTATIONS), "shifts": list(WORST_GRID_SHIFTS)}))
        else:
            out += [(name, {"magnitude": m}) for m in NATURAL[name].magnitudes]
    return out


@torch.no_grad()
def _worst_grid_ok(model, split: Split, batch_size: int) -> torch.Tensor:
    """Per image: correct at every grid point. An image leaves at its first wrong point (the
    identity comes first), so the grid costs a model ~ its worst-case accuracy, not 63 passes."""
    ok = torch.zeros(len(split), dtype=torch.bool, device=split.labels.device)
    for a in range(0, len(split), batch_size):
        x, y = to_float(split.images[a:a + batch_size]), split.labels[a:a + batch_size]
        live = torch.arange(len(y), device=y.device)
        for point in WORST_GRID_POINTS:
            if len(live) == 0:
                break
            live = live[model(grid_point(x[live], point)).argmax(1) == y[live]]
        ok[a + live] = True
    return ok


def evaluate_natural(model, split: Split, names: Sequence[str], batch_size: int, progress: bool = False,
                     desc: str = "natural") -> List[Measurement]:
    model.eval()
    out = []
    # translate gives its four directions to the images of a batch in turn (k::4): in batches of a
    # multiple of 4 image i always gets direction i % 4, whatever the profile's batch size (at 250,
    # 2 of each 250 shifted its images' directions: up to 1.2 pp on one model's accuracy)
    batch_size = max(4, batch_size - batch_size % 4)
    for name, params in tqdm(natural_points(names), disable=not progress, desc=desc, leave=False):
        t0 = time.perf_counter()
        counting, cost = counted(model)
        if name == "worst_grid":
            ok = _worst_grid_ok(counting, split, batch_size)
        else:
            ok = correct_mask(counting, split.images, split.labels, batch_size,
                              lambda x: apply_natural(x, name, params["magnitude"]))
        metrics = {"accuracy": frac(ok), **cost.metrics(len(split))}
        out.append(Measurement(name, "none", 0.0, 0, params, len(split), metrics, time.perf_counter() - t0,
                               family="natural", magnitude=float(params.get("magnitude", float("nan")))))
    return out


class Natural(Family):
    name = "natural"

    def __init__(self, split: Split, names):
        self.split, self.names = split, tuple(names)

    @classmethod
    def prepare(cls, ctx, log):
        names = ctx.plan.profile.eval.natural
        return cls(shift_subset(ctx)[1], names) if names else None

    def planned(self, spec, ctx):
        return [(len(self.split), name, "none", params) for name, params in natural_points(self.names)]

    def run(self, model, spec, ctx, log):
        return evaluate_natural(model, self.split, self.names, ctx.plan.profile.eval.batch_size, ctx.plan.progress,
                                desc=f"natural {spec.name}")
