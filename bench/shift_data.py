"""The real shifted test sets, when a user has them: CIFAR-10-C and CIFAR-10.1 (v6).

Both are numpy arrays, read with ``allow_pickle=False``; shapes, dtypes and labels are checked
before anything is used. Where they are looked for: ``$BENCH_SHIFT_DATA``, the data root, its
parent, and ``<cache>/downloads`` (where ``download_*`` put them).
"""
from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from bench.errors import BenchError

# Hendrycks & Dietterich 2019, Zenodo record 2535967 (2.9 GB).
CIFAR10C_URL = "https://zenodo.org/records/2535967/files/CIFAR-10-C.tar?download=1"
CIFAR10C_MD5 = "56bf5dcef84df0e2308c6dcbcbbd8499"
CIFAR10C_DIR = "CIFAR-10-C"
# Recht et al. 2019, the authors' repository (v6 is the recommended version).
CIFAR101_URL = "https://github.com/modestyachts/CIFAR-10.1/raw/master/datasets/"
CIFAR101_FILES = ("cifar10.1_v6_data.npy", "cifar10.1_v6_labels.npy")
CIFAR101_DIR = "CIFAR-10.1"
# CIFAR-10's class numbering (torchvision's CIFAR10.classes), which CIFAR-10.1's labels use
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def search_roots(data_root: Optional[Path], cache_dir: Path) -> List[Path]:
    roots = [Path(p) for p in [os.environ.get("BENCH_SHIFT_DATA")] if p]
    if data_root is not None:
        roots += [Path(data_root), Path(data_root).parent]
    return roots + [Path(cache_dir) / "downloads"]


_REDOWNLOAD = "; delete it and download it again"


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:  # EOFError: an empty file (a failed wget, a touch)
        raise BenchError(f"{path} is not a readable .npy array ({e}){_REDOWNLOAD}") from None


def find_cifar10c(roots: List[Path]) -> Optional[Path]:
    for r in roots:
        if (r / CIFAR10C_DIR / "labels.npy").is_file():
            return r / CIFAR10C_DIR
    return None


def check_cifar10c(folder: Path, names, test_labels: torch.Tensor) -> None:
    """That the corruptions ``names`` are all there, each uint8 [5 n, 32, 32, 3] (from its .npy
    header: memory-mapped, not read), and the labels the CIFAR-10 test labels repeated 5 times,
    severity-major: checked when a run starts, not when its first model reaches a missing or
    cut-off file."""
    n = len(test_labels)
    for name in names:
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise BenchError(f"{path} is missing: CIFAR-10-C at {folder} is incomplete; download {CIFAR10C_URL}")
        arr = _load_npy(path)
        if arr.dtype != np.uint8 or arr.shape != (5 * n, 32, 32, 3):
            raise BenchError(f"{path}: expected uint8 of shape {(5 * n, 32, 32, 3)}, got {arr.dtype} {arr.shape}")
    labels = _load_npy(folder / "labels.npy")
    if labels.shape != (5 * n,) or not np.array_equal(np.asarray(labels[:n]).astype(np.int64), test_labels.cpu().numpy()) \
            or not all(np.array_equal(labels[:n], labels[s * n:(s + 1) * n]) for s in range(1, 5)):
        raise BenchError(f"{folder / 'labels.npy'} does not match the CIFAR-10 test labels repeated 5 times "
                         f"(is this CIFAR-10-C of another dataset?)")


def load_cifar10c(folder: Path, name: str, test_labels: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """All 5 severities of one corruption as uint8 [5, 10000, 3, 32, 32], checked against the
    CIFAR-10 test labels (check_cifar10c)."""
    check_cifar10c(folder, [name], test_labels)
    n = len(test_labels)
    x = torch.from_numpy(np.array(_load_npy(folder / f"{name}.npy"))).view(5, n, 32, 32, 3).permute(0, 1, 4, 2, 3)
    return x, n


def find_cifar101(roots: List[Path]) -> Optional[Path]:
    for r in roots:
        for folder in (r / CIFAR101_DIR, r):
            if all((folder / f).is_file() for f in CIFAR101_FILES):
                return folder
    return None


def load_cifar101(folder: Path) -> Tuple[torch.Tensor, torch.Tensor]:
    data, labels = (_load_npy(folder / f) for f in CIFAR101_FILES)
    if data.dtype != np.uint8 or data.ndim != 4 or data.shape[1:] != (32, 32, 3):
        raise BenchError(f"{folder / CIFAR101_FILES[0]}: expected uint8 [N,32,32,3], got {data.dtype} {data.shape}")
    # whole numbers first: min() of no labels or of text was a numpy traceback, and 1.5 was cast to class 1
    whole = np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating) \
        and bool(np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)))
    if not len(data) or labels.shape != (len(data),) or not whole or labels.min() < 0 or labels.max() > 9:
        raise BenchError(f"{folder / CIFAR101_FILES[1]}: expected {len(data) or 'some'} integer labels in 0..9, "
                         f"got {labels.dtype} of shape {labels.shape}")
    return (torch.from_numpy(np.array(data)).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(np.asarray(labels).astype(np.int64)))


