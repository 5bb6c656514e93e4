"""Datasets: find the source, decode it once into a cached uint8 tensor file, hand out splits.

Sources, in the order they are tried for a data root:
  * an ImageFolder tree ``<root>/{train,test}/<class>/*.{png,jpg}`` (how the offline JPEG copy
    is read); the dataset is named after the folder, e.g. ``cifar10-jpeg75``;
  * torchvision's CIFAR python folders (md5-checked by torchvision): ``<root>/cifar-10-batches-py``
    (dataset ``cifar10``) or ``<root>/cifar-100-python`` (dataset ``cifar100``, the 100 fine
    labels). The root may also be one of these folders itself. When a root holds both, the
    ``dataset`` argument chooses; without it that is an error, except in the default root
    (``<cache>/downloads``), where ``cifar10`` stays the default.

The data root comes from ``--data-root``, else ``$BENCH_DATA``, else ``<cache>/downloads``. Only
the default root downloads: CIFAR-10 when it is empty, CIFAR-100 when asked for by name. The
commands put the project's offline copy (``default_data_root``) before the download.
Every split stays in memory as uint8 [N,3,32,32] (on the GPU when there is one); augmentation
runs on batches on that device.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from bench.atomic import can_write_in, existing_ancestor, write_atomic
from bench.errors import BenchError

HOW_TO_GET_DATA = ("pass --data-root DIR (an ImageFolder tree DIR/{train,test}/<class>/*.png|jpg, or a folder "
                   "holding cifar-10-batches-py or cifar-100-python) or set BENCH_DATA; online, CIFAR-10 "
                   "downloads itself, CIFAR-100 when asked for by name")

HOW_TO_SET_CACHE = "pass --cache DIR or set BENCH_CACHE"

# The torchvision datasets read from their python pickles: name -> (torchvision class, folder, label).
TORCHVISION_CIFAR = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "CIFAR-10"),
    "cifar100": ("CIFAR100", "cifar-100-python", "CIFAR-100"),
}


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
    # an empty BENCH_CACHE is unset, as an empty BENCH_DATA is: Path("") is the working folder
    return Path(os.environ.get("BENCH_CACHE") or ".cache").expanduser()


# The project's offline copy of CIFAR-10 beside the checkout, which the Makefile's BENCH_DATA
# names too: a command typed without --data-root or BENCH_DATA reads what `make bench` reads,
# on a machine that cannot download
OFFLINE_COPY = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg75"


def default_data_root(dataset: Optional[str] = None) -> Optional[str]:
    """The commands' data root when --data-root is not given: $BENCH_DATA, else the offline copy
    when it is there and no torchvision dataset is named (CIFAR-100 downloads only into the
    download root), else None: download into ``<cache>/downloads``."""
    if os.environ.get("BENCH_DATA"):
        return os.environ["BENCH_DATA"]
    return str(OFFLINE_COPY) if dataset is None and (OFFLINE_COPY / "train").is_dir() else None


def resolve_data_root(data_root: Optional[str], cache_dir: Path) -> Path:
    root = data_root or os.environ.get("BENCH_DATA") or ""
    if not root:
        return cache_dir / "downloads"
    path = Path(root).expanduser()
    if not path.exists():
        source = " (from $BENCH_DATA)" if root == os.environ.get("BENCH_DATA") else ""
        raise BenchError(f"data root {path}{source} does not exist: {HOW_TO_GET_DATA}")
    return path


def folder_dataset_name(root: Path) -> str:
    """An ImageFolder tree's dataset name: its folder's, but never a torchvision dataset's
    (cifar10, cifar100), which names the original binaries: a folder of images called cifar10 was
    recorded as CIFAR-10 and paired with the real CIFAR-10-C, which only the original's test set,
    in its order, matches."""
    name = root.resolve().name
    return f"{name}-folder" if name in TORCHVISION_CIFAR else name


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
        try:
            st = os.stat(f)
        except FileNotFoundError:  # a symlink to nothing, or a file deleted after the tree was listed
            if os.path.islink(f):
                raise BenchError(f"{f} is a symbolic link to {os.readlink(f)}, which does not exist: delete the "
                                 f"link or restore what it points to, then rerun") from None
            raise BenchError(f"{f} was deleted while the data was read: rerun once nothing is changing the data "
                             f"folder") from None
        lines.append(f"{f}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _tree_stamp(root: Path) -> str:
    """_stamp of every file under root/train and root/test, listed without torchvision: importing
    it to compute a cache key cost each process 2.8 s. A file added, removed or touched there
    (an image or not) rebuilds the cache."""
    files = []
    # the same tree however it is named (relative, absolute, through a link): a Ray task gets the
    # root absolute, and a second cache of the same images was decoded beside the driver's
    root = Path(os.path.realpath(root))
    for split in ("train", "test"):
        for folder, subdirs, names in os.walk(root / split, followlinks=True):
            subdirs.sort()
            files += [os.path.join(folder, n) for n in sorted(names)]
    return _stamp(files)


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
        train, test = set(out["train"].classes), set(out["test"].classes)
        only = [f"only {split} has {', '.join(sorted(a - b))}" for split, a, b in (("train", train, test),
                                                                                 ("test", test, train)) if a - b]
        raise BenchError(f"{root}: train and test have different class folders ({'; '.join(only)}): give both "
                         f"splits the same classes, a folder each")
    return out


def _decode_imagefolder(folders, progress: bool):
    from PIL import Image
    from tqdm import tqdm

    def decode(path):
        try:
            with Image.open(path) as im:
                a = np.asarray(im.convert("RGB"))
        except (OSError, SyntaxError) as e:  # PIL: not an image, truncated, a broken header
            raise BenchError(f"image {path} cannot be decoded ({str(e).splitlines()[0]}): replace or delete "
                             f"it") from None
        if a.shape != (32, 32, 3):
            raise BenchError(f"{path} is {a.shape[1]}x{a.shape[0]}, expected a 32x32 image")
        return a

    arrays = {}
    for split, folder in folders.items():
        paths = [p for p, _ in folder.samples]
        # PIL releases the GIL while decoding, so threads use both cores.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            imgs = list(tqdm(pool.map(decode, paths), total=len(paths), disable=not progress,
                             desc=f"decode {split}", unit="img", leave=False))
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
        y = torch.tensor(folder.targets, dtype=torch.int64)
        arrays[split] = (x, y)
    return arrays


def _load_torchvision_cifar(root: Path, name: str, download: bool):
    """torchvision's CIFAR10 / CIFAR100 (fine labels); its md5 check guards the pickle files it
    unpickles."""
    import torchvision.datasets
    cls_name, _, label = TORCHVISION_CIFAR[name]
    cls = getattr(torchvision.datasets, cls_name)
    arrays = {}
    for split in ("train", "test"):
        try:
            ds = cls(str(root), train=split == "train", download=download)
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted."
            why = str(e).replace(" You can use download=True to download it", "")  # not an option of ours
            raise BenchError(f"{label} at {root} is missing or fails its md5 check ({why}): "
                             f"{HOW_TO_GET_DATA}") from None
        except OSError as e:  # no network
            raise BenchError(f"{label} is not in {root} and could not be downloaded ({e.__class__.__name__}): "
                             f"{HOW_TO_GET_DATA}") from None
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        arrays[split] = (x, torch.tensor(ds.targets, dtype=torch.int64))
        classes = ds.classes
    return arrays, classes


def _pick_torchvision(root: Path, dataset: Optional[str]) -> Optional[str]:
    """Which torchvision dataset of ``root`` to read: the one named, else the only one there.
    None when the root does not hold it (or any)."""
    present = [n for n, (_, folder, _) in TORCHVISION_CIFAR.items() if (root / folder).is_dir()]
    if dataset is not None:
        return dataset if dataset in present else None
    if len(present) > 1:
        raise BenchError(f"{root} holds {' and '.join(TORCHVISION_CIFAR[n][1] for n in present)}: choose one "
                         f"with --dataset {'|'.join(present)} or point --data-root at its folder")
    return present[0] if present else None


# --- the cache ----------------------------------------------------------------------------------

def _check_cache_folder(folder: Path, cache_dir: Path, nbytes: int = 0):
    """Before the cache is built (or a download starts): ``folder`` must be, or be creatable in,
    a writable folder with ``nbytes`` free."""
    probe = existing_ancestor(folder)
    if not probe.is_dir():
        raise BenchError(f"cache folder {cache_dir} cannot be written ({probe} is a file): {HOW_TO_SET_CACHE}")
    if not can_write_in(probe):
        raise BenchError(f"cache folder {cache_dir} cannot be written ({probe} is read-only: no file can be "
                         f"made there): {HOW_TO_SET_CACHE}")
    free = shutil.disk_usage(probe).free
    if free < nbytes:
        raise BenchError(f"cache folder {cache_dir} is on a full disk ({free / 2**20:.1f} MiB free, the decoded "
                         f"data needs {nbytes / 2**20:.1f} MiB): free space there, or {HOW_TO_SET_CACHE}")


def _save_cache(path: Path, cache_dir: Path, name: str, classes, arrays) -> str:
    from safetensors.torch import save_file
    tensors = {f"{s}_{k}": t for s, (x, y) in arrays.items() for k, t in (("images", x), ("labels", y))}
    fp = _content_fingerprint(tensors[k] for k in sorted(tensors))
    meta = {"name": name, "classes": json.dumps(classes), "fingerprint": fp}
    _check_cache_folder(path.parent, cache_dir, sum(t.nbytes for t in tensors.values()) + (1 << 16))
    try:
        write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # the disk filled up after the check (another writer): write_atomic removed its temp file
        raise BenchError(f"cache folder {cache_dir} is on a full disk ({e.strerror}): free space there, or "
                         f"{HOW_TO_SET_CACHE}") from None
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


def _undecoded(name: str, classes, labels: dict) -> Dataset:
    """The data as far as its sizes go: class names and labels, every image a view of one zero
    image (no memory, nothing decoded). What ``load_dataset``'s ``check`` sees."""
    def split(targets):
        y = torch.as_tensor(targets, dtype=torch.int64)
        return Split(torch.zeros((1, 3, 32, 32), dtype=torch.uint8).expand(len(y), -1, -1, -1), y)
    return Dataset(name, "", list(classes), split(labels["train"]), split(labels["test"]))


