"""Checkpoint file names: every model name gets its own files, fractional temperatures included
(issue 14 §1: Path.with_suffix once cut ``fastnet_T0.5-<key>`` down to ``fastnet_T0``)."""
import json
from dataclasses import replace
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bench.checkpoints import CheckpointStore, checkpoint_key
from bench.errors import BenchError
from bench.profiles import Recipe
from bench.train import train
from models import build_model, parse_name

REPO = Path(__file__).resolve().parents[1]
RECIPE = Recipe(epochs=1, batch_size=64, lr=0.05, train_subset=128)
TEMPERATURES = ("0.1", "0.15", "0.5", "2.5", "2")
X = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def outputs(model):
    """Logits on a fixed batch, in the memory format the store loads models in (a conv's result
    differs in its last bits between formats)."""
    with torch.no_grad():
        return model.to(memory_format=torch.channels_last).eval()(X)


def test_every_name_has_its_own_files(tmp_path):
    store = CheckpointStore(tmp_path)
    names = [f"fastnet_T{t}" for t in TEMPERATURES] + ["fastnet_T0.5_at@best", "fastnet_T0.5_at@last",
                                                       "fastnet_T0.15_at@best", "resnet18_bn_T11.7_s2"]
    files = []
    for n in names:
        spec = parse_name(n)
        files += [*store.paths(spec, "k"), Path(store.lock(spec, "k").lock_file)]
    # fastnet_T0.5_at's @best and @last share their run's sidecar and lock; nothing else is shared
    assert len(set(files)) == len(files) - 2


def test_names_without_a_dot_keep_their_files(tmp_path):
    """Stores written before the fix hold these exact names; they load without retraining."""
    store = CheckpointStore(tmp_path)
    assert store.paths(parse_name("fastnet_T1"), "abcd") == (tmp_path / "fastnet_T1-abcd.safetensors",
                                                            tmp_path / "fastnet_T1-abcd.json")
    assert store.paths(parse_name("fastnet_T5_at@best"), "abcd")[0] == tmp_path / "fastnet_T5_at-abcd.best.safetensors"
    assert store.paths(parse_name("resnet18_Tauto"), "abcd")[1] == tmp_path / "resnet18_Tauto-abcd.json"


def test_one_run_of_five_temperatures_keeps_five_checkpoints(tmp_path, mini_data):
    store = CheckpointStore(tmp_path)
    trained = {}
    for t in TEMPERATURES:
        spec = parse_name(f"fastnetw8_T{t}")
        key = checkpoint_key(spec, RECIPE, mini_data.fingerprint, 10)
        model = train(spec, RECIPE, mini_data, torch.device("cpu")).model
        store.save(spec, key, model, {"note": "test"})
        trained[spec] = key, outputs(model)
    assert len(list(tmp_path.glob("*.safetensors"))) == 5 and len(list(tmp_path.glob("*.json"))) == 5
    for spec, (key, expected) in trained.items():
        assert store.verify(spec, key)["spec"]["name"] == spec.name
        model, meta = store.load(spec, key, 10, torch.device("cpu"))
        assert meta["weights"] == store.paths(spec, key)[0].name
        assert torch.equal(outputs(model), expected)


SAVER = r"""
import sys
import torch
from bench.checkpoints import CheckpointStore
from models import build_model, parse_name
root, name, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = parse_name(name)
store = CheckpointStore(root)
torch.manual_seed(seed)
model = build_model(spec, 10)
for _ in range(5):  # keep writing, so that the two processes overlap
    with store.lock(spec, "k"):
        store.save(spec, "k", model, {"seed": seed})
"""