def _remove_made(made: List[Path]) -> None:
    """The folders a failed download created, innermost first; one something else has written into stays."""
    for p in made:
        try:
            p.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            break


def _check_members(tar: tarfile.TarFile) -> None:
    """What the "data" filter refuses, for a Python without it: a member outside the folder (an
    absolute name, a ../), and anything but a plain file or a folder (links, devices)."""
    for m in tar.getmembers():  # the errors of those Pythons' tarfile: TarError, in the filter's words
        if os.path.isabs(m.name) or ".." in Path(m.name).parts:
            raise tarfile.TarError(f"{m.name!r} would be extracted outside the destination")
        if not (m.isfile() or m.isdir()):
            raise tarfile.TarError(f"{m.name!r} is not a plain file or folder")


def download_cifar10c(dest: Path, url: str = CIFAR10C_URL, md5: str = CIFAR10C_MD5) -> Path:
    """CIFAR-10-C (2.9 GB) into ``dest``: the archive downloaded into a temporary folder there and
    md5-checked, unpacked beside it, then both renamed into place; a failed or cut-off download
    leaves neither a partial archive nor a half-unpacked folder. A complete archive already in
    ``dest`` (its md5 checked) is unpacked rather than downloaded again."""
    import shutil
    import tempfile

    from torchvision.datasets.utils import calculate_md5, download_url
    dest = Path(dest)
    archive, folder = dest / "CIFAR-10-C.tar", dest / CIFAR10C_DIR
    if folder.exists():  # not found there (no labels.npy), and not ours to delete
        raise BenchError(f"{folder} exists but is not a complete CIFAR-10-C (no labels.npy): delete it and rerun to "
                         f"download CIFAR-10-C again")
    made = [p for p in (dest, *dest.parents) if not p.exists()]  # removed again on failure
    done = False
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-cifar10c-", dir=dest))
        try:
            have = archive.is_file() and calculate_md5(archive) == md5
            source = archive if have else tmp / archive.name
            if not have:
                download_url(url, str(tmp), filename=archive.name)
                got = calculate_md5(source)
                if got != md5:
                    raise BenchError(f"could not download CIFAR-10-C from {url}: what came has md5 {got}, not {md5} "
                                     f"(cut off, or another file); nothing was kept: rerun to download it again")
            try:
                # the "data" filter refuses members outside the folder (../, absolute paths, links out of
                # it) and device files: torchvision's extractor applies none on this Python
                with tarfile.open(source) as tar:
                    if hasattr(tarfile, "data_filter"):
                        tar.extractall(tmp / "unpacked", filter="data")
                    else:  # Python before 3.10.12 / 3.11.4 has no filters: the members are checked here
                        _check_members(tar)
                        tar.extractall(tmp / "unpacked")
            except tarfile.TarError as e:
                raise BenchError(f"could not unpack CIFAR-10-C from {url} ({e.__class__.__name__}: {e}); nothing "
                                 f"was kept: download it by hand and unpack it so that {folder}/labels.npy "
                                 f"exists") from None
            if not (tmp / "unpacked" / CIFAR10C_DIR / "labels.npy").is_file():
                raise BenchError(f"the archive from {url} has no {CIFAR10C_DIR}/labels.npy: it is not CIFAR-10-C "
                                 f"(check the url and md5); nothing was kept")
            os.replace(tmp / "unpacked" / CIFAR10C_DIR, folder)
            if not have:
                os.replace(source, archive)
            done = True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        raise BenchError(f"could not download CIFAR-10-C from {url} ({e.__class__.__name__}: {e}; md5 {md5}); "
                         f"download it by hand and unpack it so that {folder}/labels.npy exists") from None
    finally:
        if not done:
            _remove_made(made)
    return folder


def download_cifar101(dest: Path, base_url: Optional[str] = None) -> Path:
    """The two files into a temporary folder, checked, then moved into ``dest``/CIFAR-10.1: a
    failed download (offline, say) leaves neither a partial file there nor an empty folder."""
    import shutil
    import tempfile

    from torchvision.datasets.utils import download_url
    base_url = base_url or CIFAR101_URL
    dest = Path(dest)
    folder = dest / CIFAR101_DIR
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # removed again on failure
    done = False
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-cifar10.1-", dir=dest))
        try:
            for f in CIFAR101_FILES:
                download_url(base_url + f, str(tmp), filename=f)
            try:
                load_cifar101(tmp)  # checked now, not mid-run
            except BenchError as e:
                # its message names a file of the temp folder, removed below, and says to delete it: the
                # cure is a new download (a cut-off body, which urllib does not report, ends here)
                why = str(e).replace(f"{tmp}{os.sep}", "").replace(_REDOWNLOAD, "")
                raise BenchError(f"the download of CIFAR-10.1 from {base_url} was incomplete or damaged ({why}); "
                                 f"nothing was kept: rerun to download it again") from None
            folder.mkdir(exist_ok=True)
            for f in CIFAR101_FILES:
                os.replace(tmp / f, folder / f)
            done = True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        raise BenchError(f"could not download CIFAR-10.1 from {base_url} ({e.__class__.__name__}); put "
                         f"{' and '.join(CIFAR101_FILES)} in {folder}") from None
    finally:
        if not done:
            _remove_made(made)
    return folder
