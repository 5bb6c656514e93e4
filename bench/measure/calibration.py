"""The calibration family: ECE and NLL of a model's confidences on the evaluation split, on the
`raw` view (softmax(z), what a deployed model reports), the `scaled` view (softmax(z/T_train),
what it was trained to report) and after post-hoc temperature scaling (Guo et al. 2017).

The post-hoc temperature is cross-fitted: the split is cut into two seeded random halves, T is
fitted on each half's raw logits and applied to the other half, and ECE/NLL are measured on the
whole split of out-of-fold predictions. No image is scored by a T fitted on itself, and no
other held-out set is needed (the paper profile evaluates on the whole test set).
"""
from __future__ import annotations

import time
from typing import Dict, List

import torch

from bench.calibration import N_BINS, T_BOUNDS, fit_temperature, nll, reliability_bins
from bench.data import Dataset, Split, stratified_indices, to_float
from bench.errors import BenchError
from attacks.views import PassCount
from bench.measure.base import Family, Measurement, counted, pct


@torch.no_grad()
def logits_of(model, split: Split, batch_size: int) -> torch.Tensor:
    model.eval()
    return torch.cat([model(to_float(split.images[a:a + batch_size])).float()
                      for a in range(0, len(split), batch_size)])


VIEWS = ("raw", "scaled", "posthoc")


def calibration_params(seed: int) -> Dict[str, dict]:
    """Per view, what identifies its measurement: the binning, and for the post-hoc T the seed of
    the cross-fitting halves."""
    return {v: {"bins": N_BINS, **({"cross_fit_seed": seed} if v == "posthoc" else {})} for v in VIEWS}


