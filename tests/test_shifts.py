"""Natural transforms, the real shifted test sets (small fake files made here) and their evaluation."""
import hashlib
import tarfile

import numpy as np
import pytest
import torch

from attacks.natural import NATURAL, apply_natural, worst_grid
from bench.data import stratified_indices
from bench.errors import BenchError
from bench.measure.cifar101 import evaluate_test_set
from bench.measure.natural import evaluate_natural
from bench.shift_data import (download_cifar101, download_cifar10c, find_cifar101, find_cifar10c, load_cifar101,
                              load_cifar10c)
from tests.builders import register_checksums, write_cifar101, write_cifar_batches


def smooth_images(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(base, size=32, mode="bilinear", align_corners=False)


def test_natural_transforms_grow_with_magnitude_and_stay_in_range():
    x = smooth_images()
    for name, info in NATURAL.items():
        mags = sorted({abs(m) for m in info.magnitudes} if name in ("rotate", "hue") else
                      [m for m in info.magnitudes if (m > 1 if info.unit == "factor" else True)])
        diffs = []
        for m in mags:
            out = apply_natural(x, name, m)
            assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
            diffs.append((out - x).abs().mean().item())
        assert all(a < b + 1e-6 for a, b in zip(diffs, diffs[1:])), (name, diffs)
        assert diffs[0] > 0, name


def test_translation_is_an_exact_pixel_shift():
    x = torch.rand(4, 3, 32, 32)
    out = apply_natural(x, "translate", 2)
    # image 0 is shifted right by 2, image 1 left, 2 down, 3 up (one direction per quarter)
    assert torch.allclose(out[0, :, :, 2:], x[0, :, :, :-2], atol=1e-6) and (out[0, :, :, :2] == 0).all()
    assert torch.allclose(out[1, :, :, :-2], x[1, :, :, 2:], atol=1e-6)
    assert torch.allclose(out[2, :, 2:, :], x[2, :, :-2, :], atol=1e-6)
    assert torch.allclose(out[3, :, :-2, :], x[3, :, 2:, :], atol=1e-6)


def test_worst_grid_includes_the_identity_and_bounds_accuracy(tiny_model, mini_data):
    spec, model = tiny_model
    grid = list(worst_grid(torch.rand(2, 3, 32, 32)))
    assert len(grid) == 63 and any(k == (0, 0, 0) for k, _ in grid)
    split = mini_data.test.subset(stratified_indices(mini_data.test.labels, 200, 0))
    ms = {m.threat + str(m.magnitude): m.metrics["accuracy"] for m in
          evaluate_natural(model, split, ["rotate", "worst_grid"], batch_size=100)}
    clean = evaluate_test_set(model, "x", split.images, split.labels, 100, {}).metrics["accuracy"]
    assert ms["worst_gridnan"] <= min(ms["rotate-30.0"], ms["rotate30.0"], clean)
    assert ms["rotate-2.0"] >= ms["rotate-30.0"] - 0.02  # small rotations hurt less


# --- CIFAR-10.1 ---------------------------------------------------------------------------------

def test_cifar101_files(tmp_path):
    write_cifar101(tmp_path / "CIFAR-10.1")
    assert find_cifar101([tmp_path]) == tmp_path / "CIFAR-10.1"
    x, y = load_cifar101(tmp_path / "CIFAR-10.1")
    assert x.shape == (30, 3, 32, 32) and x.dtype == torch.uint8 and y.shape == (30,)
    labels = np.asarray(y)
    np.save(tmp_path / "CIFAR-10.1" / "cifar10.1_v6_labels.npy", labels.astype(np.float32))  # whole: the same
    assert torch.equal(load_cifar101(tmp_path / "CIFAR-10.1")[1], y)
    # out of range; a fraction (was cast to a class); text and no images (were numpy tracebacks)
    for bad in (np.full(30, 12), labels + 0.5, labels.astype(str)):
        np.save(tmp_path / "CIFAR-10.1" / "cifar10.1_v6_labels.npy", bad)
        with pytest.raises(BenchError, match="expected 30 integer labels in 0..9"):
            load_cifar101(tmp_path / "CIFAR-10.1")
    np.save(tmp_path / "CIFAR-10.1" / "cifar10.1_v6_data.npy", np.zeros((0, 32, 32, 3), np.uint8))
    np.save(tmp_path / "CIFAR-10.1" / "cifar10.1_v6_labels.npy", labels[:0])
    with pytest.raises(BenchError, match="expected some integer labels"):
        load_cifar101(tmp_path / "CIFAR-10.1")
    np.save(tmp_path / "CIFAR-10.1" / "cifar10.1_v6_data.npy", np.zeros((30, 32, 32), np.uint8))
    with pytest.raises(BenchError, match="expected uint8"):
        load_cifar101(tmp_path / "CIFAR-10.1")
    # a pickled object array is refused, not unpickled
    np.save(tmp_path / "CIFAR-10.1" / "cifar10.1_v6_data.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BenchError, match="not a readable"):
        load_cifar101(tmp_path / "CIFAR-10.1")


def test_cifar101_download_over_http(tmp_path, http_server):
    www, base = http_server
    write_cifar101(www)
    folder = download_cifar101(tmp_path / "dl", base_url=base + "/")
    assert load_cifar101(folder)[0].shape == (30, 3, 32, 32)
    with pytest.raises(BenchError, match="could not download CIFAR-10.1"):
        download_cifar101(tmp_path / "cache" / "downloads", base_url=base + "/missing/")
    assert not (tmp_path / "cache").exists()  # a failed download leaves no folder behind
    (www / "bad").mkdir()
    (www / "bad" / "cifar10.1_v6_data.npy").write_bytes(b"not numpy")
    (www / "bad" / "cifar10.1_v6_labels.npy").write_bytes(b"not numpy")
    (tmp_path / "cache").mkdir()
    with pytest.raises(BenchError, match="not a readable"):
        download_cifar101(tmp_path / "cache" / "downloads", base_url=base + "/bad/")
    assert list((tmp_path / "cache").iterdir()) == []  # nor a file that fails its check


# --- CIFAR-10-C ---------------------------------------------------------------------------------

def write_cifar10c(folder, test_labels, names=("gaussian_noise",)):
    folder.mkdir(parents=True, exist_ok=True)
    n = len(test_labels)
    np.save(folder / "labels.npy", np.tile(test_labels.numpy().astype(np.uint8), 5))
    rng = np.random.default_rng(0)
    for name in names:
        arr = rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8)
        arr[:, 0, 0, 0] = np.repeat(np.arange(5), n)  # the severity, to check the layout
        np.save(folder / f"{name}.npy", arr)


def test_cifar10c_files(tmp_path):
    labels = torch.arange(10).repeat(2)
    write_cifar10c(tmp_path / "CIFAR-10-C", labels)
    folder = find_cifar10c([tmp_path / "elsewhere", tmp_path])
    assert folder == tmp_path / "CIFAR-10-C"
    x, n = load_cifar10c(folder, "gaussian_noise", labels)
    assert x.shape == (5, 20, 3, 32, 32) and n == 20
    assert (x[:, :, 0, 0, 0] == torch.arange(5)[:, None]).all()  # severity-major
    with pytest.raises(BenchError, match="does not match the CIFAR-10 test labels"):
        load_cifar10c(folder, "gaussian_noise", labels.flip(0))
    with pytest.raises(BenchError, match="is missing"):
        load_cifar10c(folder, "fog", labels)
    np.save(folder / "gaussian_noise.npy", np.zeros((99, 32, 32, 3), np.uint8))
    with pytest.raises(BenchError, match="expected uint8 of shape"):
        load_cifar10c(folder, "gaussian_noise", labels)


def test_cifar10c_download_with_md5_over_http(tmp_path, http_server):
    www, base = http_server
    labels = torch.arange(10)
    write_cifar10c(tmp_path / "src" / "CIFAR-10-C", labels)
    with tarfile.open(www / "CIFAR-10-C.tar", "w") as tar:
        tar.add(tmp_path / "src" / "CIFAR-10-C", arcname="CIFAR-10-C")
    md5 = hashlib.md5((www / "CIFAR-10-C.tar").read_bytes()).hexdigest()
    with pytest.raises(BenchError, match="could not download CIFAR-10-C"):  # a wrong md5 is refused
        download_cifar10c(tmp_path / "bad", url=base + "/CIFAR-10-C.tar", md5="0" * 32)
    folder = download_cifar10c(tmp_path / "dl", url=base + "/CIFAR-10-C.tar", md5=md5)
    assert load_cifar10c(folder, "gaussian_noise", labels)[0].shape == (5, 10, 3, 32, 32)


# --- the real CIFAR-10-C through the whole CLI --------------------------------------------------

REAL_PROFILE = """
[recipe]
epochs = 1
batch_size = 20
lr = 0.05
[eval]
batch_size = 50
attacks = ["fgsm"]
views = ["raw"]
corruptions = "real"
corruption_names = ["gaussian_noise", "fog"]
severities = [1, 3, 5]
[[grid]]
arch = "fastnetw8"
T = [1]
"""


def test_real_cifar10c_end_to_end(tmp_path, monkeypatch, capsys):
    import pandas as pd

    from bench.data import load_dataset
    from bench.run import main
    md5 = write_cifar_batches(tmp_path / "root" / "cifar-10-batches-py")
    register_checksums(monkeypatch, md5)
    data = load_dataset(str(tmp_path / "root"), tmp_path / "cache")
    write_cifar10c(tmp_path / "shift" / "CIFAR-10-C", data.test.labels, names=("gaussian_noise", "fog"))
    monkeypatch.setenv("BENCH_SHIFT_DATA", str(tmp_path / "shift"))
    (tmp_path / "real.toml").write_text(REAL_PROFILE)
    args = ["--profile", str(tmp_path / "real.toml"), "--data-root", str(tmp_path / "root"),
            "--cache", str(tmp_path / "cache"), "--results", str(tmp_path / "out"), "--tables-only"]
    assert main(args) == 0, capsys.readouterr().err
    tidy = pd.read_csv(tmp_path / "out" / "results.csv")
    corr = tidy[tidy.family == "corruption"]
    assert set(corr.source) == {"cifar10c"} and set(corr.severity) == {0, 1, 3, 5} and set(corr.n) == {20}
    assert set(corr.corruption) == {"none", "gaussian_noise", "fog"}
    # and real CIFAR-10-C does not pair with another copy of the data (images would not match)
    jpeg = tmp_path / "jpeg"
    (jpeg / "train").mkdir(parents=True)
    (jpeg / "test").mkdir()
    for split in ("train", "test"):
        for c in range(2):
            (jpeg / split / f"c{c}").mkdir()
            from PIL import Image
            for i in range(25):
                Image.fromarray(np.full((32, 32, 3), 40 * c + i, np.uint8)).save(jpeg / split / f"c{c}" / f"{i}.png")
    capsys.readouterr()
    args[3] = str(jpeg)
    assert main(args) == 2
    assert "pairs only with the original cifar10" in capsys.readouterr().err
    # nor with the training split: its indices read past CIFAR-10-C's 10,000 test images (an
    # IndexError), or, below 10,000, paired test images with training labels
    args[3] = str(tmp_path / "root")
    (tmp_path / "train.toml").write_text(REAL_PROFILE.replace("[eval]\n", '[eval]\nsplit = "train"\nn = 30\n'))
    args[1] = str(tmp_path / "train.toml")
    assert main(args) == 2
    assert "real CIFAR-10-C is the test split corrupted; this profile evaluates the train split" in \
        capsys.readouterr().err
    (tmp_path / "auto.toml").write_text((tmp_path / "train.toml").read_text().replace('"real"', '"auto"'))
    args[1], args[7] = str(tmp_path / "auto.toml"), str(tmp_path / "out_auto")
    assert main(args) == 0, capsys.readouterr().err
    tidy = pd.read_csv(tmp_path / "out_auto" / "results.csv")
    assert set(tidy[tidy.family == "corruption"].source) == {"cifar10c-generated"}


def test_an_incomplete_cifar10c_stops_the_run_before_anything_is_trained(tmp_path, monkeypatch, capsys):
    """fog.npy missing (a `tar x` cut short): the files were checked only when a model's first
    corruption job read them, after training and its other jobs had written their files. Now the
    run stops at its start, nothing written; under corruptions = "auto" it measures generated
    corruptions instead, and says so."""
    import pandas as pd

    from bench.data import load_dataset
    from bench.run import main
    md5 = write_cifar_batches(tmp_path / "root" / "cifar-10-batches-py")
    register_checksums(monkeypatch, md5)
    data = load_dataset(str(tmp_path / "root"), tmp_path / "cache")
    write_cifar10c(tmp_path / "shift" / "CIFAR-10-C", data.test.labels, names=("gaussian_noise",))
    monkeypatch.setenv("BENCH_SHIFT_DATA", str(tmp_path / "shift"))
    (tmp_path / "real.toml").write_text(REAL_PROFILE)
    args = ["--profile", str(tmp_path / "real.toml"), "--data-root", str(tmp_path / "root"),
            "--cache", str(tmp_path / "cache"), "--results", str(tmp_path / "out"), "--tables-only"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "fog.npy is missing: CIFAR-10-C at" in err[-1], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache" / "checkpoints").exists()
    (tmp_path / "auto.toml").write_text(REAL_PROFILE.replace('"real"', '"auto"'))
    args[1] = str(tmp_path / "auto.toml")
    assert main(args) == 0, capsys.readouterr().err
    assert "cannot be used" in capsys.readouterr().err
    tidy = pd.read_csv(tmp_path / "out" / "results.csv")
    assert set(tidy[tidy.family == "corruption"].source) == {"cifar10c-generated"}


def test_translation_results_do_not_depend_on_the_batch_size(tiny_model, mini_data):
    """translate gives direction i % 4 to image i of a batch: at a batch size that is not a
    multiple of 4 the directions moved with the batching (250: up to 1.2 pp on one model), and a
    stored record made at another batch size was kept. Batched in multiples of 4, image i's
    direction is its own."""
    from bench.measure.natural import evaluate_natural
    split = mini_data.test

    def accuracies(bs):
        return [m.metrics["accuracy"] for m in evaluate_natural(tiny_model[1], split, ["translate"], bs)]
    assert accuracies(250) == accuracies(100) == accuracies(len(split))
