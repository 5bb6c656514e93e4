"""A training run interrupted after an epoch goes on from its saved state (bench/train.py
TrainState, kept by the checkpoint store) to the weights the uninterrupted run gives, bit for bit;
through the grid, the rerun of an interrupted run says so and its checkpoint is the same."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.checkpoints import CheckpointStore
from bench.profiles import Recipe
from bench.train import train
from models import parse_name

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


class Stop(Exception):
    pass


def interrupted_then_resumed(spec, recipe, data, store, stop_after: int):
    """Train, saving each epoch's state to ``store`` and stopping after epoch ``stop_after``
    (as a kill would); then go on from what the store holds."""
    def snapshot(state):
        store.save_partial(spec, "k", state)
        if state.epoch == stop_after:
            raise Stop

    with pytest.raises(Stop):
        train(spec, recipe, data, CPU, snapshot=snapshot)
    state = store.load_partial(spec, "k")
    assert state is not None and state.epoch == stop_after
    return train(spec, recipe, data, CPU, resume=state)


@pytest.mark.parametrize("name, recipe", [
    ("fastnetw8_T5", dict(epochs=3, batch_size=64, lr=0.1, train_subset=512)),
    # fast AT: its random starts draw from the global generator, and @best and the held-out
    # history carry over the interruption
    ("fastnetw8_T1_fat", dict(epochs=3, batch_size=64, lr=0.1, train_subset=512, at_holdout=64, at_eval_steps=2)),
])
def test_a_resumed_run_gives_the_uninterrupted_runs_weights(name, recipe, mini_data, tmp_path):
    spec, recipe = parse_name(name), Recipe(**recipe)
    whole = train(spec, recipe, mini_data, CPU)
    store = CheckpointStore(tmp_path)
    resumed = interrupted_then_resumed(spec, recipe, mini_data, store, stop_after=1)
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert (resumed.final_train_loss, resumed.final_train_acc) == (whole.final_train_loss, whole.final_train_acc)
    assert resumed.history == whole.history and resumed.best_epoch == whole.best_epoch
    if spec.adversarial:
        assert all(torch.equal(v, resumed.best_state[k]) for k, v in whole.best_state.items())
    store.drop_partial(spec, "k")
    assert not (tmp_path / "in-progress").exists()


def test_a_state_whose_files_do_not_match_is_not_resumed(mini_data, tmp_path):
    spec, recipe = parse_name("fastnetw8_T1"), Recipe(epochs=2, batch_size=64, lr=0.1, train_subset=256)
    store = CheckpointStore(tmp_path)
    train(spec, recipe, mini_data, CPU, snapshot=lambda state: store.save_partial(spec, "k", state))
    assert store.load_partial(spec, "k").epoch == 1
    assert store.load_partial(spec, "other") is None
    tensors = next((tmp_path / "in-progress").glob("*.safetensors"))
    tensors.write_bytes(tensors.read_bytes()[:-10])  # killed between the tensors and the JSON
    assert store.load_partial(spec, "k") is None
    assert not list(store.sidecars())  # reports and estimates never meet a run in progress


def test_a_grid_run_killed_mid_training_resumes_from_its_last_epoch(mini_root, tmp_path):
    """The CLI: SIGKILL once the first epoch's state is saved, and again once the resumed run has
    saved a later one; --dry-run says the training goes on from it, and the rerun does and saves
    the checkpoint the uninterrupted run saves, naming both processes before it (the second's state
    named only the second, so a run cut twice lost its first machine)."""
    profile = tmp_path / "p.toml"
    profile.write_text('[recipe]\nepochs = 4\nbatch_size = 64\nlr = 0.1\ntrain_subset = 1000\n'
                       '[eval]\nn = 20\nbatch_size = 20\nattacks = ["fgsm"]\nviews = ["raw"]\n'
                       '[[grid]]\narch = "fastnetw8"\nT = [2]\n')
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def command(store):
        return [sys.executable, "-m", "bench.run", "--profile", str(profile), "--data-root", str(mini_root),
                "--cache", str(tmp_path / "cache"), "--store", str(store), "--no-progress", "--tables-only"]

    whole = subprocess.run(command(tmp_path / "whole"), cwd=REPO, capture_output=True, text=True, env=env)
    assert whole.returncode == 0, whole.stderr
    saved = tmp_path / "cut" / "checkpoints" / "in-progress"

    def epoch_saved():
        try:
            return json.loads(next(saved.glob("*.json")).read_text())["epoch"]
        except (StopIteration, OSError, ValueError, KeyError):
            return 0

    cuts = []
    for _ in range(2):
        proc = subprocess.Popen(command(tmp_path / "cut"), cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=env)
        deadline, before = time.time() + 300, epoch_saved()
        while time.time() < deadline and proc.poll() is None and epoch_saved() <= before:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, "the run ended before it saved an epoch's state"
        cuts.append(epoch_saved())
    assert cuts[0] < cuts[1] < 4
    dry = subprocess.run([*command(tmp_path / "cut"), "--dry-run"], cwd=REPO, capture_output=True, text=True, env=env)
    assert dry.returncode == 0 and "fastnetw8_T2: train (from epoch " in dry.stderr, dry.stderr
    rerun = subprocess.run(command(tmp_path / "cut"), cwd=REPO, capture_output=True, text=True, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert "(an interrupted run's state)" in rerun.stderr
    (a,), (b,) = (list(tmp_path.glob(f"{s}/checkpoints/*.safetensors")) for s in ("whole", "cut"))
    assert load_file(str(a)).keys() == load_file(str(b)).keys()
    assert all(torch.equal(v, load_file(str(b))[k]) for k, v in load_file(str(a)).items())
    meta = json.loads(b.with_suffix(".json").read_text())
    assert meta["resumed_from_epoch"] == cuts[1] and meta["resumed_from_threads"] == 1
    assert meta["resumed_from_device"] == meta["device"]  # the same machine here
    assert meta["trained_before"] == [{"device": meta["device"], "threads": 1, "to_epoch": e} for e in cuts]
    assert not (tmp_path / "cut" / "checkpoints" / "in-progress").exists()


@pytest.mark.parametrize("spoil", ["shape", "generator"])
def test_a_saved_state_that_no_longer_fits_is_trained_from_epoch_0(spoil, mini_data, tmp_path):
    """A state saved before an architecture changed (the key names the recipe, not the code), or
    on another kind of device (its generator's state another size): every rerun stopped on it with
    a traceback until someone emptied in-progress/. Now: one line, the run from epoch 0."""
    from bench.grid.models import get_model, run_key
    from bench.grid.plan import Plan
    from bench.profiles import load_profile
    from bench.train import TrainState
    (tmp_path / "p.toml").write_text("[recipe]\nepochs = 2\nbatch_size = 64\nlr = 0.1\ntrain_subset = 256\n"
                                     "[eval]\nn = 100\n[[grid]]\narch = \"fastnetw8\"\nT = [1]\n")
    profile = load_profile(str(tmp_path / "p.toml"))
    spec = parse_name("fastnetw8_T1")
    plan = Plan(profile=profile, models=[spec], attacks=[], views=[], results_dir=tmp_path / "r",
                cache_dir=tmp_path / "c")
    key, recipe, store = run_key(spec, plan, mini_data), profile.recipe_for(spec), CheckpointStore(tmp_path / "ck")

    def spoiled(state):
        t = dict(state.tensors)
        if spoil == "shape":
            t["model.fc.weight"] = torch.zeros(3, 3)
        else:  # a CUDA generator's state (16 bytes), as a GPU run leaves it
            t["rng.batches"] = torch.zeros(16, dtype=torch.uint8)
        store.save_partial(spec, key, TrainState(state.epoch, t, state.info))
        raise Stop

    with pytest.raises(Stop):
        train(spec, recipe, mini_data, CPU, snapshot=spoiled)
    assert store.partial_epoch(spec, key) == 1
    lines = []
    got_key, model, meta = get_model(spec, plan, mini_data, store, mini_data.test.subset(torch.arange(100)),
                                     lines.append)
    assert got_key == key and any(line.startswith("  cannot resume fastnetw8_T1 from the saved state of epoch 1 (")
                                  and line.endswith("): trained from epoch 0 instead") for line in lines), lines
    assert "resumed_from_epoch" not in meta and store.partial_epoch(spec, key) is None
    whole = train(spec, recipe, mini_data, CPU).model
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in whole.state_dict().items())


def test_the_estimate_prices_an_interrupted_run_at_the_epochs_it_has_left(mini_root, tmp_path):
    """A run whose state holds 3 of its 4 epochs resumes from there: --dry-run and the ETA priced
    it as a whole run (a PGD-AT run at epoch 9 of 10: ten times its rest)."""
    from bench.cli import make_plan
    from bench.grid.estimate import Pricer
    from bench.grid.jobs import Context, build_jobs, is_done
    from bench.run import build_parser, main
    grid = ('[recipe]\nepochs = 4\nbatch_size = 64\nlr = 0.1\ntrain_subset = 512\n'
            '[eval]\nn = 20\nbatch_size = 20\nattacks = ["fgsm"]\nviews = ["raw"]\n[[grid]]\narch = "fastnetw8"\n')
    (tmp_path / "p.toml").write_text(grid + "T = [2]\n")
    args = ["--data-root", str(mini_root), "--cache", str(tmp_path / "cache"), "--results", str(tmp_path / "out"),
            "--no-progress", "--tables-only"]
    assert main(["--profile", str(tmp_path / "p.toml"), *args]) == 0  # the stores' price of this recipe's run
    (tmp_path / "q.toml").write_text(grid + "T = [3]\n")
    ctx = Context(make_plan(build_parser().parse_args(["--profile", str(tmp_path / "q.toml"), *args])),
                  lambda m: None)
    todo = [j for j in build_jobs(ctx) if not is_done(j, ctx)]
    (job,) = [j for j in todo if j.kind == "train"]
    whole = Pricer(todo, ctx).prices([job])[job.key]
    assert whole.measured > 0
    # the state file as the trainer leaves it after epoch 3 (its JSON is what the estimate reads)
    key = ctx.ckpt_key(job.spec.run)
    info = ctx.ckpts._partial_paths(job.spec.run, key)[1]
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"epoch": 3, "key": key}))
    assert ctx.ckpts.partial_epoch(job.spec.run, key) == 3
    left = Pricer(todo, ctx).prices([job])[job.key]
    assert left.measured == pytest.approx(whole.measured / 4) and left.expected == pytest.approx(whole.expected / 4)
