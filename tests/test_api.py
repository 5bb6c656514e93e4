"""bench.api.audit on a network of the caller's own: the suite runs on it as on a grid model, the
model comes back untouched, an unknown temperature is estimated, bad models are refused."""
import copy
from dataclasses import replace
from pathlib import Path
import re
import tempfile
import json

import pytest
import torch

from bench.api import audit
from bench.measure.calibration import estimate_temperature
from bench.data import stratified_indices, to_float
from bench.errors import BenchError
from bench.profiles import load_profile
from models.external import weights_sha256


class Scaled(torch.nn.Module):
    """The same network with its logits multiplied by ``k`` (what training at T = k does, to first
    order), or passed through ``out`` (softmax, log_softmax)."""

    def __init__(self, model, k=1.0, out=None):
        super().__init__()
        self.model, self.k, self.out = model, k, out

    def forward(self, x):
        z = self.k * self.model(x)
        return z if self.out is None else self.out(z, dim=1)


def test_audit_a_model_of_your_own(tiny_model, mini_data, mini_root, mini_cache, tmp_path):
    _, trained = tiny_model
    model = copy.deepcopy(trained).train()  # handed over in training mode but for one layer: it comes back so
    model.fc.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lines = []
    kw = dict(name="my_net", temperature=1.0, data_root=str(mini_root), cache=str(mini_cache), n=100,
              profile="smoke", attacks=["fgsm", "pgd", "fp64"], results=str(tmp_path / "r"), log=lines.append,
              pages=False)
    result = audit(model, **kw)
    assert model.training and not model.fc.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    split = mini_data.test.subset(stratified_indices(mini_data.test.labels, 100, 0))
    with torch.no_grad():
        clean = float((trained.eval()(to_float(split.images)).argmax(1) == split.labels).double().mean())
    row = result.row
    assert row.clean == pytest.approx(clean) and row.n == 100 and row.regime == "external"
    assert (row.source, row.T_source) == ("python", "given")
    assert row.robust_min <= row["fgsm_raw@8/255"] and row.masking in ("none", "suspected", "likely")
    assert set(result.table.threat) == {"clean", "fgsm", "pgd", "pgd_fp64", "calibration"}
    assert not (tmp_path / "r" / "index.html").exists()  # pages=False: the tables alone ...
    assert result.report().name == "index.html" and result.report().exists()  # ... the page when asked for
    assert result.model_card()["clean_acc"]
    # the same weights again: every job already in the store
    lines.clear()
    audit(model, **kw)
    assert any("0 to run" in m for m in lines), lines
    # other weights under the same name are another model: measured, not read from the store
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    lines.clear()
    other = audit(model, **kw)
    assert not any("0 to run" in m for m in lines)
    assert other.row.weights_sha256 == weights_sha256(model) != result.row.weights_sha256
    # the first weights again: read from the store, and their own row, though the leaderboard shows
    # the newer model of that name
    model.load_state_dict(before)
    again = audit(model, **kw)
    assert again.row.weights_sha256 == result.row.weights_sha256 and again.row.clean == pytest.approx(clean)


def test_an_unknown_temperature_is_estimated(tiny_model, mini_data, mini_root, mini_cache, tmp_path):
    _, trained = tiny_model
    modes = [m.training for m in trained.modules()]
    ev = load_profile("smoke").eval
    base = estimate_temperature(copy.deepcopy(trained), mini_data, ev)
    hot = estimate_temperature(Scaled(copy.deepcopy(trained), 5.0), mini_data, ev)
    assert hot / base == pytest.approx(5.0, rel=0.01) and 0.3 < base < 3
    # evaluated on the whole test split, no image is left to fit it on apart from those it is scored
    # on (it was fitted on 2,000 of them): said, not done
    with pytest.raises(BenchError, match="no test image is left outside the evaluation subset"):
        estimate_temperature(trained, mini_data, replace(ev, n=None))
    result = audit(Scaled(trained, 5.0), name="hot", data_root=str(mini_root), cache=str(mini_cache), n=100,
                   profile="smoke", attacks=["fgsm"], results=str(tmp_path / "r"), log=lambda m: None)
    assert result.temperature == pytest.approx(hot) and result.temperature_source == "estimated"
    records = [json.loads(p.read_text()) for p in (tmp_path / "r" / "records").glob("*.json")]
    assert {(r["T_source"], round(r["T"], 6)) for r in records} == {("estimated", round(hot, 6))}
    assert [m.training for m in trained.modules()] == modes  # a wrapper's audit leaves the wrapped model as it was


