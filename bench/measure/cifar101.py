"""CIFAR-10.1 (Recht et al. 2019, v6): accuracy on a whole new CIFAR-10 test set, when its files
are found (downloaded when ``--attack cifar10.1`` names it and it is missing)."""
from __future__ import annotations

import time

import torch

from bench.errors import BenchError
from bench.measure.base import Family, Measurement, correct_mask, counted, frac, shift_roots
from bench.shift_data import CIFAR10_CLASSES, download_cifar101, find_cifar101, load_cifar101

PARAMS = {"version": "v6"}


def evaluate_test_set(model, name: str, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                      params: dict) -> Measurement:
    """Accuracy on a whole shifted test set."""
    t0 = time.perf_counter()
    counting, cost = counted(model)
    acc = frac(correct_mask(counting, images, labels, batch_size))
    return Measurement(name, "none", 0.0, 0, params, len(labels), {"accuracy": acc, **cost.metrics(len(labels))},
                       time.perf_counter() - t0, family="shift", source=name)


class Cifar101(Family):
    name = "cifar10.1"

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    @classmethod
    def prepare(cls, ctx, log):
        plan, data = ctx.plan, ctx.data
        if "cifar10.1" not in plan.profile.eval.shifts:
            return None
        # its labels are CIFAR-10's class numbers: a tree whose folders sort otherwise (plane, car, ...)
        # would be scored against the wrong classes, and 10 classes alone do not say so
        if list(data.classes) != list(CIFAR10_CLASSES):
            if data.num_classes != 10:
                why, fix = (f"it is a CIFAR-10 test set and {data.name} has {data.num_classes} classes",
                            "drop cifar10.1 from --attack")
            else:
                why = (f"its labels are CIFAR-10's class numbers ({', '.join(CIFAR10_CLASSES)}) and the classes of "
                       f"{data.name} sort as {', '.join(data.classes)}")
                fix = "name the class folders as CIFAR-10's, or drop cifar10.1 from --attack"
            if plan.require_shift_sets:
                raise BenchError(f"CIFAR-10.1 cannot be measured: {why}: {fix}")
            log(f"shifts: CIFAR-10.1 skipped: {why}")
            return None
        roots = shift_roots(plan)
        folder = find_cifar101(roots)
        if folder is None and plan.fetch_shift_sets:  # asked for: fetch it, or stop where it was named
            log(f"shifts: CIFAR-10.1 not found under {', '.join(map(str, roots))}; downloading it")
            try:
                folder = download_cifar101(plan.cache_dir / "downloads")
            except BenchError as e:
                if plan.require_shift_sets:
                    raise
                log(f"shifts: CIFAR-10.1 skipped: {e} (--attack all measures it where it can be had; "
                    f"--attack cifar10.1 stops without it)")
                return None
        if folder is None:
            log(f"shifts: CIFAR-10.1 not found under {', '.join(map(str, roots))}; skipped (put "
                f"cifar10.1_v6_data.npy and cifar10.1_v6_labels.npy in one of them, or run --attack cifar10.1 "
                f"online to download them)")
            return None
        x, y = load_cifar101(folder)
        device = ctx.split.labels.device
        log(f"shifts: CIFAR-10.1 v6 from {folder} ({len(y)} images)")
        return cls(x.to(device), y.to(device))

    def planned(self, spec, ctx):
        return [(len(self.labels), "cifar10.1", "none", PARAMS)]

    def run(self, model, spec, ctx, log):
        return [evaluate_test_set(model, "cifar10.1", self.images, self.labels, ctx.plan.profile.eval.batch_size,
                                  PARAMS)]
