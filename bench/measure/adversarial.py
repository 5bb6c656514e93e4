"""The attack loop: a trained model, a split, attacks and views in; measurements out. The attack
suite, the eps sweep, the transfer attack, the fp64 check, the cross-check and the trainer's
held-out check all run their attacks through it.

Robust accuracy counts a point only if it is classified correctly both clean and under attack
(the AutoAttack convention): an attack that happens to fix a wrong prediction earns nothing.
Every measurement carries its cost: the forward and backward image-passes it spent, in total
and per image of its split (attacks/views.py PassCount), beside its wall time.
"""
from __future__ import annotations

import time
from typing import Dict, List, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from attacks import AttackConfig, make_view, view_divisor
from attacks.views import PassCount, PassCounter
from bench.data import Split, to_float
from bench.measure.base import Measurement, frac
from bench.store import pack_bits, part_positions


@torch.no_grad()
def predict(model, x):
    return model(x).argmax(1)


def gradient_diagnostics(model, x, y, divisors: Dict[str, float]):
    """Per view: which inputs have an all-zero input gradient of CE(view logits), and which have a
    top softmax probability of exactly 1.0 (in the model's dtype: float32, or float64 for the
    underflow check). Both are gradient-masking signals."""
    x = x.clone().requires_grad_(True)
    logits = model(x)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    out = {}
    for i, (view, d) in enumerate(divisors.items()):
        z = logits / d
        loss = F.cross_entropy(z, y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x, retain_graph=i < len(divisors) - 1)
        zero = (g.flatten(1) == 0).all(1)
        saturated = torch.softmax(z.detach(), 1).amax(1) == 1.0
        out[view] = (zero, saturated)
    return logits.detach().argmax(1), out


def clean_pass(model, split: Split, batch_size: int, views: Sequence[str], temperature: float, dtype=None,
               cost: PassCount | None = None):
    """Clean correctness and the masking diagnostics per view, image by image; the passes spent
    are added to ``cost`` when given."""
    device = split.labels.device
    if cost is not None:
        model = PassCounter(model, cost)
    n = len(split)
    divisors = {v: view_divisor(v, temperature) for v in views}
    ok = torch.zeros(n, dtype=torch.bool, device=device)
    zero = {v: torch.zeros(n, dtype=torch.bool, device=device) for v in views}
    sat = {v: torch.zeros(n, dtype=torch.bool, device=device) for v in views}
    for a in range(0, n, batch_size):
        b = min(a + batch_size, n)
        x, y = to_float(split.images[a:b]), split.labels[a:b]
        pred, diag = gradient_diagnostics(model, x if dtype is None else x.to(dtype), y, divisors)
        ok[a:b] = pred == y
        for v, (zg, st) in diag.items():
            zero[v][a:b], sat[v][a:b] = zg, st
    return ok, zero, sat


def attack_view(attack: AttackConfig, views: Sequence[str]) -> List[str]:
    """The views an attack runs on: every view, or one ("any") when its result cannot depend on
    the view (a scale-free loss): running it twice would only repeat the same number."""
    return ["any"] if attack.info.view_invariant else list(views)


def batch_seed_of(seed: int, bi: int) -> int:
    """The seed of batch ``bi`` of an attack run with ``seed``: the global generator's for the
    attacks that draw from it, the attack's own for those that seed themselves."""
    return seed * 1_000_003 + bi


def adversarial_batches(model, temperature: float, split: Split, mask: torch.Tensor, attack: AttackConfig,
                        view: str, batch_size: int, seed: int, n_classes: int, dtype=None, on_batch=None,
                        cost: PassCount | None = None):
    """Yield (positions, x, x_adv, targets) for the points of ``split`` where ``mask`` is set,
    batch by batch, attacked under ``view`` (``targets``: the target class of each point for an
    attack with one per point, else None). The threat model is checked, not assumed. The
    attack's passes are added to ``cost`` when given."""
    device = split.labels.device
    target = make_view(model, "raw" if view == "any" else view, temperature)
    if cost is not None:
        target = PassCounter(target, cost)
    for bi, a in enumerate(range(0, len(split), batch_size)):
        todo = a + mask[a:a + batch_size].nonzero().flatten()
        if on_batch:
            on_batch()
        if len(todo) == 0:
            continue
        x, y = to_float(split.images[todo]), split.labels[todo]
        if dtype is not None:
            x = x.to(dtype)
        batch_seed = batch_seed_of(seed, bi)
        # Attacks that draw from the global generator get it seeded per batch and put back; those
        # that seed themselves get the batch's seed (else every batch would repeat the same draws).
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(batch_seed)
            atk = attack.build(target, n_classes=n_classes, seed=batch_seed)
            x_adv = atk(x, y)
        delta = (x_adv - x).flatten(1)
        bound = delta.abs().amax(1) if attack.info.norm == "linf" else delta.norm(dim=1)
        # NaN fails every comparison: it would pass the bounds below and count as class 0
        if not torch.isfinite(x_adv).all() or x_adv.min() < 0 or x_adv.max() > 1 \
                or bound.max() > attack.eps * (1 + 1e-5) + 1e-6:
            raise RuntimeError(f"{attack.name} left its threat model ({attack.info.norm} <= {attack.eps:g}, "
                               f"[0,1]): {bound.max().item():g}, range [{x_adv.min().item():g}, "
                               f"{x_adv.max().item():g}]")
        targets = getattr(atk, "last_targets", None) if attack.info.single_target else None
        yield todo, x, x_adv, targets