def test_the_estimate_tracks_the_training_temperature_of_the_grid_models(tiny_model, mini_data):
    """On the harness's own models, T in 1..50 (above 1 with the loss x T, the arm that trains a
    high-T model as far as a T=1 one: the fixed-lr T=50 model is under-trained and fits lower,
    README "Audit your own model"): the estimate is within a factor of 1.5 of the training T."""
    from bench.profiles import Recipe
    from bench.train import train
    from models import parse_name
    ev = load_profile("smoke").eval
    models = {1.0: tiny_model[1]}
    for T in (2, 5, 20, 50):
        spec = parse_name(f"fastnetw8_T{T}_lrT")
        models[float(T)] = train(spec, Recipe(epochs=4, batch_size=64, lr=0.1), mini_data, torch.device("cpu")).model
    ratios = {T: estimate_temperature(m, mini_data, ev) / T for T, m in models.items()}
    assert all(1 / 1.5 < r < 1.5 for r in ratios.values()), ratios


class NoGrad(torch.nn.Module):
    """The network run under torch.no_grad(): logits with no autograd graph at all."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        with torch.no_grad():
            return self.model(x)


class InPlace(torch.nn.Module):
    """The network behind an in-place step on its input: a normalisation (the input is left
    changed), or a clamp to [0, 1] (the values kept, but autograd refuses it on a leaf)."""

    def __init__(self, model, clamp=False):
        super().__init__()
        self.model, self.clamp = model, clamp

    def forward(self, x):
        return self.model(x.clamp_(0, 1) if self.clamp else x.sub_(0.5) + 0.5)


@pytest.mark.parametrize("make, phrase", [
    (lambda m: Scaled(m, out=torch.softmax), "returns probabilities"),
    (lambda m: NoGrad(m), "no gradient with respect to its input"),
    (lambda m: InPlace(m), "changes its input in place"),
    (lambda m: InPlace(m, clamp=True), "fails when its input requires a gradient"),
    (lambda m: Scaled(m, k=float("nan")), "NaN or infinite logits on 8 of 8 test images"),
    (lambda m: Scaled(m, out=torch.log_softmax), "returns log-probabilities"),
    (lambda m: torch.nn.Sequential(m, torch.nn.Linear(10, 5)), "logits of shape (N, 10)"),
    (lambda m: copy.deepcopy(m).to(torch.bfloat16), "its parameters are bfloat16 and the harness feeds float32"),
    (lambda m: "not a model", "must be a torch.nn.Module"),
    (lambda m: copy.deepcopy(m).to("meta"), "the model is on meta"),
])
def test_bad_models_are_refused_before_anything_is_written(tiny_model, mini_root, mini_cache, tmp_path, make, phrase):
    _, trained = tiny_model
    with pytest.raises(BenchError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        audit(make(trained), name="bad", temperature=1.0, data_root=str(mini_root), cache=str(mini_cache), n=100,
              profile="smoke", attacks=["fgsm"], results=str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("kwargs, phrase", [
    ({"n": 1.5}, "n must be a whole number of test images, at least 2; got 1.5"),
    ({"dataset": "mnist"}, "dataset must be one of cifar10, cifar100"),
    ({"mean": [0.5, 0.5], "std": [0.2, 0.2]}, "mean takes 3 numbers (one per channel)"),
    ({"mean": [0.5] * 3, "std": [0, 0.2, 0.2]}, "std values must be > 0"),
    ({"temperature": True}, "temperature must be a positive number, got True"),
    ({"mean": [0.5] * 3, "std": [0.25] * 3}, "the model normalises its input itself (its first layer"),
    ({"profile": "quik"}, "unknown profile 'quik'"),
    # blank paths reached argparse, which printed its usage and raised SystemExit, no Exception
    ({"data_root": ""}, "data_root='' is empty: give a folder"),
    ({"cache": " "}, "cache=' ' is empty: give a folder"),
    ({"results": ""}, "results='' is empty: give a folder"),
    ({"profile": ""}, "profile='' is empty: give a profile"),
    # a TypeError, after the temporary folder was made: it stayed behind
    ({"profile": Path("quik")}, "unknown profile 'quik'"),
    ({"attacks": ["fgsm", None]}, "attacks must be a list of names as --attack takes"),
])
def test_bad_arguments_are_refused_in_the_functions_words(tiny_model, mini_root, mini_cache, kwargs, phrase,
                                                          monkeypatch, tmp_path, capsys):
    """n=1.5 or dataset="mnist" printed argparse's usage and "error: argument --n-test", then
    raised "bad argument among [...]"; a wrong-length mean was blamed on the model. Without
    results=, a refused audit left an empty tempbench-audit-* folder behind, each time."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(BenchError, match=re.escape(phrase)):
        audit(tiny_model[1], **{"name": "m", "temperature": 1.0, "data_root": str(mini_root),
                                "cache": str(mini_cache), "n": 100, "attacks": ["fgsm"], **kwargs})
    assert capsys.readouterr().err == ""
    assert list(tmp_path.iterdir()) == []


