"""RobustBench zoo models through models/zoo.py, offline: checkpoints are made here from the zoo
architecture's own state_dict and placed where robustbench's load_model looks for them
(<model_dir>/cifar10/Linf/<Name>.pt), so nothing is downloaded."""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch

from bench.errors import BenchError
from models.zoo import checkpoint_paths, is_zoo_name, load_zoo_model, zoo_models, zoo_name

# not importorskip: `import robustbench` itself fails on setuptools >= 81 (the reason models/zoo.py exists)
if importlib.util.find_spec("robustbench") is None:
    pytest.skip("robustbench is not installed: pip install -e '.[robustbench]'", allow_module_level=True)


def _zoo_architecture(name: str):
    from models.zoo import _robustbench_utils
    utils = _robustbench_utils()
    return utils.all_models[utils.BenchmarkDataset("cifar10")][utils.ThreatModel("Linf")][name]["model"]()


def _place_checkpoint(name: str, model_dir):
    """The zoo architecture of ``name`` with seeded weights, saved as RobustBench's file for it."""
    torch.manual_seed(0)
    net = _zoo_architecture(name).eval()
    (path,) = checkpoint_paths(f"robustbench:{name}", model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return net


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    """robustbench:Standard (WideResNet-28-10)."""
    model_dir = tmp_path_factory.mktemp("zoo")
    return model_dir, _place_checkpoint("Standard", model_dir)


def test_names():
    assert is_zoo_name("robustbench:Standard") and not is_zoo_name("resnet18_T5")
    assert zoo_name("robustbench:Standard") == "Standard"
    with pytest.raises(BenchError, match="malformed"):
        zoo_name("robustbench:")
    assert "Standard" in zoo_models() and "Wong2020Fast" in zoo_models()


def test_checkpoint_path_is_robustbenchs(tmp_path):
    assert checkpoint_paths("robustbench:Standard", tmp_path) == [tmp_path / "cifar10" / "Linf" / "Standard.pt"]


def test_load_from_the_checkpoint_robustbench_finds(standard):
    model_dir, net = standard
    model, info = load_zoo_model("robustbench:Standard", model_dir, torch.device("cpu"), download=False)
    assert not model.training
    x = torch.rand(4, 3, 32, 32)  # RobustBench's convention: inputs in [0, 1], normalisation inside
    with torch.no_grad():
        assert torch.equal(model(x), net(x))
    assert info["model"] == "robustbench:Standard" and info["architecture"] == "WideResNet"
    assert info["T"] == 1.0 and info["num_classes"] == 10 and info["feature_dim"] == 640
    assert len(info["weights_sha256"]) == 64 and info["run_key"] == "rb" + info["weights_sha256"][:14]
    assert info["source"].startswith("robustbench 1.")
    # robustbench's package module is not left half-imported: a later `import robustbench` runs as before
    assert "robustbench" not in sys.modules


def test_missing_checkpoint_says_where_to_put_it(tmp_path, monkeypatch):
    where = str(tmp_path / "cifar10" / "Linf" / "Standard.pt")
    with pytest.raises(BenchError, match="put RobustBench's file at " + where) as e:
        load_zoo_model("robustbench:Standard", tmp_path, "cpu", download=False)
    assert "\n" not in str(e.value)
    # with download allowed but no network (Google Drive unreachable), the same advice, no partial file left
    from models.zoo import _robustbench_utils
    utils = _robustbench_utils()

    def offline(gdrive_id, fname):
        open(fname, "wb").write(b"partial")
        raise ConnectionError("drive.google.com unreachable")
    monkeypatch.setattr(utils, "download_gdrive_new", offline)
    with pytest.raises(BenchError, match="could not download .* offline, put RobustBench's file at " + where):
        load_zoo_model("robustbench:Standard", tmp_path, "cpu", download=True)
    assert not os.path.exists(where)


def test_unknown_model_and_threat():
    with pytest.raises(BenchError, match="unknown RobustBench model 'Standrd'.*nearest: Standard"):
        load_zoo_model("robustbench:Standrd", "/nonexistent", "cpu")
    with pytest.raises(BenchError, match="no cifar10/Lfoo zoo"):
        load_zoo_model("robustbench:Standard", "/nonexistent", "cpu", threat_model="Lfoo")


@pytest.mark.parametrize("dry_run", [True, False])
def test_an_unknown_zoo_name_stops_before_anything_is_written(dry_run, tmp_path, mini_root, capsys):
    """robustbench:<Name> is checked against the zoo's list (shipped with robustbench: no network)
    when the plan is made: it used to pass --dry-run, and a run stopped only at its job, after
    the results folder, the logs and the data cache were written."""
    from bench.run import main
    args = ["--profile", "smoke", "--model", "robustbench:Bogus", "--data-root", str(mini_root),
            "--cache", str(tmp_path / "cache"), "--results", str(tmp_path / "out"), "--no-progress"]
    assert main(args + ["--dry-run"] * dry_run) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown RobustBench model 'Bogus' for cifar10/Linf"), err
    assert "from models.zoo import zoo_models" in err[0] and not list(tmp_path.iterdir())


def test_a_zoo_checkpoint_that_breaks_the_contract_stops_before_anything_is_written(tmp_path, mini_root, capsys):
    """A zoo model is loaded and put through the outside-model contract when the run is planned:
    weights that give NaN logits (a corrupt or diverged file) stop it in one line, exit 2, before
    the results folder and its job logs exist (it used to fail in its first job, after both)."""
    from bench.run import main
    args = ["--profile", "smoke", "--model", "robustbench:Addepalli2021Towards_RN18", "--attack", "fgsm",
            "--data-root", str(mini_root), "--cache", str(tmp_path / "cache"), "--results", str(tmp_path / "out"),
            "--no-progress"]
    (path,) = checkpoint_paths("robustbench:Addepalli2021Towards_RN18", tmp_path / "cache" / "robustbench")
    assert main([*args, "--dry-run"]) == 0  # which downloads nothing, but says the run will
    assert f"robustbench:Addepalli2021Towards_RN18: no checkpoint at {path}: the run downloads it first" in \
        capsys.readouterr().err
    net = _place_checkpoint("Addepalli2021Towards_RN18", tmp_path / "cache" / "robustbench")
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                for k, v in net.state_dict().items()}, path)
    assert main(args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: robustbench:Addepalli2021Towards_RN18: the model returns NaN or infinite"), last
    assert not (tmp_path / "out").exists()


def test_pickle_payload_is_refused(tmp_path, monkeypatch):
    """robustbench calls torch.load without weights_only; a checkpoint that would run code on
    unpickling is refused, even where torch's default has been switched back to full unpickling."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    (path,) = checkpoint_paths("robustbench:Standard", tmp_path)
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(BenchError, match="refusing to load it"):
        load_zoo_model("robustbench:Standard", tmp_path, "cpu", download=False)
    assert not marker.exists()


def test_truncated_checkpoint(tmp_path, standard):
    model_dir, _ = standard
    (src,) = checkpoint_paths("robustbench:Standard", model_dir)
    (dst,) = checkpoint_paths("robustbench:Standard", tmp_path)
    dst.parent.mkdir(parents=True)
    dst.write_bytes(src.read_bytes()[:1_000_000])
    with pytest.raises(BenchError, match="cannot load robustbench:Standard from"):
        load_zoo_model("robustbench:Standard", tmp_path, "cpu", download=False)


def test_robustbench_not_installed(monkeypatch):
    for mod in [m for m in sys.modules if m == "robustbench" or m.startswith("robustbench.")]:
        monkeypatch.delitem(sys.modules, mod)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "robustbench" else real(name, *a))
    with pytest.raises(BenchError, match=r"robustbench is not installed: pip install -e '\.\[robustbench\]'"):
        load_zoo_model("robustbench:Standard", "/nonexistent", "cpu")


def test_evaluated_by_the_harness(tmp_path, mini_data):
    """A zoo model is evaluated like our own: bench.measure.adversarial.evaluate with the registry's attacks,
    on real CIFAR-10 test images. (A ResNet-18 of the zoo: WideResNet-28-10 is 10x slower on CPU.)"""
    from attacks import make_attack
    from bench.data import stratified_indices, to_float
    from bench.measure.adversarial import evaluate
    from bench.store import unpack_bits
    _place_checkpoint("Addepalli2021Towards_RN18", tmp_path)
    model, info = load_zoo_model("robustbench:Addepalli2021Towards_RN18", tmp_path, "cpu", download=False)
    split = mini_data.test.subset(stratified_indices(mini_data.test.labels, 50, 0))
    attacks = [make_attack("fgsm"), make_attack("pgd", {"steps": 2})]
    ms = evaluate(model, info["T"], split, attacks, views=["raw", "scaled"], batch_size=50,
                  n_classes=info["num_classes"])
    with torch.no_grad():
        correct = model(to_float(split.images)).argmax(1) == split.labels
    clean = ms[0]
    assert clean.threat == "clean" and clean.metrics["accuracy"] == int(correct.sum()) / 50
    assert [(m.threat, m.view) for m in ms[1:]] == [("fgsm", "raw"), ("fgsm", "scaled"), ("pgd", "raw"),
                                                    ("pgd", "scaled")]
    for m in ms[1:]:
        assert m.metrics["max_linf"] <= 8 / 255 + 1e-6 and m.n == 50
        robust = unpack_bits(m.bits, 50)
        assert not (robust & ~correct.numpy()).any()  # robust only where correct clean
        assert m.metrics["robust_acc"] == robust.mean()
    # T = 1: the scaled view is the raw one
    assert ms[3].metrics["robust_acc"] == ms[4].metrics["robust_acc"]


ZOO_PROFILE = """
[recipe]
epochs = 1
[eval]
n = 30
batch_size = 30
attacks = ["fgsm", "pgd_margin"]
views = ["raw", "scaled"]
transfer = true
[attack.pgd_margin]
steps = 2
"""


def test_zoo_model_through_the_cli(tmp_path, mini_root, capsys):
    """`--model robustbench:<Name>` runs the profile's suite like any model of ours: loaded from
    where robustbench looks (<cache>/robustbench), never trained, no transfer surrogate, one
    leaderboard row, in the HTML page too."""
    import pandas as pd

    from bench.run import main
    _place_checkpoint("Addepalli2021Towards_RN18", tmp_path / "cache" / "robustbench")
    (tmp_path / "zoo.toml").write_text(ZOO_PROFILE)
    args = ["--profile", str(tmp_path / "zoo.toml"), "--data-root", str(mini_root), "--cache", str(tmp_path / "cache"),
            "--results", str(tmp_path / "out"), "--model", "robustbench:Addepalli2021Towards_RN18"]
    # the dry run lists it and writes nothing; after the real run it is priced from its own records
    assert main([*args, "--dry-run"]) == 0 and not (tmp_path / "out").exists()
    assert main(args) == 0
    assert "transfer: not measured on robustbench:Addepalli2021Towards_RN18 (from outside the grid" in \
        capsys.readouterr().err
    board = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    (row,) = board.itertuples()
    assert row.model == "robustbench:Addepalli2021Towards_RN18" and row.regime == "zoo" and row.T == 1.0
    assert row.source == "zoo"
    # its records' run key holds the data's fingerprint: another tree of the same folder name is another run
    from bench.data import load_dataset
    fingerprint = load_dataset(str(mini_root), tmp_path / "cache").fingerprint
    run_keys = set(pd.read_csv(tmp_path / "out" / "results.csv").run_key)
    assert run_keys == {f"rb{row.weights_sha256[:14]}:{fingerprint[:8]}"}
    assert {"fgsm_raw@8/255", "fgsm_scaled@8/255", "pgd_margin@8/255", "ece_raw"} <= set(board.columns)
    assert "transfer@8/255" not in board.columns and not list((tmp_path / "cache").glob("checkpoints/*"))
    assert row.masking in ("none", "suspected", "likely")
    assert "robustbench:Addepalli2021Towards_RN18" in (tmp_path / "out" / "index.html").read_text()
    assert main([*args[:-1], "robustbench:NoSuchModel2099"]) == 2
    capsys.readouterr()
    # found again from its checkpoint file's hash: every job of the run done (it listed and priced
    # them all again, which the run then skipped)
    assert main([*args, "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "nothing to run" in err and "0 to run" in err, err
    assert main([*args, "--dry-run", "--force"]) == 0
    last = capsys.readouterr().err.rstrip().splitlines()[-1]
    assert last.startswith("estimate: ") and "not counted" not in last, last
