"""What several test files build: small real files and result stores (no test file imports another)."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.measure.families import attack_record_version
from bench.report.tables import leaderboard
from bench.store import ResultStore, pack_bits

# ---------------------------------------------------------------------------------------------
# Data sets on disk


def make_imagefolder(root, n_train=6, n_test=3, classes=("a", "b", "c"), fmt="png"):
    """An ImageFolder tree (root/{train,test}/<class>/NNNN.<fmt>) of random 32x32 images, each with a
    marker pixel (class index, image index, 7) at (0, 0); returns root."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                a[0, 0] = (ci, i, 7)  # a marker pixel: which class and which image
                Image.fromarray(a).save(d / f"{i:04d}.{fmt}")
    return root


def write_cifar_batches(folder, n_per_batch=20):
    """Small files in the layout and format of cifar-10-python.tar.gz (pickled dicts); returns
    their md5s by file name."""
    from torchvision.datasets import CIFAR10
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    md5 = {}
    for name, _ in CIFAR10.train_list + CIFAR10.test_list:
        labels = list(rng.integers(0, 10, n_per_batch))
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
        md5[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    meta = CIFAR10.meta["filename"]
    with open(folder / meta, "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]}, f)
    md5[meta] = hashlib.md5((folder / meta).read_bytes()).hexdigest()
    return md5


def register_checksums(monkeypatch, md5, dataset="CIFAR10"):
    """torchvision's file list for ``dataset`` with the given md5s: the test files are not the
    official ones, so its integrity check needs theirs."""
    import torchvision.datasets
    cls = getattr(torchvision.datasets, dataset)
    monkeypatch.setattr(cls, "train_list", [[n, md5[n]] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, md5[n]] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", dict(cls.meta, md5=md5[cls.meta["filename"]]))


def write_cifar101(folder, n=30):
    """A stand-in for CIFAR-10.1 v6: its two .npy files (n random uint8 images, int64 labels), seeded."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(folder / "cifar10.1_v6_data.npy", rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
    np.save(folder / "cifar10.1_v6_labels.npy", rng.integers(0, 10, n).astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Result stores

EPS = 8 / 255
PROV = {"code_version": "abc123def456", "torch_version": "2.99.0+test", "device": "cpu (2 threads)"}
BENCH_CORRUPTIONS = ["gaussian_noise", "fog", "contrast"]


def _bits(frac: float, n: int) -> str:
    """The first round(frac*n) images are right: nested sets, as when models agree on easy images."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[:int(round(frac * n))] = True
    return pack_bits(mask)


class StoreBuilder:
    """A result store written the way bench.grid.runner writes one: a record per measurement, with
    identity, spec columns, provenance (PROV), metrics and per-image bits."""

    def __init__(self, root: Path, n: int = 1000, dataset: str = "cifar10-jpeg75"):
        self.store = ResultStore(root)
        self.n, self.dataset = n, dataset
        self.minute = 0
        self.specs = {}
        self.weights = "0" * 64  # the weights_sha256 of the records put from now on (a retraining: another)
        self.subset_seed = 0  # the test images of the records put from now on (another: other images)

    def _put(self, spec: dict, family: str, threat: str, view: str, metrics: dict, *, eps=0.0, steps=0, params=None,
             n=None, bits=None, source=None, corruption=None, severity=None, magnitude=None, positions=None,
             timestamp=None):
        n = n or self.n
        self.minute += 1
        rec = dict(spec, run_key=spec["run_key"], dataset=self.dataset, split="test", n=n, subset_seed=self.subset_seed,
                   attack_seed=0, threat=threat, view=view, params=params or {}, family=family,
                   source=source or f"{self.dataset}:test", num_classes=10, corruption=corruption,
                   severity=severity, magnitude=magnitude, eps=eps, steps=steps, metrics=metrics, wall_s=0.1,
                   weights_sha256=self.weights, profile="test",
                   timestamp=timestamp or f"2026-01-01T{10 + self.minute // 60:02d}:{self.minute % 60:02d}:00+00:00",
                   **PROV)
        rec["measure_version"] = attack_record_version(rec)  # as this code measures it
        if bits is not None:
            rec["bits"] = bits
        if positions is not None:  # a measurement on part of the evaluation's images: which, of how many
            rec["positions"] = positions
        self.store.put(rec)

    def model(self, name: str, T: float, clean: float, *, arch="fastnet", head="plain", regime="std", lr_scale=False,
              seed=0, checkpoint="last", pgd_raw=0.0, pgd_scaled=0.0, margin=None, square=None, targeted_raw=None,
              targeted_scaled=None, mca=None, nat=None, worst_grid=None, cifar101=None, crosscheck=None, zero_grad=0.0,
              saturated=0.0, feature_dim=64, target_hits="success"):
        """One model's measurements at 8/255 (accuracies as fractions). Attacks not given default to
        the model's weakest result, so robust_min is min(pgd_raw, pgd_scaled) unless a stronger one
        is named. ``target_hits``: the targeted attacks' target_hit_rate, by default their success
        rate (every break in the target class); None leaves it out (a record before revision 3)."""
        spec = {"run_key": f"key_{name}", "model": name, "arch": arch, "T": float(T), "head": head, "regime": regime,
                "lr_scale": lr_scale, "seed": seed, "feature_dim": feature_dim, "checkpoint": checkpoint}
        self.specs[name] = spec
        n = self.n
        self._put(spec, "clean", "clean", "none", {"accuracy": clean}, bits=_bits(clean, n))
        floor = min(pgd_raw, pgd_scaled)

        def attack(threat, view, robust, extra=None):
            m = {"clean_acc": clean, "robust_acc": robust, "success_rate": 1 - robust / clean if clean else float("nan"),
                 "max_linf": EPS, "max_l2": 1.5}
            if threat.startswith("pgd_target") and target_hits is not None:
                m["target_hit_rate"] = m["success_rate"] if target_hits == "success" else target_hits
            if view in ("raw", "scaled"):
                m.update(zero_grad_frac=zero_grad if view == "raw" else 0.0,
                         saturated_frac=saturated if view == "raw" else 0.0)
            self._put(spec, "attack", threat, view, dict(m, **(extra or {})), eps=EPS, steps=10,
                      params={"eps": EPS, "alpha": 2 / 255, "steps": 10, "random_start": True}, bits=_bits(robust, n))

        attack("pgd", "raw", pgd_raw)
        attack("pgd", "scaled", pgd_scaled)
        attack("pgd_margin", "any", floor if margin is None else margin)
        attack("square", "any", floor if square is None else square)
        attack("pgd_target_ll", "raw", floor if targeted_raw is None else targeted_raw)
        attack("pgd_target_ll", "scaled", floor if targeted_scaled is None else targeted_scaled)
        if crosscheck is not None:
            self._put(spec, "diagnostic", "autoattack_crosscheck", "raw",
                      {"clean_acc": clean, "robust_acc_torchattacks": crosscheck, "robust_acc_pyautoattack": crosscheck,
                       "abs_diff": 0.0}, eps=EPS, steps=100, n=100,
                      params={"attacks": ["autoattack", "autoattack_ref"], "eps": EPS, "version": "standard"})
        if mca is not None:
            self.corruptions(name, clean, mca)
        if nat is not None:
            for mag in (-10, 10):
                self._put(spec, "natural", "rotate", "none", {"accuracy": nat}, n=500, params={"magnitude": mag},
                          magnitude=mag)
        if worst_grid is not None:
            self._put(spec, "natural", "worst_grid", "none", {"accuracy": worst_grid}, n=500,
                      params={"rotations": [-30, 0, 30], "shifts": [-3, 0, 3]})
        if cifar101 is not None:
            self._put(spec, "shift", "cifar10.1", "none", {"accuracy": cifar101}, n=2000, source="cifar10.1")
        return self

    def corruptions(self, name: str, clean: float, acc: float, n: int = 500, source: str = "cifar10c-generated"):
        """A model's corruption records: clean accuracy on their images, then every benchmark
        corruption of BENCH_CORRUPTIONS at severities 1 and 5 at ``acc``."""
        for c, sev, value in [("none", 0, clean)] + [(c, s, acc) for c in BENCH_CORRUPTIONS for s in (1, 5)]:
            self._put(self.specs[name], "corruption", "corruption", "none", {"accuracy": value}, n=n,
                      params={"corruption": c, "severity": sev, "source": source}, source=source, corruption=c,
                      severity=sev)
        return self

    def tables(self):
        """The store's tidy table, its leaderboard and its per-image bits."""
        tidy = self.store.table()
        bits = self.store.bits_table()
        return tidy, leaderboard(tidy, bits), bits


def sweep_store(root: Path) -> StoreBuilder:
    """A small temperature sweep shaped like results/quick: a fixed-lr arm and a loss-x-T arm."""
    b = StoreBuilder(root, n=500)
    b.model("fastnet_T1", 1, 0.62, pgd_raw=0.0, pgd_scaled=0.0, mca=0.55, nat=0.58, worst_grid=0.06, crosscheck=0.0)
    b.model("fastnet_T5", 5, 0.63, pgd_raw=0.01, pgd_scaled=0.0, mca=0.58, nat=0.60, worst_grid=0.08, crosscheck=0.0,
            saturated=0.12)
    b.model("fastnet_T50", 50, 0.30, pgd_raw=0.17, pgd_scaled=0.07, mca=0.28, nat=0.29, worst_grid=0.15,
            crosscheck=0.05, saturated=0.27, targeted_raw=0.10)
    b.model("fastnet_T50_lrT", 50, 0.58, lr_scale=True, pgd_raw=0.22, pgd_scaled=0.002, mca=0.54, nat=0.56,
            worst_grid=0.06, crosscheck=0.0, zero_grad=0.18, saturated=0.75)
    return b
