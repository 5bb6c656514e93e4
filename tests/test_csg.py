"""The Cumulative Spectral Gradient on synthetic data whose answer is known."""
import json
from itertools import product

import numpy as np
import pytest
import scipy.spatial.distance
import torch
from scipy.sparse.csgraph import laplacian

from bench.csg import (CSGResult, csg, csg_from_eigenvalues, dataset_csg, embed, laplacian_eigenvalues, main,
                       sample_per_class)
from bench.data import Split
from bench.errors import BenchError
from tests.builders import make_imagefolder


def gaussians(num_classes=4, per_class=1000, dim=2, spread=10.0, seed=0):
    """Isotropic unit Gaussians with means spread * e_c (the classes sit on a simplex, pairwise
    spread * sqrt(2) apart); the noise is drawn once, so changing spread only moves the means."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(num_classes), per_class)
    noise = rng.normal(size=(len(y), max(dim, num_classes)))
    means = spread * np.eye(num_classes, max(dim, num_classes))
    return noise + means[y], y


def test_known_laplacians():
    # separated classes: W = I, L = 0
    assert csg_from_eigenvalues(laplacian_eigenvalues(np.eye(6))) == 0
    # identical classes: W = 1, L = K I - 11^T, eigenvalues 0, K, ..., K; first gap K / K, cummax 1 -> K - 1
    for k in (2, 3, 10, 100):
        ev = laplacian_eigenvalues(np.ones((k, k)))
        assert np.allclose(ev, [0] + [k] * (k - 1))
        assert csg_from_eigenvalues(ev) == pytest.approx(k - 1)
    # the divisor is K - i counting from i = 0 (the reference code), and the cummax carries an early gap
    assert csg_from_eigenvalues([0, 3, 3.5, 4]) == pytest.approx(3 / 4 + 3 / 4 + 3 / 4)
    assert csg_from_eigenvalues([0, 0, 0, 4]) == pytest.approx(0 + 0 + 4 / 2)


def test_well_separated_classes_give_zero():
    x, y = gaussians(spread=30.0)
    res = csg(x, y)
    assert isinstance(res, CSGResult)
    assert res.value == pytest.approx(0, abs=1e-12)
    assert np.allclose(res.similarity, np.eye(4)) and np.allclose(res.eigenvalues, 0)
    assert res.embedding == "given" and res.m_per_class == 250 and res.k == 3 and res.n_points == 4000


@pytest.mark.parametrize("num_classes,parzen", [(5, False), (10, False), (5, True)])
def test_identical_classes_give_the_maximum(num_classes, parzen):
    """K classes from one distribution: S has equal rows, W = 1 and CSG = K - 1, up to the
    sampling noise of S (a row is a mean over M=250 points of 3 neighbour labels)."""
    x, y = gaussians(num_classes, per_class=2000, spread=0.0)
    if parzen:
        x = x[:, :2]  # the Parzen weights are tame in 2-D or 3-D (the reference's t-SNE), noisy in more
    res = csg(x, y, parzen=parzen)
    assert res.max_value == num_classes - 1
    # the volume weights shrink the effective sample, so the Parzen estimate is noisier
    low = 0.8 if parzen else 0.9
    assert low * (num_classes - 1) < res.value <= num_classes - 1 + 1e-9
    assert np.allclose(res.similarity, 1 / num_classes, atol=0.08 if parzen else 0.06)
    assert np.allclose(res.similarity.sum(1), 1)


def test_csg_grows_as_the_class_means_move_together():
    spreads = [8.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.0]
    values = [csg(*gaussians(spread=s, per_class=1500, dim=4)).value for s in spreads]
    assert values[0] < 0.01 and values[-1] > 0.9 * 3
    assert all(b > a for a, b in zip(values, values[1:])), values


def test_seeded_and_deterministic():
    x, y = gaussians(spread=1.5, per_class=600, seed=1)
    a, b = csg(x, y, seed=3, m_per_class=50), csg(torch.tensor(x), torch.tensor(y), seed=3, m_per_class=50)
    assert a.value == b.value and np.array_equal(a.similarity, b.similarity)
    c = csg(x, y, seed=4, m_per_class=50)
    assert c.value != a.value  # another sample of query points
    assert abs(c.value - a.value) < 0.5
    # the sample: m per class, inside the class, seeded
    picked = sample_per_class(y, 4, 50, seed=3)
    assert [len(p) for p in picked] == [50] * 4 and all((y[p] == c).all() for c, p in enumerate(picked))
    assert all(np.array_equal(p, q) for p, q in zip(picked, sample_per_class(y, 4, 50, seed=3)))


def reference_csg(data, target, class_indices, k, n_class):
    """A plain transcription of the authors' estimator (spectral_metric/lib.py and estimator.py,
    Parzen-window weighting on), given the sampled indices, in loops and scipy calls."""
    def get_volume(dt):
        return max(1e-4, (np.abs(dt[1:] - dt[0]).max(0) * 2).prod())

    expectation = np.zeros([n_class, n_class])
    for class_ix in range(n_class):
        dists = scipy.spatial.distance.cdist(data[class_indices[class_ix]], data)
        for m in range(len(class_indices[class_ix])):
            indices_k = dists[m].argsort()[: k + 1]
            target_k = target[indices_k[1:]]
            probability = np.array([(target_k == c).sum() / k for c in range(n_class)])
            expectation[class_ix] += probability / get_volume(data[indices_k])
        expectation[class_ix] /= expectation[class_ix].sum()
    w = np.empty([n_class, n_class])
    for i, j in product(range(n_class), range(n_class)):
        w[i, j] = 1 - scipy.spatial.distance.braycurtis(expectation[i], expectation[j])
    evals = np.linalg.eigh(laplacian(w, normed=False))[0]
    grads = evals[1:] - evals[:-1]
    ratios = grads / (np.array([list(reversed(range(1, grads.shape[-1] + 1)))]) + 1)
    return float(np.maximum.accumulate(ratios, -1).sum(1)[0]), expectation, evals


@pytest.mark.parametrize("spread", [0.7, 1.5, 3.0])
def test_matches_the_reference_computation(spread):
    x, y = gaussians(num_classes=5, per_class=300, dim=5, spread=spread, seed=2)
    x = x[:, :2] + 0.3 * x[:, 2:4]  # low-dimensional, as the reference's t-SNE: volumes are tame
    ours = csg(x, y, m_per_class=40, k=5, seed=7, parzen=True)
    picked = sample_per_class(y, 5, 40, seed=7)
    value, sim, evals = reference_csg(x, y, dict(enumerate(picked)), 5, 5)
    assert ours.value == pytest.approx(value, abs=1e-9)
    assert np.allclose(ours.similarity, sim, atol=1e-12) and np.allclose(ours.eigenvalues, evals, atol=1e-9)
    # the default (no volume weighting) is a different, plain k-NN mean, close but not equal here
    plain = csg(x, y, m_per_class=40, k=5, seed=7)
    assert not np.allclose(plain.similarity, sim) and abs(plain.value - value) < 1.0


def test_bad_input_is_refused():
    x, y = gaussians()
    with pytest.raises(BenchError, match="every class present"):
        csg(x, np.where(y == 2, 3, y))
    with pytest.raises(BenchError, match="rows"):
        csg(x[:10], y)
    with pytest.raises(BenchError, match="NaN"):
        csg(np.full_like(x, np.nan), y)
    with pytest.raises(BenchError, match="unknown embedding"):
        embed(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), "tsne")


def image_split(per_class=60, num_classes=3, seed=0):
    """Small uint8 images whose class shifts the mean brightness of one colour channel."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    x = torch.randint(0, 120, (len(y), 3, 8, 8), generator=g, dtype=torch.uint8)
    x[torch.arange(len(y)), y % 3] += (60 * (y // 3 + 1)).to(torch.uint8)[:, None, None]
    return Split(x, y)


def test_embeddings_and_dataset_csg():
    split = image_split()
    before = torch.get_rng_state()
    a, b = embed(split.images, "pca4", seed=0), embed(split.images, "pca4", seed=0)
    assert torch.equal(a, b) and a.shape == (180, 4)
    assert torch.equal(torch.get_rng_state(), before)  # the seeded PCA leaves the global generator alone
    assert embed(split.images, "raw").shape == (180, 192) and embed(split.images, "raw").max() <= 1
    # PCA keeps the class structure: on these images it is as separable as the raw pixels
    raw = dataset_csg(split, "raw", m_per_class=30, dataset="toy")
    pca = dataset_csg(split, "pca4", m_per_class=30, dataset="toy")
    assert pca.embedding == "pca4" and pca.dim == 4 and pca.extra == {"dataset": "toy", "n": 180}
    assert raw.value < 0.2 and pca.value < 0.2
    mixed = Split(split.images, split.labels[torch.randperm(180, generator=torch.Generator().manual_seed(0))])
    assert dataset_csg(mixed, "pca4", m_per_class=30).value > 1.5  # shuffled labels: near K - 1 = 2
    sub = dataset_csg(split, "pca4", n=90, m_per_class=30)
    assert sub.n_points == 90 and sub.per_class == [30, 30, 30]
    # a pool smaller than M per class: the result says how many points each class gave
    assert dataset_csg(split, "pca4", n=30, m_per_class=30).per_class == [10, 10, 10]
    json.dumps(pca.to_dict())  # serialisable as it is stored


def test_cli_merges_into_a_json_file(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "toyset", n_train=30, n_test=3)
    out = tmp_path / "csg.json"
    out.write_text(json.dumps({"other": 1.5}))
    args = ["--data-root", str(root), "--cache", str(tmp_path / "cache"), "--json", str(out), "--embedding", "pca8",
            "--m-per-class", "20"]
    assert main(args) == 0
    line = capsys.readouterr().out
    assert "toyset" in line and "CSG" in line and "pca8" in line and "M=20," in line
    table = json.loads(out.read_text())
    assert table["other"] == 1.5
    entry = table["toyset"]
    assert entry["embedding"] == "pca8" and entry["split"] == "train" and entry["n_points"] == 90
    assert entry["m_per_class"] == 20 and entry["per_class"] == [20, 20, 20]
    # random pixels: the three classes are one distribution, so CSG is near its maximum 2
    assert 1.0 < entry["value"] <= 2 + 1e-9 and len(entry["eigenvalues"]) == 3
    # more points asked of each class than its 30 images: said in the line and the entry, not M=50
    assert main([*args[:-1], "50"]) == 0
    assert "M=50 asked, 30 per class used," in capsys.readouterr().out
    assert json.loads(out.read_text())["toyset"]["per_class"] == [30, 30, 30]
    assert main(["--data-root", str(tmp_path / "nope"), "--cache", str(tmp_path / "cache")]) == 2
    assert capsys.readouterr().err.startswith("error: data root")


@pytest.mark.parametrize("args, phrase", [
    (["--json", "{folder}"], "is a folder: give a file path"),
    (["--json", "{listing}"], "holds a JSON list, not the {dataset: result} table"),
    (["--json", "{garbled}"], "is not a JSON file"),
    (["--k", "0"], "--k must be >= 1, got 0"),
    (["--m-per-class", "-3"], "--m-per-class must be >= 1, got -3"),
    (["--n", "0"], "--n must be >= 2, got 0"),
    (["--embedding", "pcaX"], "unknown embedding 'pcaX'"),
])
def test_cli_bad_input_is_named_before_the_data_is_decoded(args, phrase, tmp_path, capsys):
    """A --json that could not take the table failed after the pass over the data (minutes on
    CIFAR-10), with a traceback for a JSON list; --n 0 silently meant every image."""
    root = make_imagefolder(tmp_path / "toyset", n_train=30, n_test=3)
    (tmp_path / "folder").mkdir()
    (tmp_path / "listing").write_text("[1, 2]")
    (tmp_path / "garbled").write_text("{not json")
    paths = {name: str(tmp_path / name) for name in ("folder", "listing", "garbled")}
    args = [a.format(**paths) for a in args]
    assert main(["--data-root", str(root), "--cache", str(tmp_path / "cache"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and phrase in err[0], err
    assert not (tmp_path / "cache").exists()  # refused before the images were decoded
    assert (tmp_path / "listing").read_text() == "[1, 2]"


def test_cli_merges_under_a_lock_so_two_runs_keep_both_entries(tmp_path):
    """Two runs (two datasets) merging into one --json: each read the table, added its entry and
    wrote it back, so the later write could drop the other's. Here one run's merge is held up by
    the lock (as a second run's would be) and lands after it, beside the other entry."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    from filelock import FileLock
    root = make_imagefolder(tmp_path / "toyset", n_train=30, n_test=3)
    out = tmp_path / "csg.json"
    out.write_text(json.dumps({"other": {"value": 1.5}}))
    cmd = [sys.executable, "-u", "-m", "bench.csg", "--data-root", str(root), "--cache", str(tmp_path / "cache"),
           "--json", str(out), "--embedding", "pca8", "--m-per-class", "20"]
    with FileLock(str(out) + ".lock"):
        proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline()  # its result, printed before it merges
        assert "toyset" in line and "CSG" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        time.sleep(1)
        assert proc.poll() is None and json.loads(out.read_text()) == {"other": {"value": 1.5}}  # waiting
        out.write_text(json.dumps({"other": {"value": 1.5}, "another": {"value": 2.5}}))  # the other run's merge
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert set(json.loads(out.read_text())) == {"other", "another", "toyset"}
