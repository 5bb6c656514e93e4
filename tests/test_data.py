import hashlib
import pickle
import shutil
import subprocess
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import augment, load_dataset, stratified_indices, to_float
from bench.errors import BenchError
from tests.builders import make_imagefolder, register_checksums, write_cifar_batches


def test_one_tree_named_three_ways_is_one_cache(tmp_path, monkeypatch):
    """Relative, absolute, through a link: a Ray task gets the root absolute where the driver was
    given it relative, and decoded a second cache of the same images beside the driver's."""
    root = make_imagefolder(tmp_path / "toyset")
    (tmp_path / "link").symlink_to(root)
    monkeypatch.chdir(tmp_path)
    for spelled in ("toyset", str(root), "link"):
        load_dataset(spelled, tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "data").glob("*.safetensors"))) == 1


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
    # an image added is a new key too, beside the last entry; a load with nothing changed reads it
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(root / "train" / "b" / "extra.png")
    grown = load_dataset(str(root), cache)
    assert grown.train.images.shape[0] == 19 and len(list((cache / "data").glob("*.safetensors"))) == 2
    assert load_dataset(str(root), cache).fingerprint == grown.fingerprint
    assert len(list((cache / "data").glob("*.safetensors"))) == 2


def test_wrong_image_size_is_reported(tmp_path):
    root = make_imagefolder(tmp_path / "toy")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "test" / "a" / "0000.png")
    with pytest.raises(BenchError, match="expected a 32x32"):
        load_dataset(str(root), tmp_path / "cache")


