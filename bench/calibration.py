"""Calibration of a classifier's confidences: ECE, NLL, post-hoc temperature scaling, the
reliability diagram.

Definitions follow Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern Neural Networks"
(ICML 2017):

* confidence = the top softmax probability, prediction = its class;
* ECE = sum over M equal-width bins B_m = ((m-1)/M, m/M] of |B_m|/n * |acc(B_m) - conf(B_m)|,
  M = 15;
* temperature scaling: one scalar T > 0 fitted on held-out logits by minimising the NLL of
  softmax(z / T); it never changes a prediction, only the confidences.

Everything is computed in float64 from the logits with log-softmax, so logits that saturate the
float32 softmax (a model trained at large T, or logits multiplied by 1e3) give finite numbers.
The temperature here is a property of the *evaluation*: it is not the training temperature of
the harness's models (a model trained at T has its own post-hoc T, fitted on its raw logits).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from bench.atomic import write_atomic

N_BINS = 15
# Bounds of the 1-D search over T. The NLL is convex in 1/T, so it has one minimum; when the
# held-out set is perfectly separated that minimum is at T -> 0 and the search stops at the bound.
T_BOUNDS = (1e-3, 1e4)


def _prep(logits, labels) -> Tuple[torch.Tensor, torch.Tensor]:
    z = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    y = torch.as_tensor(labels).detach().to("cpu", torch.int64)
    if z.ndim != 2 or y.ndim != 1 or len(z) != len(y):
        raise ValueError(f"expected logits [N, K] and labels [N], got {tuple(z.shape)} and {tuple(y.shape)}")
    if len(y) == 0:
        raise ValueError("no samples")
    if not torch.isfinite(z).all():
        raise ValueError("logits contain NaN or inf")
    return z, y


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / temperature), in nats."""
    z, y = _prep(logits, labels)
    logp = torch.log_softmax(z / temperature, dim=1)
    return float(-logp.gather(1, y[:, None]).mean())


@dataclass
class ReliabilityBins:
    edges: np.ndarray  # [n_bins + 1], 0 ... 1
    confidence: np.ndarray  # [n_bins] mean confidence per bin (NaN where empty)
    accuracy: np.ndarray  # [n_bins] accuracy per bin (NaN where empty)
    count: np.ndarray  # [n_bins] samples per bin

    @property
    def ece(self) -> float:
        filled = self.count > 0
        w = self.count[filled] / self.count.sum()
        return float((w * np.abs(self.accuracy[filled] - self.confidence[filled])).sum())


def reliability_bins(logits, labels, n_bins: int = N_BINS, temperature: float = 1.0) -> ReliabilityBins:
    """Per-bin mean confidence, accuracy and count, bins ((m-1)/M, m/M] as in Guo et al."""
    z, y = _prep(logits, labels)
    probs = torch.softmax(z / temperature, dim=1)
    conf, pred = probs.max(dim=1)
    correct = (pred == y).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    # right-closed bins: bucketize(right=False) puts conf == edge m into bin m-1, as (lo, hi] wants
    idx = (torch.bucketize(conf, edges, right=False) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(idx, minlength=n_bins).double()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = (torch.bincount(idx, weights=conf, minlength=n_bins) / count).numpy()
        acc = (torch.bincount(idx, weights=correct, minlength=n_bins) / count).numpy()
    return ReliabilityBins(edges.numpy(), mean_conf, acc, count.numpy().astype(np.int64))


def ece(logits, labels, n_bins: int = N_BINS, temperature: float = 1.0) -> float:
    """Expected calibration error (Guo et al. 2017), 15 equal-width confidence bins."""
    return reliability_bins(logits, labels, n_bins, temperature).ece


def fit_temperature(logits, labels, bounds: Tuple[float, float] = T_BOUNDS) -> float:
    """The T minimising NLL(softmax(logits / T)) on held-out data.

    A bounded Brent search over log T (scipy's minimize_scalar): one dimension needs no
    gradient, log T makes the search scale-free (the optimum may be 0.5 or 500), and each
    evaluation is an exact float64 log-softmax, so saturated logits cannot make it NaN, which
    LBFGS on T itself does in float32 when the logits are large.
    """
    from scipy.optimize import minimize_scalar
    z, y = _prep(logits, labels)
    z_y = z.gather(1, y[:, None]).squeeze(1)

    def objective(log_t: float) -> float:
        zt = z / math.exp(log_t)
        return float((torch.logsumexp(zt, dim=1) - z_y / math.exp(log_t)).mean())

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(res.x))


