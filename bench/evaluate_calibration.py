"""The calibration evaluator: ECE and NLL of a model's confidences on the evaluation split, on the
`raw` view (softmax(z), what a deployed model reports), the `scaled` view (softmax(z/T_train),
what it was trained to report) and after post-hoc temperature scaling (Guo et al. 2017).

The post-hoc temperature is cross-fitted: the split is cut into two seeded random halves, T is
fitted on each half's raw logits and applied to the other half, and ECE/NLL are measured on the
whole split of out-of-fold predictions. No image is scored by a T fitted on itself, and no
other held-out set is needed (the paper profile evaluates on the whole test set).
"""
from __future__ import annotations

import time
from typing import List

import torch

from bench.calibration import N_BINS, fit_temperature, nll, reliability_bins
from bench.data import Split, to_float
from bench.evaluate import Measurement


@torch.no_grad()
def logits_of(model, split: Split, batch_size: int) -> torch.Tensor:
    model.eval()
    return torch.cat([model(to_float(split.images[a:a + batch_size])).float()
                      for a in range(0, len(split), batch_size)])


def evaluate_calibration(model, temperature: float, split: Split, batch_size: int, seed: int = 0) -> List[Measurement]:
    t0 = time.perf_counter()
    z = logits_of(model, split, batch_size).double().cpu()
    y = split.labels.cpu()
    half = torch.zeros(len(y), dtype=torch.bool)  # a seeded random half (small splits need not be stratifiable)
    half[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:len(y) // 2]] = True
    fitted = [fit_temperature(z[half], y[half]), fit_temperature(z[~half], y[~half])]
    divisor = torch.empty(len(y), dtype=torch.float64)
    divisor[~half], divisor[half] = fitted  # each half scored with the T fitted on the other
    views = {"raw": z, "scaled": z / temperature, "posthoc": z / divisor[:, None]}
    out = []
    for view, logits in views.items():
        bins = reliability_bins(logits, y, N_BINS)
        metrics = {"ece": bins.ece, "nll": nll(logits, y),
                   "mean_confidence": float(torch.softmax(logits, 1).amax(1).mean()),
                   "accuracy": float((logits.argmax(1) == y).double().mean())}
        params = {"bins": N_BINS}
        if view == "posthoc":
            metrics.update(posthoc_T=sum(fitted) / 2, posthoc_T_fold_a=fitted[0], posthoc_T_fold_b=fitted[1])
            params["cross_fit_seed"] = seed
        extra = {"reliability": {"confidence": bins.confidence.tolist(), "accuracy": bins.accuracy.tolist(),
                                 "count": bins.count.tolist()}}
        out.append(Measurement("calibration", view, 0.0, 0, params, len(y), metrics, time.perf_counter() - t0,
                               family="calibration", extra=extra))
    return out
