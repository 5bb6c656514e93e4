import hashlib
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import augment, load_dataset, stratified_indices
from bench.errors import BenchError


def make_imagefolder(root, n_train=6, n_test=3, classes=("a", "b", "c"), fmt="png"):
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


def test_imagefolder_tree_and_cache(tmp_path):
    root = make_imagefolder(tmp_path / "toyset")
    cache = tmp_path / "cache"
    ds = load_dataset(str(root), cache)
    assert ds.name == "toyset"
    assert ds.classes == ["a", "b", "c"]
    assert ds.train.images.shape == (18, 3, 32, 32) and ds.train.images.dtype == torch.uint8
    assert ds.test.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # PNG is lossless: the marker pixel says each image sits under its own label
    marker = ds.train.images[:, :, 0, 0]
    assert torch.equal(marker[:, 0].long(), ds.train.labels)
    files = list((cache / "data").glob("*.safetensors"))
    assert len(files) == 1
    again = load_dataset(str(root), cache)
    assert again.fingerprint == ds.fingerprint and torch.equal(again.train.images, ds.train.images)
    # the second load read the cache: a corrupted cache is now reported, not silently rebuilt
    data = bytearray(files[0].read_bytes())
    data[-100] ^= 0xFF
    files[0].write_bytes(bytes(data))
    with pytest.raises(BenchError, match="corrupt"):
        load_dataset(str(root), cache)
    # a changed source makes a new cache entry (the old one is keyed by the old files)
    files[0].unlink()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "train" / "a" / "0000.png")
    changed = load_dataset(str(root), cache)
    assert changed.fingerprint != ds.fingerprint


def test_wrong_image_size_is_reported(tmp_path):
    root = make_imagefolder(tmp_path / "toy")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "test" / "a" / "0000.png")
    with pytest.raises(BenchError, match="expected a 32x32"):
        load_dataset(str(root), tmp_path / "cache")


def test_missing_data_root_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_DATA", raising=False)
    with pytest.raises(BenchError) as e:
        load_dataset(str(tmp_path / "nope"), tmp_path / "cache")
    assert "does not exist" in str(e.value) and "--data-root" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="neither"):
        load_dataset(str(tmp_path / "empty"), tmp_path / "cache")


# --- torchvision's CIFAR-10 python format, offline ---------------------------------------------

def _write_cifar_batches(folder, n_per_batch=20):
    """Small files in the layout and format of cifar-10-python.tar.gz (pickled dicts)."""
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


def _register_checksums(monkeypatch, md5):
    """These test files are not the official ones, so torchvision's integrity check needs their md5s."""
    from torchvision.datasets import CIFAR10
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5[n]] for n, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[n, md5[n]] for n, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", dict(CIFAR10.meta, md5=md5[CIFAR10.meta["filename"]]))


def test_cifar10_python_folder_with_checksums(tmp_path, monkeypatch):
    md5 = _write_cifar_batches(tmp_path / "root" / "cifar-10-batches-py")
    # files that do not match torchvision's checksums are refused, never unpickled
    with pytest.raises(BenchError, match="md5"):
        load_dataset(str(tmp_path / "root"), tmp_path / "cache")
    _register_checksums(monkeypatch, md5)
    ds = load_dataset(str(tmp_path / "root"), tmp_path / "cache")
    assert ds.name == "cifar10"
    assert ds.train.images.shape == (100, 3, 32, 32) and ds.test.images.shape == (20, 3, 32, 32)
    assert ds.classes[0] == "airplane"


def test_cifar10_download_path_offline(tmp_path, monkeypatch, http_server):
    """The real download code (torchvision's download_and_extract_archive) over real HTTP, from a
    local server holding a small archive in the official layout."""
    from torchvision.datasets import CIFAR10
    www, base = http_server
    src = tmp_path / "src"
    md5 = _write_cifar_batches(src / "cifar-10-batches-py")
    tgz = www / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    _register_checksums(monkeypatch, md5)
    monkeypatch.setattr(CIFAR10, "url", f"{base}/cifar-10-python.tar.gz")
    monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5(tgz.read_bytes()).hexdigest())
    monkeypatch.delenv("BENCH_DATA", raising=False)
    ds = load_dataset(None, tmp_path / "cache")  # no data root: download into <cache>/downloads
    assert ds.name == "cifar10" and len(ds.train) == 100
    assert (tmp_path / "cache" / "downloads" / "cifar-10-batches-py").is_dir()


def test_download_failure_is_one_line(tmp_path, monkeypatch, http_server):
    from torchvision.datasets import CIFAR10
    monkeypatch.setattr(CIFAR10, "url", f"{http_server[1]}/missing.tar.gz")  # 404
    monkeypatch.delenv("BENCH_DATA", raising=False)
    with pytest.raises(BenchError) as e:
        load_dataset(None, tmp_path / "cache")
    assert "could not be downloaded" in str(e.value) and "\n" not in str(e.value)


# --- subsets and augmentation -------------------------------------------------------------------

def test_stratified_subset_is_balanced_seeded_and_not_the_first_n():
    labels = torch.arange(10).repeat_interleave(100)  # grouped by class, like ImageFolder
    idx = stratified_indices(labels, 95, seed=3)
    counts = labels[idx].bincount(minlength=10)
    assert counts.sum() == 95 and counts.max() - counts.min() <= 1
    assert torch.equal(idx, stratified_indices(labels, 95, seed=3))
    assert not torch.equal(idx, stratified_indices(labels, 95, seed=4))
    assert len(set(idx.tolist())) == 95
    assert torch.equal(stratified_indices(labels, None, 0), torch.arange(1000))
    with pytest.raises(BenchError):
        stratified_indices(labels, 5000, 0)


def test_augment_crops_and_flips_on_the_batch():
    x = torch.rand(256, 3, 32, 32)
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    # every output is a 32x32 window of the zero-padded input, possibly mirrored
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(0, 256, 37):
        hits = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                if torch.equal(out[i], (lambda w: w.flip(2) if f else w)(padded[i, :, dy:dy + 32, dx:dx + 32]))]
        assert hits, i
    flipped = sum(torch.equal(out[i], x[i].flip(2)) for i in range(256))
    same = sum(torch.equal(out[i], x[i]) for i in range(256))
    assert same + flipped < 256  # some images were shifted
    assert torch.equal(out, augment(x, torch.Generator().manual_seed(0)))
