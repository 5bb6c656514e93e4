"""Measurements that are evidence about an evaluation rather than robustness numbers: CE-PGD
recomputed in float64 (does float32 underflow make the zero gradients?), and torchattacks'
AutoAttack checked against its authors' implementation (pyautoattack) on the same images; and
the per-image worst case that counts the cross-check's AutoAttacks on the images they covered."""
from __future__ import annotations

import copy
import time
from typing import Optional, Sequence

import torch

from attacks import AttackConfig
from attacks.autoattack_ref import collect_warnings
from bench.data import Split
from bench.evaluate import Measurement, _frac, clean_pass, run_attack
from bench.store import pack_bits


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
