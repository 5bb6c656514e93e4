"""The evaluator for non-adversarial shifts: common corruptions (generated or the real
CIFAR-10-C), natural transforms swept over a magnitude, the worst case over a grid of rotations
and translations, and shifted test sets (CIFAR-10.1). Accuracy only: no view is involved."""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
from tqdm import tqdm

from attacks.natural import NATURAL, WORST_GRID_ROTATIONS, WORST_GRID_SHIFTS, apply_natural, worst_grid
from bench.data import Split, to_float
from bench.evaluate import Measurement


@torch.no_grad()
def correct_mask(model, images_u8: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    model.eval()  # BatchNorm on its running statistics, whatever ran on the model before
    out = torch.empty(len(labels), dtype=torch.bool, device=labels.device)
    for a in range(0, len(labels), batch_size):
        x = to_float(images_u8[a:a + batch_size])
        if transform is not None:
            x = transform(x)
        out[a:a + batch_size] = model(x).argmax(1) == labels[a:a + batch_size]
    return out


def _acc(mask: torch.Tensor) -> float:
    return int(mask.sum()) / mask.numel()


class CorruptedSets:
    """Corrupted copies of one evaluation split, made once per run and shared by every model.

    ``source`` is "cifar10c" (the real arrays, indexed by the split's test indices) or
    "cifar10c-generated" (attacks.corruptions on the split's images, seeded per image index)."""

    def __init__(self, split: Split, indices: torch.Tensor, seed: int, real_folder=None, test_labels=None):
        self.split, self.indices, self.seed = split, indices, seed
        self.real_folder, self.test_labels = real_folder, test_labels
        self.source = "cifar10c" if real_folder is not None else "cifar10c-generated"
        self._sets: Dict[str, torch.Tensor] = {}
        self.generate_s: Dict[str, float] = {}

    def get(self, name: str, severities: Sequence[int]) -> torch.Tensor:
        """uint8 [len(severities), N, 3, 32, 32] on the split's device."""
        if name not in self._sets:
            t0 = time.perf_counter()
            if self.real_folder is not None:
                from bench.shift_data import load_cifar10c
                arr, _ = load_cifar10c(self.real_folder, name, self.test_labels)
                sets = arr[[s - 1 for s in severities]][:, self.indices.cpu()].to(self.split.images.device)
            else:
                from attacks.corruptions import corrupt_severities
                sets = corrupt_severities(self.split.images, name, severities, self.seed, self.indices)
            self._sets[name] = sets
            self.generate_s[name] = time.perf_counter() - t0
        return self._sets[name]


def corruption_params(name: str, severity: int, source: str) -> dict:
    """The identity of one corruption measurement (also what the resume check looks up)."""
    return {"corruption": name, "severity": severity, "source": source}


def evaluate_corruptions(model, corrupted: CorruptedSets, names: Sequence[str], severities: Sequence[int],
                         batch_size: int, progress: bool = False, desc: str = "corruptions") -> List[Measurement]:
    """Threat "corruption", one measurement per (corruption, severity), plus corruption "none" at
    severity 0: the clean accuracy of these same images, the reference of the relative drop and
    of the relative mCE (the corruption subset may differ from the attack subset)."""
    labels, src = corrupted.split.labels, corrupted.source

    def measure(name, sev, images, t0):
        acc = _acc(correct_mask(model, images, labels, batch_size))
        return Measurement("corruption", "none", 0.0, 0, corruption_params(name, sev, src), len(labels),
                           {"accuracy": acc}, time.perf_counter() - t0, family="corruption", source=src,
                           corruption=name, severity=sev)

    out = [measure("none", 0, corrupted.split.images, time.perf_counter())]
    for name in tqdm(names, disable=not progress, desc=desc, leave=False):
        sets = corrupted.get(name, severities)
        for k, sev in enumerate(severities):
            out.append(measure(name, sev, sets[k], time.perf_counter()))
    return out


def evaluate_natural(model, split: Split, names: Sequence[str], batch_size: int, progress: bool = False,
                     desc: str = "natural") -> List[Measurement]:
    """Accuracy under each transform at each magnitude of its sweep; ``worst_grid`` counts an
    image as correct only if it is classified correctly under every grid point."""
    model.eval()
    out = []
    for name in tqdm(names, disable=not progress, desc=desc, leave=False):
        if name == "worst_grid":
            t0 = time.perf_counter()
            ok = torch.ones(len(split), dtype=torch.bool, device=split.labels.device)
            with torch.no_grad():
                for a in range(0, len(split), batch_size):
                    x, y = to_float(split.images[a:a + batch_size]), split.labels[a:a + batch_size]
                    for _, xt in worst_grid(x):
                        ok[a:a + batch_size] &= model(xt).argmax(1) == y
            params = {"rotations": list(WORST_GRID_ROTATIONS), "shifts": list(WORST_GRID_SHIFTS)}
            out.append(Measurement(name, "none", 0.0, 0, params, len(split), {"accuracy": _acc(ok)},
                                   time.perf_counter() - t0, family="natural"))
            continue
        for m in NATURAL[name].magnitudes:
            t0 = time.perf_counter()
            acc = _acc(correct_mask(model, split.images, split.labels, batch_size,
                                    lambda x: apply_natural(x, name, m)))
            out.append(Measurement(name, "none", 0.0, 0, {"magnitude": m}, len(split), {"accuracy": acc},
                                   time.perf_counter() - t0, family="natural", magnitude=float(m)))
    return out


def evaluate_test_set(model, name: str, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                      params: dict) -> Measurement:
    """Accuracy on a whole shifted test set (e.g. CIFAR-10.1)."""
    t0 = time.perf_counter()
    acc = _acc(correct_mask(model, images, labels, batch_size))
    return Measurement(name, "none", 0.0, 0, params, len(labels), {"accuracy": acc}, time.perf_counter() - t0,
                       family="shift", source=name)
