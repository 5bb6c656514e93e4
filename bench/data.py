"""Datasets: find the source, decode it once into a cached uint8 tensor file, hand out splits.

Sources, in the order they are tried for a data root:
  * an ImageFolder tree ``<root>/{train,test}/<class>/*.{png,jpg}`` (how the offline JPEG copy
    is read); the dataset is named after the folder, e.g. ``cifar10-jpeg75``;
  * torchvision's CIFAR-10 python folder ``<root>/cifar-10-batches-py`` (md5-checked by
    torchvision), or a download into ``<root>`` when online; the dataset is named ``cifar10``.

The data root comes from ``--data-root``, else ``$BENCH_DATA``, else ``<cache>/downloads``.
Every split stays in memory as uint8 [N,3,32,32] (on the GPU when there is one); augmentation
runs on batches on that device.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from bench.atomic import write_atomic
from bench.errors import BenchError

HOW_TO_GET_DATA = ("pass --data-root DIR (an ImageFolder tree DIR/{train,test}/<class>/*.png|jpg, or a folder "
                   "holding cifar-10-batches-py) or set BENCH_DATA; online, CIFAR-10 downloads itself")


@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, 3, 32, 32]
    labels: torch.Tensor  # int64 [N]

    def __len__(self):
        return len(self.labels)

    def subset(self, idx: torch.Tensor) -> "Split":
        idx = idx.to(self.labels.device)
        return Split(self.images[idx], self.labels[idx])

    def to(self, device) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Dataset:
    name: str  # recorded in every result row: says which source was used
    fingerprint: str  # sha256 of the decoded pixels and labels: the same data gives the same key anywhere
    classes: List[str]
    train: Split
    test: Split

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> Split:
        if name not in ("train", "test"):
            raise BenchError(f"unknown split {name!r}; use train or test")
        return getattr(self, name)

    def to(self, device) -> "Dataset":
        return Dataset(self.name, self.fingerprint, self.classes, self.train.to(device), self.test.to(device))


def default_cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE", ".cache"))


def resolve_data_root(data_root: Optional[str], cache_dir: Path) -> Path:
    root = data_root or os.environ.get("BENCH_DATA") or ""
    if not root:
        return cache_dir / "downloads"
    path = Path(root).expanduser()
    if not path.exists():
        raise BenchError(f"data root {path} does not exist: {HOW_TO_GET_DATA}")
    return path


def _is_imagefolder(root: Path) -> bool:
    return all((root / s).is_dir() and any(p.is_dir() for p in (root / s).iterdir()) for s in ("train", "test"))


def _content_fingerprint(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _stamp(files) -> str:
    """A cheap key of a source's files (path, size, mtime) that says when to rebuild the cache."""
    lines = []
    for f in files:
        st = os.stat(f)
        lines.append(f"{f}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


# --- sources ------------------------------------------------------------------------------------

def _imagefolder_files(root: Path):
    from torchvision.datasets import ImageFolder
    out = {}
    for split in ("train", "test"):
        try:
            folder = ImageFolder(str(root / split), loader=lambda p: p)
        except (FileNotFoundError, RuntimeError) as e:
            raise BenchError(f"{root / split} is not a usable ImageFolder tree ({e}): {HOW_TO_GET_DATA}") from None
        out[split] = folder
    if out["train"].classes != out["test"].classes:
        raise BenchError(f"{root}: train and test have different class folders")
    return out


def _decode_imagefolder(folders, progress: bool):
    from PIL import Image
    from tqdm import tqdm

    def decode(path):
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"))
        if a.shape != (32, 32, 3):
            raise BenchError(f"{path} is {a.shape[1]}x{a.shape[0]}, expected a 32x32 image")
        return a

    arrays = {}
    for split, folder in folders.items():
        paths = [p for p, _ in folder.samples]
        # PIL releases the GIL while decoding, so threads use both cores.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            imgs = list(tqdm(pool.map(decode, paths, chunksize=256), total=len(paths), disable=not progress,
                             desc=f"decode {split}", unit="img", leave=False))
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
        y = torch.tensor(folder.targets, dtype=torch.int64)
        arrays[split] = (x, y)
    return arrays


def _load_torchvision_cifar10(root: Path, download: bool):
    """torchvision's CIFAR10; its md5 check guards the pickle files it unpickles."""
    from torchvision.datasets import CIFAR10
    arrays = {}
    for split in ("train", "test"):
        try:
            ds = CIFAR10(str(root), train=split == "train", download=download)
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted."
            raise BenchError(f"CIFAR-10 at {root} is missing or fails its md5 check ({e}): {HOW_TO_GET_DATA}") from None
        except OSError as e:  # no network
            raise BenchError(f"CIFAR-10 is not in {root} and could not be downloaded ({e.__class__.__name__}): "
                             f"{HOW_TO_GET_DATA}") from None
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        arrays[split] = (x, torch.tensor(ds.targets, dtype=torch.int64))
        classes = ds.classes
    return arrays, classes