class AttackRun(NamedTuple):
    robust_ok: torch.Tensor  # per image of the split: correct clean and under attack
    max_linf: float
    max_l2: float
    cost: PassCount
    target_hit: Optional[torch.Tensor]  # per image, in the target class (single-target attacks; else None)


def run_attack(model, temperature: float, split: Split, clean_ok: torch.Tensor, attack: AttackConfig, view: str,
               batch_size: int, seed: int, n_classes: int, dtype=None, on_batch=None) -> AttackRun:
    """Attack the clean-correct points of ``split`` (only they can count as robust, so only they
    are attacked, as AutoAttack does); per image: robust or not, and for a single-target attack
    whether it reached its target; the largest Linf and L2; the passes spent, the final check of
    every adversarial example included."""
    device = split.labels.device
    robust_ok = torch.zeros(len(split), dtype=torch.bool, device=device)
    target_hit = None
    max_linf = max_l2 = 0.0
    cost = PassCount()
    check = PassCounter(model, cost)
    for todo, x, x_adv, targets in adversarial_batches(model, temperature, split, clean_ok, attack, view, batch_size,
                                                       seed, n_classes, dtype, on_batch, cost=cost):
        pred = predict(check, x_adv)
        robust_ok[todo] = pred == split.labels[todo]
        if targets is not None:
            target_hit = torch.zeros(len(split), dtype=torch.bool, device=device) if target_hit is None else target_hit
            target_hit[todo] = pred == targets.to(device)
        delta = (x_adv - x).flatten(1)
        max_linf = max(max_linf, delta.abs().max().item())
        max_l2 = max(max_l2, delta.norm(dim=1).max().item())
    return AttackRun(robust_ok, max_linf, max_l2, cost, target_hit)


def attack_metrics(clean_ok, robust_ok, max_linf, max_l2, zero=None, sat=None, target_hit=None) -> Dict[str, float]:
    """``target_hit`` (a single-target attack's): its target_hit_rate is, as success_rate, a
    fraction of the clean-correct points: those whose adversarial example is in the target class
    (the targeted attack's own success criterion; success_rate counts any misclassification)."""
    n_ok = int(clean_ok.sum())
    metrics = {
        "clean_acc": frac(clean_ok),
        "robust_acc": frac(robust_ok),
        "success_rate": (int((clean_ok & ~robust_ok).sum()) / n_ok) if n_ok else float("nan"),
        "max_linf": max_linf,
        "max_l2": max_l2,
    }
    if target_hit is not None:
        metrics["target_hit_rate"] = (int((clean_ok & target_hit).sum()) / n_ok) if n_ok else float("nan")
    if zero is not None:
        metrics.update(zero_grad_frac=frac(zero), saturated_frac=frac(sat))
    return metrics


def evaluate(model: torch.nn.Module, temperature: float, split: Split, attacks: Sequence[AttackConfig],
             views: Sequence[str], batch_size: int = 500, seed: int = 0, progress: bool = False,
             desc: str = "eval", n_classes: int = 10,
             subsets: Optional[Dict[str, torch.Tensor]] = None) -> List[Measurement]:
    """Clean accuracy, then every attack on every view it depends on. ``split`` is already on the
    model's device. Each attack measurement carries its per-image robust bits. ``subsets``:
    {attack: positions in ``split``} for an attack run on those images only; its measurement
    has their count as n and says which they were (``positions``, as the cross-check's)."""
    subsets = subsets or {}
    model.eval()
    n = len(split)
    t0 = time.perf_counter()
    cost = PassCount()
    clean_ok, zero, sat = clean_pass(model, split, batch_size, views, temperature, cost=cost)
    clean_acc = frac(clean_ok)
    out = [Measurement("clean", "none", 0.0, 0, {}, n, {"accuracy": clean_acc, **cost.metrics(n)},
                       time.perf_counter() - t0, family="clean", bits=pack_bits(clean_ok))]
    n_batches = -(-n // batch_size)
    runs = [(a, v) for a in attacks for v in attack_view(a, views)]
    bar = tqdm(total=len(runs) * n_batches, disable=not progress, desc=desc, unit="batch", leave=False,
               dynamic_ncols=True)
    for attack, view in runs:
        t0 = time.perf_counter()
        bar.set_postfix_str(f"{attack.name}/{view}")
        pos = subsets.get(attack.name)
        if pos is not None:
            pos = pos.to(split.labels.device)
        on, ok = (split, clean_ok) if pos is None else (split.subset(pos), clean_ok[pos])
        run = run_attack(model, temperature, on, ok, attack, view, batch_size, seed, n_classes, on_batch=bar.update)
        diag = (zero[view], sat[view]) if view in zero else (None, None)
        if pos is not None and diag[0] is not None:
            diag = (diag[0][pos], diag[1][pos])
        metrics = attack_metrics(ok, run.robust_ok, run.max_linf, run.max_l2, *diag, target_hit=run.target_hit)
        extra = {} if pos is None else {"positions": part_positions(pos, n)}
        if run.target_hit is not None:
            extra["bits_target_hit"] = pack_bits(run.target_hit)
        out.append(Measurement(attack.name, view, attack.eps, attack.steps, attack.kwargs, len(on),
                               dict(metrics, **run.cost.metrics(len(on))), time.perf_counter() - t0,
                               bits=pack_bits(run.robust_ok), extra=extra))
    bar.close()
    return out
