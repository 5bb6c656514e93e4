"""Measurements that are evidence about an evaluation rather than robustness numbers: CE-PGD
recomputed in float64 (does float32 underflow make the zero gradients?), and torchattacks'
AutoAttack checked against its authors' implementation (pyautoattack) on the same images; and
the per-image worst case that counts the cross-check's AutoAttacks on the images they covered."""
from __future__ import annotations

import copy
import time
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from attacks import AttackConfig
from attacks.autoattack_ref import collect_warnings
from bench.data import Split
from bench.evaluate import Measurement, _frac, clean_pass, pack_bits, run_attack, unpack_bits


def fp64_check(model, temperature: float, split: Split, pgd: AttackConfig, batch_size: int, seed: int,
               n_classes: int) -> Measurement:
    """The same CE-PGD (raw view, same seeds) in float32 and in float64. A softmax saturated in
    float32 (p = 1.0 exactly, gradient 0) may still have a gradient in float64: if the float64
    attack is much stronger, the float32 "robustness" was underflow."""
    t0 = time.perf_counter()
    metrics = {}
    for tag, m, dtype in (("fp32", model, None), ("fp64", copy.deepcopy(model).double(), torch.float64)):
        m.eval()
        ok, zero, sat = clean_pass(m, split, batch_size, ["raw"], temperature, dtype=dtype)
        robust, *_ = run_attack(m, temperature, split, ok, pgd, "raw", batch_size, seed, n_classes, dtype=dtype)
        metrics.update({f"clean_acc_{tag}": _frac(ok), f"robust_acc_{tag}": _frac(robust),
                        f"zero_grad_frac_{tag}": _frac(zero["raw"]), f"saturated_frac_{tag}": _frac(sat["raw"])})
    return Measurement("pgd_fp64", "raw", pgd.eps, pgd.steps, dict(pgd.kwargs, attack=pgd.name), len(split), metrics,
                       time.perf_counter() - t0, family="diagnostic")


def autoattack_crosscheck(model, temperature: float, split: Split, ours: AttackConfig, ref: AttackConfig,
                          batch_size: int, seed: int, n_classes: int, positions: Optional[Sequence[int]] = None,
                          eval_n: Optional[int] = None) -> Measurement:
    """torchattacks' AutoAttack and the authors' on the same images, raw view, same seed.

    ``split`` is a subset of the ``eval_n``-image evaluation split and ``positions`` its images'
    places there. The record keeps them with each AutoAttack's per-image result (``bits``: robust
    under both), so that robust_worst counts the two AutoAttacks on the images they covered; and
    the warnings the authors' code raised (its own evaluation flags: zero gradients, Square
    beating the gradient attacks, ...), which the audit shows."""
    t0 = time.perf_counter()
    model.eval()
    ok, _, _ = clean_pass(model, split, batch_size, ["raw"], temperature)
    metrics = {"clean_acc": _frac(ok)}
    robust = {}
    with collect_warnings() as warnings:
        for tag, cfg in (("torchattacks", ours), ("pyautoattack", ref)):
            robust[tag], *_ = run_attack(model, temperature, split, ok, cfg, "raw", batch_size, seed, n_classes)
            metrics[f"robust_acc_{tag}"] = _frac(robust[tag])
    metrics["abs_diff"] = abs(metrics["robust_acc_torchattacks"] - metrics["robust_acc_pyautoattack"])
    metrics["aa_warnings"] = len(warnings)
    extra = {f"bits_{tag}": pack_bits(r) for tag, r in robust.items()}
    extra["autoattack_warnings"] = list(warnings)
    if positions is not None:
        extra["positions"] = {"eval_n": int(eval_n), "index": [int(i) for i in positions]}
    params = dict(ours.kwargs, attacks=[ours.name, ref.name])
    return Measurement("autoattack_crosscheck", "raw", ours.eps, ours.steps, params, len(split), metrics,
                       time.perf_counter() - t0, family="diagnostic",
                       bits=pack_bits(robust["torchattacks"] & robust["pyautoattack"]), extra=extra)


def _covered(row, n: int) -> bool:
    """A cross-check row of the bits table that says which images of the ``n``-image evaluation
    split it attacked (one of an earlier run with another n says nothing about these)."""
    pos = getattr(row, "positions", None)
    return row.threat == "autoattack_crosscheck" and isinstance(pos, dict) and pos.get("eval_n") == n


def crosscheck_on_split(row, n: int) -> np.ndarray:
    """A cross-check's per-image result laid over the ``n`` images of the evaluation split: its
    result where it attacked an image, True (no evidence) elsewhere."""
    out = np.ones(n, dtype=bool)
    out[np.asarray(row.positions["index"], dtype=int)] = unpack_bits(row.bits, int(row.n))
    return out


def headline_rows(rows: pd.DataFrame, n: int, eps: float) -> pd.DataFrame:
    """The rows of a model's bits table that robust_min is the minimum of: every Linf attack at
    ``eps`` on all ``n`` images of the evaluation split."""
    from bench.report import threat_norm
    return rows[np.isclose(rows.eps.astype(float), eps) & (rows.family == "attack") & (rows.n == n) &
                (rows.threat.map(threat_norm) == "linf")]


def worst_case_bits(rows: pd.DataFrame, n: int, eps: float) -> Optional[np.ndarray]:
    """Per image of a model's ``n``-image evaluation split: robust under every Linf attack at
    ``eps`` and, on the images the AutoAttack cross-check covered, under both its AutoAttacks.
    ``rows``: the model's rows of the store's bits table (one run). None without attacks."""
    head = headline_rows(rows, n, eps)
    if head.empty:
        return None
    masks = [unpack_bits(b, n) for b in head.bits]
    cc = rows[np.isclose(rows.eps.astype(float), eps)]
    masks += [crosscheck_on_split(r, n) for r in cc.itertuples() if _covered(r, n)]
    return np.logical_and.reduce(masks)


def suite_min_on_crosscheck(rows: pd.DataFrame, n: int, eps: float):
    """(robust_min on the cross-check's images, the attack/view that gives it, how many images)
    for one model's bits rows; None when no cross-check says which images it attacked."""
    head = headline_rows(rows, n, eps)
    cc = [r for r in rows[np.isclose(rows.eps.astype(float), eps)].itertuples() if _covered(r, n)]
    if head.empty or not cc:
        return None
    pos = np.asarray(cc[0].positions["index"], dtype=int)
    accs = {f"{r.threat}/{r.view}": float(unpack_bits(r.bits, n)[pos].mean()) for r in head.itertuples()}
    by = min(accs, key=accs.get)
    return accs[by], by, len(pos)