def test_attacks_as_one_string_names_the_attacks_not_its_letters(tiny_model, mini_root, mini_cache, tmp_path):
    """attacks="fgsm" was joined letter by letter: "unknown attack 'f'"."""
    result = audit(tiny_model[1], name="m", temperature=1.0, data_root=str(mini_root), cache=str(mini_cache), n=20,
                   profile="smoke", attacks="fgsm", results=str(tmp_path / "r"), pages=False, log=lambda m: None)
    assert set(result.table.threat) >= {"clean", "fgsm"} and "fgsm_raw@8/255" in result.row.index


def test_the_readme_example_runs(tiny_model, mini_root, mini_cache, tmp_path, capsys):
    """README "Audit your own model", as written but for the data (the mini tree), n and the
    budget (the smoke profile's PGD and FGSM instead of the quick suite)."""
    import functools
    import re
    from pathlib import Path

    import bench.api
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Audit your own model"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace("../shared/data/cifar10-jpeg75", str(mini_root)).replace("n=500", "n=100")
    quick = functools.partial(bench.api.audit, profile="smoke", attacks=["fgsm", "pgd"], cache=str(mini_cache),
                              results=str(tmp_path / "r"), log=lambda m: None)
    namespace = {"model": tiny_model[1]}
    exec(code.replace("from bench.api import audit\n", ""), dict(namespace, audit=quick))
    out = capsys.readouterr().out
    assert "robust_min" in out and "masking_reasons" in out and "clean" in out
    # the smoke profile's FGSM and PGD check no black-box attack, and the row says so
    assert "masking_unchecked" in out and "black-box/transfer" in out


