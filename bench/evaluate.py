"""The evaluator: a trained model, a split, attacks and views in; measurements out.

Robust accuracy counts a point only if it is classified correctly both clean and under attack
(the AutoAttack convention): an attack that happens to fix a wrong prediction earns nothing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from attacks import AttackConfig, make_view, view_divisor
from bench.data import Split, to_float


@dataclass
class Measurement:
    threat: str  # "clean", an attack, "corruption", a natural transform or a shifted test set
    view: str  # "raw", "scaled", or "none" where no attack looks at the logits
    eps: float
    steps: int
    params: Dict[str, object]
    n: int
    metrics: Dict[str, float]
    wall_s: float
    family: str = "attack"  # clean, attack, corruption, natural, shift
    source: str = ""  # the images measured when they are not the dataset's own split
    corruption: str = ""  # threat "corruption": which one ("none" at severity 0: the same images clean)
    severity: float = float("nan")  # threat "corruption": 0..5
    magnitude: float = float("nan")  # natural transforms: the point of the sweep (degrees, pixels, factor)


def _frac(mask: torch.Tensor) -> float:
    """An exact fraction (a float32 mean would print 0.23 as 0.23000000417)."""
    return int(mask.sum()) / mask.numel()


@torch.no_grad()
def _predict(model, x):
    return model(x).argmax(1)


def gradient_diagnostics(model, x, y, divisors: Dict[str, float]):
    """Per view: which inputs have an all-zero input gradient of CE(view logits), and which have a
    top softmax probability of exactly 1.0 in float32. Both are gradient-masking signals."""
    x = x.clone().requires_grad_(True)
    logits = model(x).float()
    out = {}
    for i, (view, d) in enumerate(divisors.items()):
        z = logits / d
        loss = F.cross_entropy(z, y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x, retain_graph=i < len(divisors) - 1)
        zero = (g.flatten(1) == 0).all(1)
        saturated = torch.softmax(z.detach(), 1).amax(1) == 1.0
        out[view] = (zero, saturated)
    return logits.detach().argmax(1), out


def evaluate(model: torch.nn.Module, temperature: float, split: Split, attacks: Sequence[AttackConfig],
             views: Sequence[str], batch_size: int = 500, seed: int = 0, progress: bool = False,
             desc: str = "eval") -> List[Measurement]:
    """Clean accuracy, then every attack on every view. ``split`` is already on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    n = len(split)
    batches = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    divisors = {v: view_divisor(v, temperature) for v in views}

    t0 = time.perf_counter()
    clean_ok = torch.zeros(n, dtype=torch.bool, device=device)
    zero = {v: torch.zeros(n, dtype=torch.bool, device=device) for v in views}
    sat = {v: torch.zeros(n, dtype=torch.bool, device=device) for v in views}
    for a, b in batches:
        x, y = to_float(split.images[a:b]), split.labels[a:b]
        pred, diag = gradient_diagnostics(model, x, y, divisors)
        clean_ok[a:b] = pred == y
        for v, (zg, st) in diag.items():
            zero[v][a:b], sat[v][a:b] = zg, st
    clean_acc = _frac(clean_ok)
    out = [Measurement("clean", "none", 0.0, 0, {}, n, {"accuracy": clean_acc}, time.perf_counter() - t0,
                       family="clean")]

    bar = tqdm(total=len(attacks) * len(views) * len(batches), disable=not progress, desc=desc,
               unit="batch", leave=False, dynamic_ncols=True)
    for attack in attacks:
        for view in views:
            t0 = time.perf_counter()
            atk = attack.build(make_view(model, view, temperature))
            robust_ok = torch.zeros(n, dtype=torch.bool, device=device)
            max_linf = 0.0
            for bi, (a, b) in enumerate(batches):
                # Only the points classified correctly can count as robust, so only they are
                # attacked (as AutoAttack does): the same numbers for less work.
                todo = a + clean_ok[a:b].nonzero().flatten()
                bar.update()
                if len(todo) == 0:
                    continue
                x, y = to_float(split.images[todo]), split.labels[todo]
                # random starts draw from the global generator: seed it per batch, and put it back
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    torch.manual_seed(seed * 1_000_003 + bi)
                    x_adv = atk(x, y)
                if x_adv.min() < 0 or x_adv.max() > 1:
                    raise RuntimeError(f"{attack.name} left the [0,1] image range")
                robust_ok[todo] = _predict(model, x_adv) == y
                max_linf = max(max_linf, (x_adv - x).abs().max().item())
            n_ok = int(clean_ok.sum())
            metrics = {
                "clean_acc": clean_acc,
                "robust_acc": _frac(robust_ok),
                "success_rate": (int((clean_ok & ~robust_ok).sum()) / n_ok) if n_ok else float("nan"),
                "max_linf": max_linf,
                "zero_grad_frac": _frac(zero[view]),
                "saturated_frac": _frac(sat[view]),
            }
            out.append(Measurement(attack.name, view, attack.eps, attack.steps, attack.kwargs, n, metrics,
                                   time.perf_counter() - t0))
    bar.close()
    return out