def test_a_class_folder_missing_from_one_split_is_named(tmp_path):
    root = make_imagefolder(tmp_path / "toy")
    shutil.rmtree(root / "test" / "b")
    with pytest.raises(BenchError, match=r"different class folders \(only train has b\): give both splits"):
        load_dataset(str(root), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


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

def test_cifar10_python_folder_with_checksums(tmp_path, monkeypatch):
    md5 = write_cifar_batches(tmp_path / "root" / "cifar-10-batches-py")
    # files that do not match torchvision's checksums are refused, never unpickled
    with pytest.raises(BenchError, match="md5"):
        load_dataset(str(tmp_path / "root"), tmp_path / "cache")
    register_checksums(monkeypatch, md5)
    ds = load_dataset(str(tmp_path / "root"), tmp_path / "cache")
    assert ds.name == "cifar10"
    assert ds.train.images.shape == (100, 3, 32, 32) and ds.test.images.shape == (20, 3, 32, 32)
    assert ds.classes[0] == "airplane"


def _serve_archive(monkeypatch, http_server, tmp_path, dataset: str, folder: str, write) -> str:
    """Small files in the official layout, as the official .tar.gz on a local HTTP server that
    torchvision's dataset class is pointed at (url, md5s); returns the server's base URL."""
    import torchvision.datasets
    cls = getattr(torchvision.datasets, dataset)
    www, base = http_server
    md5 = write(tmp_path / "src" / folder)
    tgz = www / cls.filename
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(tmp_path / "src" / folder, arcname=folder)
    register_checksums(monkeypatch, md5, dataset)
    monkeypatch.setattr(cls, "url", f"{base}/{cls.filename}")
    monkeypatch.setattr(cls, "tgz_md5", hashlib.md5(tgz.read_bytes()).hexdigest())
    return base


def test_cifar10_download_path_offline(tmp_path, monkeypatch, http_server):
    """The real download code (torchvision's download_and_extract_archive) over real HTTP, from a
    local server holding a small archive in the official layout."""
    _serve_archive(monkeypatch, http_server, tmp_path, "CIFAR10", "cifar-10-batches-py", write_cifar_batches)
    monkeypatch.delenv("BENCH_DATA", raising=False)
    ds = load_dataset(None, tmp_path / "cache")  # no data root: download into <cache>/downloads
    assert ds.name == "cifar10" and len(ds.train) == 100
    assert (tmp_path / "cache" / "downloads" / "cifar-10-batches-py").is_dir()


def test_download_failure_is_one_line(tmp_path, monkeypatch, http_server):
    """... and leaves nothing behind: neither the folders made for it (an empty <cache>/downloads
    was all a failed offline run left) nor a downloaded archive that fails its md5 check; what
    was in the cache before stays."""
    from torchvision.datasets import CIFAR10
    monkeypatch.setattr(CIFAR10, "url", f"{http_server[1]}/missing.tar.gz")  # 404
    monkeypatch.delenv("BENCH_DATA", raising=False)
    with pytest.raises(BenchError) as e:
        load_dataset(None, tmp_path / "cache")
    assert "could not be downloaded" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists()
    www, base = http_server
    (www / "bad.tar.gz").write_bytes(b"not the archive" * 100)
    monkeypatch.setattr(CIFAR10, "url", f"{base}/bad.tar.gz")
    (tmp_path / "cache" / "data").mkdir(parents=True)
    with pytest.raises(BenchError, match="fails its md5 check"):
        load_dataset(None, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["data"]


# --- torchvision's CIFAR-100 python format, offline --------------------------------------------

CIFAR100_NAMES = [f"fine{i:02d}" for i in range(100)]


def _write_cifar100(folder, n_train=300, n_test=100):
    """Small files in the layout and format of cifar-100-python.tar.gz: one pickled dict per split
    (data, fine_labels, coarse_labels, filenames), and meta with the fine and coarse label names.
    Every image carries its fine label in its first pixel, so the test can see labels follow pixels."""
    from torchvision.datasets import CIFAR100
    rng = np.random.default_rng(2)
    folder.mkdir(parents=True)
    md5 = {}
    for (name, _), n in zip(CIFAR100.train_list + CIFAR100.test_list, (n_train, n_test)):
        fine = np.arange(n) % 100  # every class present
        rng.shuffle(fine)
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        data[:, 0] = fine  # red channel of pixel (0, 0): rows are R plane, then G, then B
        entry = {"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": f"{name} batch",
                 "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(), "data": data}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
        md5[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    meta = CIFAR100.meta["filename"]
    with open(folder / meta, "wb") as f:
        pickle.dump({"fine_label_names": CIFAR100_NAMES,
                     "coarse_label_names": [f"coarse{i:02d}" for i in range(20)]}, f)
    md5[meta] = hashlib.md5((folder / meta).read_bytes()).hexdigest()
    return md5


def test_cifar100_python_folder_with_checksums_and_cache(tmp_path, monkeypatch):
    md5 = _write_cifar100(tmp_path / "root" / "cifar-100-python")
    cache = tmp_path / "cache"
    with pytest.raises(BenchError, match="CIFAR-100 .*md5"):  # not the official files: never unpickled
        load_dataset(str(tmp_path / "root"), cache)
    assert not (cache / "data").exists()
    register_checksums(monkeypatch, md5, "CIFAR100")
    ds = load_dataset(str(tmp_path / "root"), cache)
    assert ds.name == "cifar100" and ds.num_classes == 100 and ds.classes == CIFAR100_NAMES
    assert ds.train.images.shape == (300, 3, 32, 32) and ds.test.images.shape == (100, 3, 32, 32)
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    # fine labels (not coarse), each under its own image
    for split in (ds.train, ds.test):
        assert torch.equal(split.images[:, 0, 0, 0].long(), split.labels)
        assert split.labels.bincount(minlength=100).min() >= 1 and split.labels.max() == 99
    files = list((cache / "data").glob("cifar100-*.safetensors"))
    assert len(files) == 1
    again = load_dataset(str(tmp_path / "root"), cache)
    assert again.fingerprint == ds.fingerprint and again.classes == ds.classes
    assert torch.equal(again.test.images, ds.test.images) and torch.equal(again.train.labels, ds.train.labels)
    # the second load read the cache, not the pickles: breaking the cache is reported
    data = bytearray(files[0].read_bytes())
    data[-50] ^= 0xFF
    files[0].write_bytes(bytes(data))
    with pytest.raises(BenchError, match="corrupt"):
        load_dataset(str(tmp_path / "root"), cache)


def test_choosing_between_cifar10_and_cifar100_in_one_root(tmp_path, monkeypatch):
    root = tmp_path / "root"
    register_checksums(monkeypatch, write_cifar_batches(root / "cifar-10-batches-py"))
    register_checksums(monkeypatch, _write_cifar100(root / "cifar-100-python"), "CIFAR100")
    cache = tmp_path / "cache"
    with pytest.raises(BenchError) as e:  # both there: no silent choice
        load_dataset(str(root), cache)
    assert "--dataset cifar10|cifar100" in str(e.value) and "\n" not in str(e.value)
    assert load_dataset(str(root), cache, dataset="cifar100").num_classes == 100
    assert load_dataset(str(root), cache, dataset="cifar10").name == "cifar10"
    # the folder itself as the data root names the dataset
    assert load_dataset(str(root / "cifar-100-python"), cache).name == "cifar100"
    assert load_dataset(str(root / "cifar-10-batches-py"), cache).name == "cifar10"
    with pytest.raises(BenchError, match="is cifar100, but dataset 'cifar10'"):
        load_dataset(str(root / "cifar-100-python"), cache, dataset="cifar10")
    with pytest.raises(BenchError, match="unknown dataset 'cifar1000'"):
        load_dataset(str(root), cache, dataset="cifar1000")
    only10 = tmp_path / "only10"
    write_cifar_batches(only10 / "cifar-10-batches-py")
    with pytest.raises(BenchError, match="no cifar-100-python folder"):  # an explicit root never downloads
        load_dataset(str(only10), cache, dataset="cifar100")
    with pytest.raises(BenchError, match="ImageFolder tree"):
        load_dataset(str(make_imagefolder(tmp_path / "toy")), cache, dataset="cifar100")


def test_the_commands_read_the_offline_copy_beside_the_checkout(tmp_path, monkeypatch, mini_root, mini_cache,
                                                               mini_data, capsys):
    """`python -m bench.run --model resnet18_T5 --attack pgd` with neither --data-root nor
    BENCH_DATA tried to download CIFAR-10 and, offline, stopped, where `make bench` reads the copy
    beside the checkout; now the commands read it too (here the mini tree stands in for it). A
    named torchvision dataset still downloads, and without the copy the download is the default."""
    import bench.data
    from bench.run import main
    monkeypatch.delenv("BENCH_DATA", raising=False)
    monkeypatch.setattr(bench.data, "OFFLINE_COPY", mini_root)
    assert bench.data.default_data_root() == str(mini_root) and bench.data.default_data_root("cifar100") is None
    assert main(["--profile", "smoke", "--model", "fastnetw8_T1", "--attack", "fgsm", "--cache", str(mini_cache),
                 "--results", str(tmp_path / "r"), "--dry-run"]) == 0
    assert "data: cifar10-mini (" in capsys.readouterr().err and not (tmp_path / "r").exists()
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "elsewhere"))
    assert bench.data.default_data_root() == str(tmp_path / "elsewhere")
    monkeypatch.delenv("BENCH_DATA")
    monkeypatch.setattr(bench.data, "OFFLINE_COPY", tmp_path / "no_copy")
    assert bench.data.default_data_root() is None


def test_cifar100_downloads_only_when_named(tmp_path, monkeypatch, http_server):
    """The default root downloads CIFAR-100 when it is asked for by name (over real HTTP from a
    local server), and a plain run there still means CIFAR-10."""
    from torchvision.datasets import CIFAR10
    base = _serve_archive(monkeypatch, http_server, tmp_path, "CIFAR100", "cifar-100-python", _write_cifar100)
    monkeypatch.setattr(CIFAR10, "url", f"{base}/missing.tar.gz")  # a CIFAR-10 download would fail
    monkeypatch.delenv("BENCH_DATA", raising=False)
    cache = tmp_path / "cache"
    ds = load_dataset(None, cache, dataset="cifar100")
    assert ds.name == "cifar100" and len(ds.train) == 300
    assert (cache / "downloads" / "cifar-100-python").is_dir()
    # not named: the default root means CIFAR-10, even with CIFAR-100 sitting there
    with pytest.raises(BenchError, match="CIFAR-10 is not in .* could not be downloaded"):
        load_dataset(None, cache)


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
    # the trainer augments the uint8 images and converts after: the same floats, channels_last
    u8 = (x * 255).round().to(torch.uint8)
    out8 = to_float(augment(u8, torch.Generator().manual_seed(0)))
    assert out8.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out8, augment(to_float(u8), torch.Generator().manual_seed(0)))


# --- unreadable images and unusable cache folders: one line, nothing written --------------------

def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else None


@pytest.mark.parametrize("damage", ["text file", "truncated jpeg"])
def test_an_unreadable_image_is_named_and_nothing_is_cached(tmp_path, damage):
    root = make_imagefolder(tmp_path / "toy", fmt="jpg")
    bad = root / "train" / "b" / "0003.jpg"
    if damage == "text file":
        bad.write_text("this is not a JPEG\n")
    else:
        bad.write_bytes(bad.read_bytes()[:len(bad.read_bytes()) // 2])
    with pytest.raises(BenchError) as e:
        load_dataset(str(root), tmp_path / "cache")
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists()


def test_a_dangling_symlink_in_the_tree_is_named_and_nothing_is_cached(tmp_path):
    """os.stat of a link to nothing, for the cache key, was a FileNotFoundError traceback."""
    root = make_imagefolder(tmp_path / "toy")
    link = root / "train" / "b" / "linked.png"
    link.symlink_to(tmp_path / "elsewhere" / "gone.png")
    with pytest.raises(BenchError) as e:
        load_dataset(str(root), tmp_path / "cache")
    assert str(link) in str(e.value) and "delete the link" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists()


@pytest.fixture
def mount_tmpfs(tmp_path):
    """Mount a small real tmpfs (root only; skips elsewhere): a full or read-only cache folder."""
    mounted = []

    def mount(path, options):
        path.mkdir(parents=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("case", ["a file", "read-only", "full disk"])
def test_an_unusable_cache_folder_is_one_line_before_anything_is_written(tmp_path, mount_tmpfs, case):
    root = make_imagefolder(tmp_path / "toy")  # 27 images: 81 KiB decoded
    if case == "a file":
        cache = tmp_path / "cache"
        cache.write_text("")
    elif case == "read-only":
        cache = mount_tmpfs(tmp_path / "ro", "ro,size=1m") / "cache"
    else:
        cache = mount_tmpfs(tmp_path / "small", "size=64k")
    before = _listing(tmp_path)
    with pytest.raises(BenchError) as e:
        load_dataset(str(root), cache)
    msg = str(e.value)
    assert f"cache folder {cache} " in msg and "--cache DIR or set BENCH_CACHE" in msg and "\n" not in msg
    assert {"a file": "is a file", "read-only": "read-only", "full disk": "full disk"}[case] in msg
    assert _listing(tmp_path) == before


def test_a_read_only_cache_is_refused_at_plan_time(tmp_path, mount_tmpfs):
    """The data may already be cached there, but checkpoints and their locks are written there too:
    the CLI stops before it writes anything (job logs included)."""
    from bench.run import build_parser
    from bench.cli import make_plan
    cache = mount_tmpfs(tmp_path / "ro", "ro,size=1m")
    args = build_parser().parse_args(["--model", "fastnetw8_T1", "--profile", "smoke", "--cache", str(cache),
                                      "--results", str(tmp_path / "results")])
    with pytest.raises(BenchError, match=f"cache folder {cache} cannot be written .*--cache DIR"):
        make_plan(args)
    assert not (tmp_path / "results").exists()


def test_a_folder_of_images_named_cifar10_is_not_the_original(tmp_path):
    """An ImageFolder tree in a folder called cifar10 was recorded as dataset cifar10, the name of
    the original binaries, which the real CIFAR-10-C pairs with and recheck takes for the same
    data: it is cifar10-folder."""
    assert load_dataset(str(make_imagefolder(tmp_path / "cifar10")), tmp_path / "cache").name == "cifar10-folder"
    assert load_dataset(str(make_imagefolder(tmp_path / "toyset")), tmp_path / "cache").name == "toyset"


def test_a_torchvision_folder_named_itself_is_read_beside_a_folder_of_images(tmp_path, monkeypatch):
    """--data-root .../cifar-10-batches-py whose parent also holds train/ and test/ class folders:
    the folder named is read (the parent's image tree stopped it, over a dataset choice the user
    never made)."""
    root = make_imagefolder(tmp_path / "both")
    register_checksums(monkeypatch, write_cifar_batches(root / "cifar-10-batches-py"))
    assert load_dataset(str(root / "cifar-10-batches-py"), tmp_path / "cache").name == "cifar10"


def test_a_dataset_choice_against_bench_data_says_where_the_root_came_from(tmp_path, monkeypatch):
    """make exports BENCH_DATA (the JPEG copy): `--dataset cifar100` then met an ImageFolder root
    with no word of where it came from or what to do."""
    root = make_imagefolder(tmp_path / "toy")
    monkeypatch.setenv("BENCH_DATA", str(root))
    with pytest.raises(BenchError) as e:
        load_dataset(str(root), tmp_path / "cache", dataset="cifar100")
    assert "(from $BENCH_DATA)" in str(e.value) and "pass --data-root DIR holding cifar-100-python" in str(e.value)
    assert "unset BENCH_DATA" in str(e.value)


def test_a_download_cut_short_while_unpacking_says_delete_it(tmp_path, monkeypatch):
    """A run killed while torchvision unpacked the archive leaves cifar-10-batches-py half there,
    and its presence stops every later download: the line says to delete it (it said to pass
    --data-root, and quoted torchvision's 'download=True', no option of ours)."""
    monkeypatch.delenv("BENCH_DATA", raising=False)
    folder = tmp_path / "cache" / "downloads" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(b"cut off")
    with pytest.raises(BenchError) as e:
        load_dataset(None, tmp_path / "cache")
    assert str(e.value) == f"{folder} is an incomplete download (a run stopped while unpacking it): delete it and " \
                           f"rerun to download CIFAR-10 again"


def test_a_sample_larger_than_the_smallest_class_allows_says_how_large_it_can_be():
    labels = torch.tensor([0] * 3 + [1] * 7)
    with pytest.raises(BenchError) as e:
        stratified_indices(labels, 9, seed=0)
    assert str(e.value) == "a class-balanced sample of 9 images draws 5 of class 0, which has 3: ask for at most 6 " \
                           "([eval] n / shift_n, --n-test / --shift-n)"
    assert len(stratified_indices(labels, 6, seed=0)) == 6
