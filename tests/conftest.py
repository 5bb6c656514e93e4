"""Shared fixtures. Tests run on CPU, on small real files the tests make."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg75"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs pytest-xdist workers, one more than the cores: one thread each, for this
    # process and the ones its tests start (OMP_NUM_THREADS), or they would oversubscribe the cores
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def real_data_root() -> Path:
    root = Path(os.environ.get("BENCH_DATA") or SHARED)
    if not (root / "train").is_dir():
        pytest.skip(f"needs the CIFAR-10 JPEG copy at {SHARED} or $BENCH_DATA")
    return root


@pytest.fixture(scope="session")
def mini_root(tmp_path_factory) -> Path:
    """A small ImageFolder tree of real CIFAR-10 images: 200 train and 50 test images per class,
    copied from the offline JPEG set (evenly spaced, so every class is there)."""
    src = real_data_root()
    dst = tmp_path_factory.mktemp("data") / "cifar10-mini"
    for split, per_class in (("train", 200), ("test", 50)):
        for cls in CLASSES:
            files = sorted((src / split / cls).iterdir())
            step = len(files) // per_class
            (dst / split / cls).mkdir(parents=True)
            for f in files[::step][:per_class]:
                shutil.copyfile(f, dst / split / cls / f.name)
    return dst


@pytest.fixture(scope="session")
def mini_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def mini_data(mini_root, mini_cache):
    from bench.data import load_dataset
    return load_dataset(str(mini_root), mini_cache)


@pytest.fixture(scope="module")
def test_split(mini_data):
    """200 stratified test images of the mini tree: what the attack tests attack."""
    from bench.data import stratified_indices
    return mini_data.test.subset(stratified_indices(mini_data.test.labels, 200, 0))


# tiny_model's run; bench/tools/selfcheck.py's base model is the same one (test_selfcheck.py)
TINY_MODEL, TINY_RECIPE = "fastnetw8_T1", dict(epochs=6, batch_size=64, lr=0.1)


@pytest.fixture(scope="session")
def tiny_model(mini_data, tmp_path_factory):
    """A tiny fastnet trained here at T=1 on 2,000 real images (16 s on one thread). Under
    `make test` the first worker to need it trains it into a checkpoint store the workers share,
    and the others load it (the same seeded run on the same one thread: the same weights), rather
    than each training it again."""
    from bench.checkpoints import CheckpointStore, checkpoint_key
    from bench.profiles import Recipe
    from bench.train import train
    from models import parse_name
    spec, recipe, cpu = parse_name(TINY_MODEL), Recipe(**TINY_RECIPE), torch.device("cpu")
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return spec, train(spec, recipe, mini_data, cpu).model
    ckpts = CheckpointStore(tmp_path_factory.getbasetemp().parent / "checkpoints")  # one folder per session
    key = checkpoint_key(spec, recipe, mini_data.fingerprint, mini_data.num_classes)
    with ckpts.lock(spec, key):  # as bench/grid/models.py: one trains, the others wait and load
        found = ckpts.load(spec, key, mini_data.num_classes, cpu)
        if found is None:
            model = train(spec, recipe, mini_data, cpu).model
            ckpts.save(spec, key, model, {})
            return spec, model
    return spec, found[0]


@pytest.fixture(scope="module")
def correct_batch(tiny_model, test_split):
    """The test images the tiny model classifies correctly: what the evaluator attacks."""
    from bench.data import to_float
    _, model = tiny_model
    x, y = to_float(test_split.images), test_split.labels
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return x[ok], y[ok]


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on localhost serving tmp_path/www."""
    import functools
    import http.server
    import threading
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# Under pytest-xdist (`make test`) each file runs on one worker, handed out in collection order:
# the longest files first (by their wall time in `make test` on a 2-core box), so that no worker
# starts one of them as the others run out of work.
# (Re-ranked on the 2-core AVX2 EPYC, two runs, 2026-12-04: faults 257-263 s, gpu_paths 176-203,
# audit 111-159, cli 107-120, adversarial_training 98-108, attack_suite 98-105, selfcheck 89-91.
# On an Intel Xeon, 2026-12-06, test_twin_checkpoints.py (25 s) was handed out last and one
# worker ended 26 s after the other two: it and the next-longest unranked files come before
# the short ones now; test_store.py since its two file-system tests, about 25 s.)
LONGEST_FIRST = ("test_faults.py", "test_gpu_paths.py", "test_audit.py", "test_cli.py", "test_adversarial_training.py",
                 "test_attack_suite.py", "test_selfcheck.py", "test_api.py", "test_html_report.py",
                 "test_twin_checkpoints.py", "test_training_resume.py", "test_store.py", "test_fit_temperature.py",
                 "test_claims.py",
                 "test_early_stop.py", "test_committed_results.py", "test_bad_input.py", "test_zoo.py", "test_apgd.py")


def pytest_configure(config):
    # xdist (3.6+) otherwise hands the files out by their number of tests, many first: the
    # parametrised corruption tests went first and test_faults.py, seven tests but three minutes,
    # last, where it made one worker finish 100 s after the other two (376 s in all; 361 s with
    # this order, on a 2-core AMD EPYC with AVX-512)
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
