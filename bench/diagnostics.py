"""Measurements that are evidence about an evaluation rather than robustness numbers: CE-PGD
recomputed in float64 (does float32 underflow make the zero gradients?), and torchattacks'
AutoAttack checked against its authors' implementation (pyautoattack) on the same images."""
from __future__ import annotations

import copy
import time

import torch

from attacks import AttackConfig
from bench.data import Split
from bench.evaluate import Measurement, _frac, clean_pass, run_attack


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
                          batch_size: int, seed: int, n_classes: int) -> Measurement:
    """torchattacks' AutoAttack and the authors' on the same images, raw view, same seed."""
    t0 = time.perf_counter()
    model.eval()
    ok, _, _ = clean_pass(model, split, batch_size, ["raw"], temperature)
    metrics = {"clean_acc": _frac(ok)}
    for tag, cfg in (("torchattacks", ours), ("pyautoattack", ref)):
        robust, *_ = run_attack(model, temperature, split, ok, cfg, "raw", batch_size, seed, n_classes)
        metrics[f"robust_acc_{tag}"] = _frac(robust)
    metrics["abs_diff"] = abs(metrics["robust_acc_torchattacks"] - metrics["robust_acc_pyautoattack"])
    params = dict(ours.kwargs, attacks=[ours.name, ref.name])
    return Measurement("autoattack_crosscheck", "raw", ours.eps, ours.steps, params, len(split), metrics,
                       time.perf_counter() - t0, family="diagnostic")