# --- the cache ----------------------------------------------------------------------------------

def _save_cache(path: Path, name: str, classes, arrays) -> str:
    from safetensors.torch import save_file
    tensors = {f"{s}_{k}": t for s, (x, y) in arrays.items() for k, t in (("images", x), ("labels", y))}
    fp = _content_fingerprint(tensors[k] for k in sorted(tensors))
    meta = {"name": name, "classes": json.dumps(classes), "fingerprint": fp}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return fp


def _load_cache(path: Path) -> Dataset:
    from safetensors import safe_open
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if _content_fingerprint(tensors[k] for k in sorted(tensors)) != meta["fingerprint"]:
            raise ValueError("content does not match its fingerprint")
        return Dataset(meta["name"], meta["fingerprint"], json.loads(meta["classes"]),
                       Split(tensors["train_images"], tensors["train_labels"]),
                       Split(tensors["test_images"], tensors["test_labels"]))
    except Exception as e:  # safetensors raises its own error types for a torn header
        raise BenchError(f"dataset cache {path} is corrupt ({e}); delete it and rerun to rebuild it") from None


def load_dataset(data_root: Optional[str] = None, cache_dir: Optional[Path] = None,
                 progress: bool = False) -> Dataset:
    """Find the data, decode it once into ``<cache>/data/<name>-<stamp>.safetensors``, load it."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = resolve_data_root(data_root, cache_dir)
    if root.is_dir() and _is_imagefolder(root):
        folders = _imagefolder_files(root)
        name = root.resolve().name
        files = [p for f in folders.values() for p, _ in f.samples]
        cache = cache_dir / "data" / f"{name}-{_stamp(files)}.safetensors"
        if not cache.exists():
            arrays = _decode_imagefolder(folders, progress)
            _save_cache(cache, name, folders["train"].classes, arrays)
    else:
        batches = root / "cifar-10-batches-py"
        name = "cifar10"
        if batches.is_dir():
            cache = cache_dir / "data" / f"{name}-{_stamp(sorted(batches.iterdir()))}.safetensors"
            if not cache.exists():
                arrays, classes = _load_torchvision_cifar10(root, download=False)
                _save_cache(cache, name, classes, arrays)
        else:
            if data_root or os.environ.get("BENCH_DATA"):
                raise BenchError(f"{root} holds neither train/ and test/ class folders nor cifar-10-batches-py: "
                                 f"{HOW_TO_GET_DATA}")
            root.mkdir(parents=True, exist_ok=True)
            _load_torchvision_cifar10(root, download=True)
            return load_dataset(str(root), cache_dir, progress)
    return _load_cache(cache)


# --- subsets and augmentation -------------------------------------------------------------------

def stratified_indices(labels: torch.Tensor, n: Optional[int], seed: int) -> torch.Tensor:
    """A seeded, class-balanced sample of n indices (sorted). ImageFolder data is grouped by class,
    so the first n would be a few classes only."""
    labels = labels.cpu()
    total = len(labels)
    if not n or n >= total:
        if n and n > total:
            raise BenchError(f"asked for {n} images but the split has {total}")
        return torch.arange(total)
    if n < 0:
        raise BenchError(f"subset size must be positive, got {n}")
    g = torch.Generator().manual_seed(seed)
    classes = labels.unique()
    per_class = torch.full((len(classes),), n // len(classes))
    per_class[torch.randperm(len(classes), generator=g)[: n % len(classes)]] += 1
    picked = []
    for c, k in zip(classes.tolist(), per_class.tolist()):
        idx = (labels == c).nonzero().flatten()
        if k > len(idx):
            raise BenchError(f"class {c} has only {len(idx)} images; cannot draw {k} per class")
        picked.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.cat(picked).sort().values


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255)


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding (torchvision RandomCrop(32, padding=4)) and horizontal flip,
    on a whole batch on its device."""
    b, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=generator.device).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=generator.device).to(dev)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, :]
    # Advanced indices on dims 0, 2, 3 around a slice: the result is [b, h, w, c].
    out = padded[torch.arange(b, device=dev)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    flip = (torch.rand(b, generator=generator, device=generator.device) < 0.5).to(dev)
    return torch.where(flip[:, None, None, None], out.flip(3), out).contiguous()