@dataclass
class CalibrationReport:
    temperature: float  # fitted on the held-out set
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    n_fit: int
    n_eval: int


def temperature_scaling(fit_logits, fit_labels, eval_logits=None, eval_labels=None,
                        n_bins: int = N_BINS) -> CalibrationReport:
    """Fit T on (fit_logits, fit_labels); report ECE and NLL before and after scaling on the
    evaluation set (the fit set itself when none is given: optimistic, say so where reported)."""
    t = fit_temperature(fit_logits, fit_labels)
    if eval_logits is None:
        eval_logits, eval_labels = fit_logits, fit_labels
    return CalibrationReport(t, ece(eval_logits, eval_labels, n_bins), ece(eval_logits, eval_labels, n_bins, t),
                             nll(eval_logits, eval_labels), nll(eval_logits, eval_labels, t),
                             len(fit_labels), len(eval_labels))


def plot_reliability(logits, labels, path: Path, n_bins: int = N_BINS, temperature: float = 1.0,
                     title: Optional[str] = None) -> Path:
    """Reliability diagram: accuracy per confidence bin as bars, the gap to the diagonal shaded
    (red: over-confident, orange: under-confident), sample counts below; ECE in the title.
    Written atomically as PNG."""
    return plot_bins([(title, reliability_bins(logits, labels, n_bins, temperature), temperature)], path)


def plot_bins(panels, path: Path) -> Path:
    """Reliability diagrams side by side, one per (title, ReliabilityBins, temperature) panel:
    accuracy per confidence bin as bars, the gap to the diagonal shaded (red: over-confident,
    orange: under-confident), sample counts below, ECE in the title. Written atomically as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(panels), figsize=(4.8 * len(panels), 5.6), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]})
    for (title, bins, temperature), ax, axc in zip(panels, axes[0], axes[1]):
        _draw_bins(ax, axc, bins, title, temperature)
    # fixed margins instead of tight_layout, and 90 dpi: a report draws one of these per model,
    # and layout plus rasterising were most of the report's time
    fig.subplots_adjust(left=0.08 / len(panels) ** 0.5, right=0.98, top=0.91, bottom=0.09, wspace=0.28, hspace=0.1)
    path = Path(path)
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    finally:
        plt.close(fig)
    return path


def _draw_bins(ax, axc, bins: ReliabilityBins, title: Optional[str], temperature: float):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    n_bins = len(bins.count)
    centers = (bins.edges[:-1] + bins.edges[1:]) / 2
    width = 1.0 / n_bins
    filled = bins.count > 0
    ax.bar(centers[filled], bins.accuracy[filled], width=width, color="#4c72b0", edgecolor="black",
           linewidth=0.5, label="accuracy")
    over, under = "#d62728", "#ff7f0e"
    for c, a, p in zip(centers[filled], bins.accuracy[filled], bins.confidence[filled]):
        lo, hi = sorted((a, p))
        colour = over if p > a else under
        ax.bar(c, hi - lo, bottom=lo, width=width, color=colour, alpha=0.35, edgecolor=colour, hatch="//",
               linewidth=0.5)
    ax.plot([0, 1], [0, 1], "k--", linewidth=1)
    handles = [Line2D([], [], color="k", linestyle="--", label="perfect calibration"),
               Patch(color="#4c72b0", label="accuracy"),
               Patch(facecolor=over, alpha=0.35, hatch="//", label="gap: over-confident"),
               Patch(facecolor=under, alpha=0.35, hatch="//", label="gap: under-confident")]
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    head = title + "\n" if title else ""
    scaled = f", T={temperature:.3g}" if temperature != 1.0 else ""
    ax.set_title(f"{head}ECE = {100 * bins.ece:.2f}% ({n_bins} bins, n={int(bins.count.sum())}{scaled})",
                 fontsize=10)
    axc.bar(centers, bins.count, width=width, color="grey", edgecolor="black", linewidth=0.5)
    axc.set_xlabel("confidence (top softmax probability)")
    axc.set_ylabel("count")