def test_the_command_line_audits_a_weights_file(tiny_model, mini_root, mini_cache, tmp_path, capsys):
    """--model file:PATH --arch ARCH: a safetensors or .pt state dict audited like a grid model,
    its T estimated when not given; a training script's checkpoint (the weights under
    "state_dict", a DataParallel model's "module." names) read as its weights; every bad file
    stops with one line, exit 2, nothing written."""
    import pandas as pd
    from safetensors.torch import save_file

    from bench.run import main
    from models import build_model, parse_name
    _, trained = tiny_model
    path = tmp_path / "my_net.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    torch.save(trained.state_dict(), tmp_path / "state.pt")
    torch.save(trained, tmp_path / "pickled.pt")
    wrapped = {f"module.{k}": v for k, v in trained.state_dict().items()}
    torch.save({"state_dict": wrapped, "epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "checkpoint.pt")
    torch.save({"model": wrapped, "state_dict": wrapped}, tmp_path / "two.pt")
    torch.save({"epoch": 3}, tmp_path / "epoch.pt")
    (tmp_path / "noise.pt").write_bytes(b"not a torch file")
    torch.save({k: v * float("nan") if k == "fc.weight" else v for k, v in trained.state_dict().items()},
               tmp_path / "diverged.pt")
    save_file(build_model(parse_name("fastnetw8_T1"), num_classes=5).state_dict(), str(tmp_path / "five.safetensors"))
    common = ["--profile", "smoke", "--attack", "fgsm", "--data-root", str(mini_root), "--cache", str(mini_cache),
              "--n-test", "100", "--no-progress"]
    assert main(["--model", f"file:{path}", "--arch", "fastnetw8", "--results", str(tmp_path / "r"), *common]) == 0
    row = pd.read_csv(tmp_path / "r" / "leaderboard.csv").set_index("model").loc["my_net"]
    assert row.regime == "external" and 0.3 < row["T"] < 3 and row.n == 100  # estimated: a T=1 model's
    assert main(["--model", f"file:{tmp_path / 'state.pt'}", "--arch", "fastnetw8", "--temperature", "1",
                 "--results", str(tmp_path / "r2"), *common]) == 0
    assert pd.read_csv(tmp_path / "r2" / "leaderboard.csv").clean.iloc[0] == row.clean  # the same weights
    assert main(["--model", f"file:{tmp_path / 'checkpoint.pt'}", "--arch", "fastnetw8", "--temperature", "1",
                 "--results", str(tmp_path / "r3"), *common]) == 0
    assert pd.read_csv(tmp_path / "r3" / "leaderboard.csv").clean.iloc[0] == row.clean
    capsys.readouterr()
    for model_args, phrase in [
        ([f"file:{tmp_path / 'missing.safetensors'}", "--arch", "fastnetw8"], "no such file"),
        ([f"file:{tmp_path}", "--arch", "fastnetw8"], "is a folder, not a file"),
        ([f"file:{tmp_path / 'pickled.pt'}", "--arch", "fastnetw8"], "not the pickled model"),
        ([f"file:{tmp_path / 'noise.pt'}", "--arch", "fastnetw8"], "is not a state dict this harness reads"),
        ([f"file:{tmp_path / 'two.pt'}", "--arch", "fastnetw8"], "holds state dicts under 'state_dict', 'model'"),
        ([f"file:{tmp_path / 'epoch.pt'}", "--arch", "fastnetw8"], "holds a dict of 'epoch', not a state dict"),
        ([f"file:{tmp_path / 'diverged.pt'}", "--arch", "fastnetw8"], "diverged: the model returns NaN or infinite"),
        ([f"file:{path}", "--arch", "resnet18"], "does not fit --arch resnet18"),
        ([f"file:{path}", "--arch", "nonet"], "not a registry architecture"),
        ([f"file:{path}"], "give --arch"),
        ([f"file:{tmp_path / 'five.safetensors'}", "--arch", "fastnetw8"], "predicts 5 classes"),
        ([f"file:{path}", "--arch", "fastnetw8", "--mean", "0.5,0.5"], "--mean takes 3 numbers"),
        # a registry network normalises its input itself: twice moved every number (17.7% clean to 14.3%)
        ([f"file:{path}", "--arch", "fastnetw8", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"],
         "--arch fastnetw8 normalises its input itself (its first layer, models.archs.Normalize): drop --mean/--std"),
        (["fastnetw8_T1", "--arch", "fastnetw8"], "--arch is for --model file:PATH, and every model it lists"),
    ]:
        out = tmp_path / "bad"
        code = main(["--model", *model_args, "--results", str(out), *common])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and phrase in errors[0], (model_args, err)
        assert "\x1b" not in err  # torch's weights-only refusal of a pickled model sets words in bold
        assert not out.exists()


def two_weights_files(tiny_model, folder, stem: str) -> None:
    """The tiny model's weights as folder/a/<stem>.safetensors, and other weights (its head's bias
    moved) under the same name in folder/b."""
    from safetensors.torch import save_file
    state = {k: v.contiguous() for k, v in tiny_model[1].state_dict().items()}
    for sub, weights in (("a", state), ("b", dict(state, **{"fc.bias": state["fc.bias"] + 1}))):
        (folder / sub).mkdir()
        save_file(weights, str(folder / sub / f"{stem}.safetensors"))


def test_two_weights_files_of_one_stem_do_not_share_a_row(tiny_model, mini_root, mini_cache, tmp_path, capsys):
    """A file's model is named by its stem: a second net.safetensors (other weights) into a store
    that holds the first's records would take its leaderboard row, the first dropped without a
    word. Refused, one line, exit 2, nothing written; the same file again is a resume."""
    from bench.run import main
    two_weights_files(tiny_model, tmp_path, "net")
    out = tmp_path / "r"
    common = ["--arch", "fastnetw8", "--temperature", "1", "--profile", "smoke", "--attack", "none", "--data-root",
              str(mini_root), "--cache", str(mini_cache), "--n-test", "100", "--no-progress", "--results", str(out)]
    assert main(["--model", f"file:{tmp_path / 'a' / 'net.safetensors'}", *common]) == 0
    before = sorted(p.name for p in out.rglob("*"))
    capsys.readouterr()
    assert main(["--model", f"file:{tmp_path / 'b' / 'net.safetensors'}", *common]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "already holds another network named net" in errors[0], errors
    assert sorted(p.name for p in out.rglob("*")) == before
    assert main(["--model", f"file:{tmp_path / 'a' / 'net.safetensors'}", *common]) == 0


def test_a_file_measured_on_other_images_of_one_folder_name_is_measured_again(tiny_model, mini_root, tmp_path,
                                                                             capsys):
    """A record's dataset is the data folder's name: a file's records from one tree stood for
    another tree of that name (other images: a new JPEG quality, a fixed label), reported as
    "already in the store" with the first tree's numbers. Its run key now holds the data's
    fingerprint, as a grid run's does, and the audit() of a model finds its own run's rows."""
    import shutil

    import pandas as pd

    from bench.api import audit
    from bench.run import main
    two_weights_files(tiny_model, tmp_path, "net")
    trees = [tmp_path / "a" / "cifar10-mini", tmp_path / "b" / "cifar10-mini"]
    for tree in trees:
        shutil.copytree(mini_root, tree)
    cat, dog = (min((trees[1] / "test" / c).iterdir()) for c in ("cat", "dog"))
    cat.write_bytes(dog.read_bytes())  # one test image of the second tree another picture
    out = tmp_path / "r"
    common = ["--model", f"file:{tmp_path / 'a' / 'net.safetensors'}", "--arch", "fastnetw8", "--temperature", "1",
              "--profile", "smoke", "--attack", "none", "--cache", str(tmp_path / "cache"), "--n-test", "500",
              "--no-progress", "--tables-only", "--results", str(out)]
    for tree in trees:
        assert main([*common, "--data-root", str(tree)]) == 0
    assert "already in the store" not in capsys.readouterr().err
    tidy = pd.read_csv(out / "results.csv")
    clean = tidy[(tidy.threat == "clean") & (tidy.metric == "accuracy")]
    assert len(clean) == 2 and clean.run_key.nunique() == 2 and set(clean.dataset) == {"cifar10-mini"}
    # the same tree again is a resume
    assert main([*common, "--data-root", str(trees[0])]) == 0
    assert len(pd.read_csv(out / "results.csv").query("threat == 'clean' and metric == 'accuracy'")) == 2
    # audit() returns its own run's rows, of the tree it measured
    result = audit(tiny_model[1], name="tiny", temperature=1.0, data_root=str(trees[1]), n=100, profile="smoke",
                   attacks="none", results=str(out), cache=str(tmp_path / "cache"), pages=False)
    assert set(result.table.run_key) == {next(k for k in pd.read_csv(out / "results.csv").run_key
                                              if k.startswith("tiny:"))}


def test_a_file_and_a_grid_model_of_one_name_do_not_share_a_row(tiny_model, mini_root, mini_cache, tmp_path,
                                                                 capsys):
    """fastnetw8_T1.safetensors run into a folder that holds the grid's fastnetw8_T1 took that
    model's leaderboard row (and its place in the claims) without a word, and the grid's run after
    the file's took the file's; two files of one stem in one --model list measured the last alone.
    Each is refused, one line, exit 2, nothing written."""
    import os
    import shutil

    from bench.run import main
    two_weights_files(tiny_model, tmp_path, "fastnetw8_T1")
    shutil.copytree(mini_cache / "data", tmp_path / "cache" / "data", copy_function=os.link)  # its own checkpoints
    common = ["--profile", "smoke", "--attack", "none", "--data-root", str(mini_root), "--cache",
              str(tmp_path / "cache"), "--n-test", "100", "--no-progress", "--tables-only"]
    file_a = ["--model", f"file:{tmp_path / 'a' / 'fastnetw8_T1.safetensors'}", "--arch", "fastnetw8",
              "--temperature", "1"]
    grid = ["--model", "fastnetw8_T1"]

    def refused(args, out, phrase):
        before = sorted(p.name for p in out.rglob("*")) if out.exists() else None
        capsys.readouterr()
        assert main([*args, "--results", str(out), *common]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and phrase in errors[0], errors
        assert (sorted(p.name for p in out.rglob("*")) if out.exists() else None) == before

    for first, second, phrase in [(grid, file_a, "holds fastnetw8_T1 from the grid (trained by the harness), and "
                                   "this run's fastnetw8_T1 is from the file"),
                                  (file_a, grid, "holds fastnetw8_T1 from the file")]:
        out = tmp_path / f"r{len(first)}"
        assert main([*first, "--results", str(out), *common]) == 0, capsys.readouterr().err
        refused(second, out, phrase)
        assert main([*first, "--results", str(out), *common]) == 0  # the same model again: a resume
    both = f"file:{tmp_path / 'a' / 'fastnetw8_T1.safetensors'},file:{tmp_path / 'b' / 'fastnetw8_T1.safetensors'}"
    refused(["--model", both, *file_a[2:]], tmp_path / "r3", "--model names two networks fastnetw8_T1")


def test_one_network_audited_at_two_temperatures_is_measured_at_each(tiny_model, mini_root, mini_cache, tmp_path):
    """The records of a caller's network were keyed by its weights alone: audited again at another
    T into the same folder, it found the first audit's records, so its scaled view, calibration and
    row were the first T's (the README's "pass the T it was trained at" would not take)."""
    kw = dict(name="m", data_root=str(mini_root), cache=str(mini_cache), n=40, profile="smoke", attacks=["pgd"],
              results=str(tmp_path / "r"), pages=False, log=lambda m: None)
    hot = audit(tiny_model[1], temperature=10.0, **kw)
    cold = audit(tiny_model[1], temperature=1.0, **kw)
    assert (hot.temperature, cold.temperature) == (10.0, 1.0) and cold.row["T"] == 1.0
    ece = {r.temperature: r.table[(r.table.threat == "calibration") & (r.table.metric == "ece")]
           .set_index("view").value for r in (hot, cold)}
    assert ece[1.0]["scaled"] == ece[1.0]["raw"]  # at T=1 the scaled view is the raw one
    assert ece[10.0]["scaled"] != ece[10.0]["raw"]
    assert set(hot.table.run_key).isdisjoint(cold.table.run_key)


def test_each_audit_of_one_network_gets_its_own_runs_row(tiny_model, mini_root, mini_cache, tmp_path):
    """The row was the leaderboard's first of the name and weights: with the network audited at
    two temperatures (or one estimated) in one folder, an audit got another run's row and T beside
    its own table."""
    kw = dict(name="m", data_root=str(mini_root), cache=str(mini_cache), n=40, profile="smoke", attacks=["fgsm"],
              results=str(tmp_path / "r"), pages=False, log=lambda m: None)
    runs = [audit(tiny_model[1], temperature=t, **kw) for t in (10.0, 1.0, 10.0, None)]
    for result, t in zip(runs, (10.0, 1.0, 10.0, None)):
        source = "estimated" if t is None else "given"
        assert (result.temperature_source, result.row.T_source) == (source, source)
        assert result.row["T"] == result.temperature and (t is None or result.temperature == t)
        # the row is the run whose records are the table: its scaled view's ECE (T's own) is theirs
        tab = result.table
        ece = tab[(tab.threat == "calibration") & (tab.metric == "ece") & (tab.view == "scaled")].value
        assert len(set(tab.run_key)) == 1 and result.row.ece_scaled == pytest.approx(float(ece.iloc[0]))
    assert runs[3].temperature not in (1.0, 10.0)