def test_two_processes_saving_two_fractional_temperatures_keep_both(tmp_path):
    names = {"fastnetw8_T0.1": 1, "fastnetw8_T0.15": 2}
    procs = [subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path), n, str(s)], cwd=REPO)
             for n, s in names.items()]
    assert [p.wait(120) for p in procs] == [0, 0]
    store = CheckpointStore(tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    for name, seed in names.items():
        spec = parse_name(name)
        torch.manual_seed(seed)
        expected = outputs(build_model(spec, 10))
        model, meta = store.load(spec, "k", 10, torch.device("cpu"))
        assert meta["seed"] == seed and torch.equal(outputs(model), expected)


def _old_store(root: Path, spec, key, model, best=None) -> tuple:
    """What the code before the fix left for a fractional-T run: the weights and sidecar under
    ``Path.with_suffix`` names (``fastnetw8_T0.5-<key>`` -> ``fastnetw8_T0.safetensors``)."""
    stem = root / f"{spec.run.name}-{key}"
    weights, sidecar = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    new = CheckpointStore(root / "new")
    meta = new.save(spec, key, model, {"note": "old"}, best_state=None if best is None else best.state_dict())
    new.paths(spec, key)[0].rename(weights)
    meta["weights"] = weights.name
    if best is not None:
        new.paths(replace(spec, checkpoint="best"), key)[0].rename(stem.with_suffix(".best.safetensors"))
        meta["best_weights"] = stem.with_suffix(".best.safetensors").name
    sidecar.write_text(json.dumps(meta))
    return weights, sidecar


def test_a_store_of_the_old_names_is_read(tmp_path):
    spec, other = parse_name("fastnetw8_T0.5"), parse_name("fastnetw8_T0.1")
    torch.manual_seed(0)
    model = build_model(spec, 10)
    weights, sidecar = _old_store(tmp_path, spec, "k", model)
    assert (weights.name, sidecar.name) == ("fastnetw8_T0.safetensors", "fastnetw8_T0.json")
    store = CheckpointStore(tmp_path)
    loaded, meta = store.load(spec, "k", 10, torch.device("cpu"))
    assert torch.equal(outputs(loaded), outputs(model))
    # the old files hold T0.5 (same stem, another key or name is not it): those train afresh, beside it
    assert store.load(other, "k", 10, torch.device("cpu")) is None
    assert store.load(spec, "k2", 10, torch.device("cpu")) is None
    torch.manual_seed(1)
    store.save(other, "k", build_model(other, 10), {})
    assert store.load(other, "k", 10, torch.device("cpu")) is not None
    assert torch.equal(outputs(store.load(spec, "k", 10, torch.device("cpu"))[0]), outputs(model))


def test_an_old_store_of_an_adversarial_run_is_read(tmp_path):
    spec = parse_name("fastnetw8_T0.5_at")
    torch.manual_seed(0)
    last, best = build_model(spec, 10), build_model(spec, 10)
    _old_store(tmp_path, spec, "k", last, best)
    assert (tmp_path / "fastnetw8_T0.best.safetensors").exists()
    store = CheckpointStore(tmp_path)
    for name, model in (("fastnetw8_T0.5_at@last", last), ("fastnetw8_T0.5_at@best", best)):
        loaded, meta = store.load(parse_name(name), "k", 10, torch.device("cpu"))
        assert torch.equal(outputs(loaded), outputs(model)) and meta["checkpoint"] == name.split("@")[1]


def test_an_old_store_overwritten_by_another_temperature_is_refused_with_its_file_names(tmp_path):
    """Two old runs wrote the same files: the sidecar of one over the weights of the other."""
    spec = parse_name("fastnetw8_T0.5")
    torch.manual_seed(0)
    weights, sidecar = _old_store(tmp_path, spec, "k", build_model(spec, 10))
    torch.manual_seed(1)
    save_file({k: v.contiguous() for k, v in build_model(parse_name("fastnetw8_T0.1"), 10).state_dict().items()},
              str(weights))
    store = CheckpointStore(tmp_path)
    with pytest.raises(BenchError, match="sha256 mismatch") as e:
        store.load(spec, "k", 10, torch.device("cpu"))
    msg = str(e.value)
    assert "\n" not in msg and f"delete {weights.name} and {sidecar.name} in {tmp_path}" in msg
    assert weights.exists() and sidecar.exists()


def test_the_retrain_hint_names_files_that_exist(tmp_path):
    store = CheckpointStore(tmp_path)
    spec = parse_name("fastnetw8_T0.5")
    store.save(spec, "k", build_model(spec, 10), {})
    weights, sidecar = store.paths(spec, "k")
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(BenchError, match="corrupt or truncated") as e:
        store.load(spec, "k", 10, torch.device("cpu"))
    named = str(e.value).split(": delete ")[1].split(" in ")[0].split(" and ")
    assert named == [weights.name, sidecar.name] and all((tmp_path / n).exists() for n in named)