def cross_fit_half(n: int, seed: int) -> torch.Tensor:
    """The post-hoc temperature's first cross-fitting half of n images: a seeded random half
    (small splits need not be stratifiable)."""
    half = torch.zeros(n, dtype=torch.bool)
    half[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n // 2]] = True
    return half


def evaluate_calibration(model, temperature: float, split: Split, batch_size: int, seed: int = 0) -> List[Measurement]:
    t0 = time.perf_counter()
    counting, cost = counted(model)
    z = logits_of(counting, split, batch_size).double().cpu()
    forward_s, t0 = time.perf_counter() - t0, time.perf_counter()
    y = split.labels.cpu()
    half = cross_fit_half(len(y), seed)
    fitted = [fit_temperature(z[half], y[half]), fit_temperature(z[~half], y[~half])]
    # a half with no error has no NLL-optimal T (NLL falls as T -> 0: the search stops at a bound, and
    # the other half, divided by it, had its few errors at confidence 1: nll_posthoc 30x at n=100).
    # Both halves then take the T of the half with errors: out of fold for the clean half, in fold (one
    # parameter) for the other, which the record says (posthoc_halves_without_errors)
    clean = [bool((z[h].argmax(1) == y[h]).all()) for h in (half, ~half)]
    if clean[0] != clean[1]:
        fitted = [fitted[1], fitted[1]] if clean[0] else [fitted[0], fitted[0]]
    divisor = torch.empty(len(y), dtype=torch.float64)
    divisor[~half], divisor[half] = fitted  # each half scored with the T fitted on the other
    views = {"raw": z, "scaled": z / temperature, "posthoc": z / divisor[:, None]}
    params = calibration_params(seed)
    # each record's wall time is its own, as its passes are: the forward pass the raw view's, the
    # fit the post-hoc view's (one clock for all three counted the job's time about three times)
    own = {"raw": forward_s, "scaled": 0.0, "posthoc": time.perf_counter() - t0}
    out = []
    for view, logits in views.items():
        t0 = time.perf_counter()
        bins = reliability_bins(logits, y, N_BINS)
        metrics = {"ece": bins.ece, "nll": nll(logits, y),
                   "mean_confidence": float(torch.softmax(logits, 1).amax(1).mean()),
                   "accuracy": float((logits.argmax(1) == y).double().mean())}
        # the scaled and post-hoc views reuse the raw view's logits: the one forward pass is the raw
        # record's, so the records' costs add up to what the job spent
        metrics.update((cost if view == "raw" else PassCount()).metrics(len(y)))
        if view == "posthoc":
            metrics.update(posthoc_T=sum(fitted) / 2, posthoc_T_fold_a=fitted[0], posthoc_T_fold_b=fitted[1])
            if any(clean):  # the T above is the other half's (one such half), or undetermined (both)
                metrics["posthoc_halves_without_errors"] = sum(clean)
        extra = {"reliability": {"confidence": bins.confidence.tolist(), "accuracy": bins.accuracy.tolist(),
                                 "count": bins.count.tolist()}}
        out.append(Measurement("calibration", view, 0.0, 0, params[view], len(y), metrics,
                               own[view] + time.perf_counter() - t0, family="calibration", extra=extra))
    return out


class Calibration(Family):
    name = "calibration"
    # the post-hoc view 2: a cross-fit half with no error takes the other half's T (ad6c8e5). Its
    # raw and scaled views did not change, and stay 1; committed v1 post-hoc records with errors in
    # both halves (the same numbers) were re-marked by scripts/migrate_records.py calibration-v2
    POSTHOC_VERSION = 2

    @classmethod
    def version_of(cls, identity):
        return cls.POSTHOC_VERSION if identity[2] == "posthoc" else cls.version

    @classmethod
    def prepare(cls, ctx, log):
        return cls()  # always: a forward pass over the evaluation subset

    def planned(self, spec, ctx):
        params = calibration_params(ctx.plan.profile.eval.subset_seed)
        return [(len(ctx.eval_split), "calibration", v, params[v]) for v in VIEWS]

    def run(self, model, spec, ctx, log):
        ev = ctx.plan.profile.eval
        return evaluate_calibration(model, spec.T, ctx.eval_split, ev.batch_size, ev.subset_seed)

    def summary(self, ms):
        return ", ".join(f"ECE {m.view} {pct(m.metrics['ece'])}" +
                         (f" (post-hoc T {m.metrics['posthoc_T']:.3g})" if m.view == "posthoc" else "") for m in ms)


HELD_OUT = 2000  # test images the temperature is estimated on, at most


@torch.no_grad()
def estimate_temperature(model, data: Dataset, ev) -> float:
    """The post-hoc temperature (NLL-optimal divisor of the raw logits) on up to HELD_OUT test
    images outside the evaluation subset: on the harness's own models it tracks the training T
    (README: Audit your own model): what an external model's unknown T is set to."""
    split = data.split(ev.split)
    inside = torch.zeros(len(split), dtype=torch.bool)
    # n = None evaluates the whole split (as eval_split is drawn): the temperature was then fitted on
    # 2,000 of the very images its ece_scaled and z/T view are scored on
    inside[stratified_indices(split.labels, ev.n, ev.subset_seed).cpu()] = True
    outside = (~inside).nonzero().flatten()
    give = "give its training temperature (--temperature, or temperature= in bench.audit)"
    if len(outside) == 0:
        raise BenchError(f"no test image is left outside the evaluation subset to estimate the temperature on: "
                         f"{give}, or a smaller n (--n-test, n=)")
    outside = outside[torch.randperm(len(outside), generator=torch.Generator().manual_seed(0))[:HELD_OUT]]
    held = split.subset(outside.to(split.labels.device))
    z, y = logits_of(model, held, 500).double().cpu(), held.labels.cpu()
    T = fit_temperature(z, y)
    # at a bound of the search the NLL has no minimum: it falls as T -> 0 where no held-out image is
    # wrong, as T -> inf where the logits rank the true class no better than the rest; that bound
    # (0.001, 10,000) was used as the model's T, and every scaled-view number with it. Without an
    # error the search may stop anywhere the NLL is 0 in float64 (0.00111, or 0.02 for logits of 10);
    # elsewhere within a factor 2 of a bound
    if bool((z.argmax(1) == y).all()):
        raise BenchError(f"the temperature cannot be estimated: it classifies all {len(y)} held-out test images "
                         f"correctly (the NLL falls as T -> 0); {give}")
    if T < T_BOUNDS[0] * 2 or T > T_BOUNDS[1] / 2:
        raise BenchError(f"the temperature cannot be estimated: its NLL on {len(y)} held-out test images only "
                         f"{'falls as T falls' if T < 1 else 'falls as T grows'}, to the search's bound {T:.3g}; "
                         f"{give}")
    return T
