import pickle

import pytest
import torch

from bench.checkpoints import CheckpointStore, checkpoint_key
from bench.errors import BenchError
from bench.profiles import Recipe
from bench.train import train
from models import parse_name

RECIPE = Recipe(epochs=1, batch_size=64, lr=0.05, train_subset=256)


def test_seeded_training_reproduces_weights(mini_data):
    spec = parse_name("fastnetw8_T5_s1")
    a = train(spec, RECIPE, mini_data, torch.device("cpu")).model.state_dict()
    b = train(spec, RECIPE, mini_data, torch.device("cpu")).model.state_dict()
    c = train(parse_name("fastnetw8_T5_s2"), RECIPE, mini_data, torch.device("cpu")).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_key_depends_on_spec_recipe_and_data():
    s = parse_name("fastnet_T5")
    k = checkpoint_key(s, RECIPE, "fp", 10)
    assert k == checkpoint_key(parse_name("fastnet_T5.0"), RECIPE, "fp", 10)
    assert k != checkpoint_key(parse_name("fastnet_T5_lrT"), RECIPE, "fp", 10)
    assert k != checkpoint_key(s, Recipe(epochs=2, batch_size=64, lr=0.05, train_subset=256), "fp", 10)
    assert k != checkpoint_key(s, RECIPE, "other data", 10)


@pytest.fixture
def saved(tmp_path, mini_data):
    spec = parse_name("fastnetw8_T2")
    model = train(spec, RECIPE, mini_data, torch.device("cpu")).model
    store = CheckpointStore(tmp_path)
    key = checkpoint_key(spec, RECIPE, mini_data.fingerprint, 10)
    meta = store.save(spec, key, model, {"note": "test"})
    return store, spec, key, model, meta


def test_round_trip(saved):
    store, spec, key, model, meta = saved
    loaded, meta2 = store.load(spec, key, 10, torch.device("cpu"))
    assert meta2 == dict(meta, checkpoint="last") and meta["spec"]["name"] == spec.name
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert store.load(parse_name("fastnetw8_T3"), key, 10, torch.device("cpu")) is None  # nothing there
    # what a report links a row's weights_sha256 to
    assert store.files_by_sha256() == {meta["weights_sha256"]: meta["weights"]}


def test_the_same_weights_give_the_same_file(saved, tmp_path):
    """A checkpoint's bytes (and so the weights_sha256 every record carries) depend on the weights
    alone: safetensors writes several metadata entries in a random order, which gave the same
    weights another sha256 in another process (caught by the fault tests' table comparison)."""
    store, spec, key, model, meta = saved
    shas = {CheckpointStore(tmp_path / str(i)).save(spec, key, model, {"note": "test"})["weights_sha256"]
            for i in range(6)}
    assert shas == {meta["weights_sha256"]}


def test_truncated_weights_are_refused(saved):
    store, spec, key, _, _ = saved
    weights, _ = store.paths(spec, key)
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(BenchError, match="corrupt or truncated"):
        store.load(spec, key, 10, torch.device("cpu"))


def test_checkpoint_of_another_spec_is_refused(saved):
    store, spec, key, _, _ = saved
    other = parse_name("fastnetw8_T7")
    for src, dst in zip(store.paths(spec, key), store.paths(other, key)):
        dst.write_bytes(src.read_bytes())
    with pytest.raises(BenchError, match="belongs to 'fastnetw8_T2'"):
        store.load(other, key, 10, torch.device("cpu"))


def test_a_sidecar_that_is_not_an_object_is_refused(saved):
    """Valid JSON of the wrong shape (a list; a spec that is not an object; a field its readers
    use of another type) is a bad file like invalid JSON, not an AttributeError or a TypeError in
    the middle of a grid (a pace estimate's float(wall_s), a training summary's test_acc); a
    report or an estimate reading every sidecar skips it."""
    import json
    store, spec, key, _, meta = saved
    sidecar = store.paths(spec, key)[1]
    for content, phrase in (([], "is a JSON list, not an object"),
                            (dict(meta, spec=["x"]), r"its spec is a JSON list, not an object\)"),
                            (dict(meta, wall_s="abc"), r"its wall_s is 'abc', not a number\)"),
                            (dict(meta, test_acc=None), r"its test_acc is None, not a number\)"),
                            (dict(meta, data_fingerprint=[1]), r"its data_fingerprint is \[1\], not a string\)"),
                            (dict(meta, recipe="x"), r"its recipe is 'x', not an object\)"),
                            (dict(meta, best_epoch="3"), r"its best_epoch is '3', not a whole number or null\)"),
                            (dict(meta, weights="../x.safetensors"),
                             r"its weights is '../x.safetensors', not a file name\)")):
        sidecar.write_text(json.dumps(content))
        with pytest.raises(BenchError, match=f"{phrase}: delete .* to retrain"):
            store.load(spec, key, 10, torch.device("cpu"))
        assert store.files_by_sha256() == {} and list(store.sidecars()) == []


class Payload:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickle_payload_is_never_unpickled(saved, tmp_path, monkeypatch):
    store, spec, key, _, meta = saved
    monkeypatch.chdir(tmp_path)
    weights, sidecar = store.paths(spec, key)
    weights.write_bytes(pickle.dumps({"fc.weight": Payload()}))
    with pytest.raises(BenchError):
        store.load(spec, key, 10, torch.device("cpu"))
    # even with a sidecar that vouches for it, safetensors cannot run it
    import hashlib
    import json
    meta["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(BenchError, match="not a safetensors file"):
        store.load(spec, key, 10, torch.device("cpu"))
    assert not (tmp_path / "PWNED").exists()


def test_weights_without_sidecar_count_as_absent(saved):
    store, spec, key, _, _ = saved
    store.paths(spec, key)[1].unlink()  # as if killed between the two writes
    assert store.load(spec, key, 10, torch.device("cpu")) is None