def load_dataset(data_root: Optional[str] = None, cache_dir: Optional[Path] = None,
                 progress: bool = False, dataset: Optional[str] = None,
                 check: Optional[Callable[[Dataset], None]] = None) -> Dataset:
    """Find the data, decode it once into ``<cache>/data/<name>-<stamp>.safetensors``, load it.

    ``dataset`` (``cifar10`` or ``cifar100``) chooses between torchvision folders that share a
    root; None takes the only one there. Naming ``cifar100`` is what allows its download.
    ``check`` is called with the data's names and labels (its images not decoded, see
    ``_undecoded``) before the cache is written, so that sizes that do not fit the data (a subset
    larger than its split) stop the caller before a file is written; it is not called when the
    cache already exists (the caller checks the loaded data)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if dataset is not None and dataset not in TORCHVISION_CIFAR:
        raise BenchError(f"unknown dataset {dataset!r}; known: {', '.join(TORCHVISION_CIFAR)} "
                         f"(an ImageFolder tree is chosen by its --data-root alone)")
    root = resolve_data_root(data_root, cache_dir)
    default_root = not (data_root or os.environ.get("BENCH_DATA"))
    # --data-root DIR/cifar-100-python: the folder names the dataset; torchvision wants its parent.
    named_by_folder = {folder: n for n, (_, folder, _) in TORCHVISION_CIFAR.items()}.get(root.name)
    if named_by_folder and root.is_dir():
        if dataset not in (None, named_by_folder):
            raise BenchError(f"data root {root} is {named_by_folder}, but dataset {dataset!r} was asked for")
        root, dataset = root.parent, named_by_folder
    # a torchvision folder named itself is read, whatever else its parent holds (an ImageFolder tree)
    if root.is_dir() and not named_by_folder and _is_imagefolder(root):
        name = folder_dataset_name(root)
        if dataset is not None:
            # make exports BENCH_DATA (the offline copy): say where the root came from and the way out
            bench_data = os.environ.get("BENCH_DATA")
            env = bool(bench_data) and (data_root or bench_data) == bench_data
            raise BenchError(f"data root {root}{' (from $BENCH_DATA)' if env else ''} is an ImageFolder tree (dataset "
                             f"{name!r}); the dataset choice {dataset!r} only picks between cifar-10-batches-py and "
                             f"cifar-100-python folders: pass --data-root DIR holding {TORCHVISION_CIFAR[dataset][1]}"
                             f"{', or unset BENCH_DATA to download it' if env else ''}")
        cache = cache_dir / "data" / f"{name}-{_tree_stamp(root)}.safetensors"
        if not cache.exists():
            folders = _imagefolder_files(root)
            if check is not None:  # the file listing has the labels: no need to decode 60,000 images first
                check(_undecoded(name, folders["train"].classes, {s: f.targets for s, f in folders.items()}))
            n_images = sum(len(f.samples) for f in folders.values())
            _check_cache_folder(cache.parent, cache_dir, n_images * 3 * 32 * 32)
            arrays = _decode_imagefolder(folders, progress)
            _save_cache(cache, cache_dir, name, folders["train"].classes, arrays)
        return _load_cache(cache)
    if default_root and dataset is None:
        dataset = "cifar10"  # the download folder may hold both; CIFAR-10 is the default there
    name = _pick_torchvision(root, dataset) if root.is_dir() else None
    if name is not None:
        folder = root / TORCHVISION_CIFAR[name][1]
        cache = cache_dir / "data" / f"{name}-{_stamp(sorted(Path(os.path.realpath(folder)).iterdir()))}.safetensors"
        if not cache.exists():
            _check_cache_folder(cache.parent, cache_dir)
            try:
                arrays, classes = _load_torchvision_cifar(root, name, download=False)
            except BenchError:
                if not default_root:
                    raise
                # the download root's folder is ours: a run killed while torchvision unpacked it left it
                # half there, and its presence stops every later download
                raise BenchError(f"{folder} is an incomplete download (a run stopped while unpacking it): delete "
                                 f"it and rerun to download {TORCHVISION_CIFAR[name][2]} again") from None
            if check is not None:
                check(_undecoded(name, classes, {s: y for s, (_, y) in arrays.items()}))
            _save_cache(cache, cache_dir, name, classes, arrays)
        return _load_cache(cache)
    if not default_root:
        what = (f"no {TORCHVISION_CIFAR[dataset][1]} folder" if dataset else
                "neither train/ and test/ class folders nor cifar-10-batches-py or cifar-100-python")
        raise BenchError(f"{root} holds {what}: {HOW_TO_GET_DATA}")
    # Only the default root downloads: CIFAR-10 by default, CIFAR-100 only when named.
    _check_cache_folder(root, cache_dir)
    created = [p for p in (root, *root.parents) if not p.exists()]  # deepest first
    written = [p for p in _download_paths(root, dataset) if not p.exists()]
    root.mkdir(parents=True, exist_ok=True)
    try:
        _load_torchvision_cifar(root, dataset, download=True)
    except BaseException:
        # a failed download (offline, say) leaves nothing behind: an empty downloads/ folder
        # or a partial archive there would be the only trace of a run that stopped in one line
        _undo_download(written, created)
        raise
    return load_dataset(str(root), cache_dir, progress, dataset=dataset, check=check)


def _download_paths(root: Path, dataset: str) -> List[Path]:
    """What torchvision's download of ``dataset`` writes in ``root``: the archive and the folder
    extracted from it."""
    import torchvision.datasets
    cls = getattr(torchvision.datasets, TORCHVISION_CIFAR[dataset][0])
    return [root / cls.filename, root / cls.base_folder]


def _undo_download(written, created) -> None:
    """Remove ``written`` (paths that were not there before the download), then the folders in
    ``created`` (deepest first) while they are empty: one another process wrote into stays."""
    for path in written:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            break


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
    smallest = int(torch.bincount(labels)[classes].min())
    for c, k in zip(classes.tolist(), per_class.tolist()):
        idx = (labels == c).nonzero().flatten()
        if k > len(idx):
            raise BenchError(f"a class-balanced sample of {n} images draws {k} of class {c}, which has {len(idx)}: "
                             f"ask for at most {smallest * len(classes)} ([eval] n / shift_n, --n-test / --shift-n)")
        picked.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.cat(picked).sort().values


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255)


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding (torchvision RandomCrop(32, padding=4)) and horizontal flip,
    on a whole batch on its device, any dtype. One gather does both (a flipped image reads its
    window's columns right to left), and its result is channels_last in memory, the layout the
    trainer's convolutions take: on uint8 images, converted to float after, that is a quarter of
    the bytes moved and no copy in between."""
    b, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=generator.device).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=generator.device).to(dev)
    flip = (torch.rand(b, generator=generator, device=generator.device) < 0.5).to(dev)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None]
    ramp = torch.arange(w, device=dev)
    cols = (dx[:, None] + torch.where(flip[:, None], ramp.flip(0), ramp))[:, None, :]
    # Advanced indices on dims 0, 2, 3 around a slice: the result is [b, h, w, c].
    return padded[torch.arange(b, device=dev)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
