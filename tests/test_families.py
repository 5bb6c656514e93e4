"""The measurement families and the grid built from them: a new family is one class and one line,
a family's run is held to its plan, job keys and dependencies are deterministic."""
import json
import time

import pandas as pd
import pytest
import torch

from bench.cli import make_plan
from bench.data import to_float
from bench.errors import BenchError
from bench.grid.estimate import Price
from bench.grid.jobs import Context, build_jobs, is_done, ordered
from bench.measure import families
from bench.measure.base import Family, Measurement
from bench.run import build_parser, main

PROFILE = """
name = "families"
[recipe]
epochs = 1
batch_size = 100
train_subset = 500
[eval]
n = 50
batch_size = 50
attacks = ["fgsm"]
views = ["raw"]
"""


class MeanLogit(Family):
    """What a contributor writes: a name, its measurements' identities, how to make them."""
    name = "mean_logit"
    describe = "accuracy and the mean top logit on the evaluation subset"

    def planned(self, spec, ctx):
        return [(len(ctx.eval_split), "mean_logit", "raw", {})]

    @torch.no_grad()
    def run(self, model, spec, ctx, log):
        split = ctx.eval_split
        z = model.eval()(to_float(split.images))
        metrics = {"accuracy": float((z.argmax(1) == split.labels).double().mean()),
                   "mean_top_logit": float(z.amax(1).mean())}
        return [Measurement("mean_logit", "raw", 0.0, 0, {}, len(split), metrics, 0.0, family="logits")]


class Drifting(MeanLogit):
    """A family whose run measures something else than it planned."""
    name = "drifting"

    def run(self, model, spec, ctx, log):
        m = super().run(model, spec, ctx, log)[0]
        m.params = {"bins": 10}
        return [m]


def _args(tmp_path, mini_root, *extra):
    path = tmp_path / "p.toml"
    path.write_text(PROFILE)
    return ["--profile", str(path), "--data-root", str(mini_root), "--results", str(tmp_path / "results"),
            "--cache", str(tmp_path / "cache"), "--no-progress", *extra]


def test_a_new_family_is_one_class_and_one_line(monkeypatch, tmp_path, mini_root, capsys):
    monkeypatch.setattr(families, "FAMILIES", families.FAMILIES + (MeanLogit,))  # the one line
    assert main(["--list-attacks"]) == 0
    assert "mean_logit   accuracy and the mean top logit" in capsys.readouterr().out
    args = _args(tmp_path, mini_root, "--model", "fastnetw8_T1", "--attack", "mean_logit")
    assert main(args) == 0
    tidy = pd.read_csv(tmp_path / "results" / "results.csv")
    rows = tidy[tidy.threat == "mean_logit"].set_index("metric")
    assert set(rows.index) == {"accuracy", "mean_top_logit"} and (rows.n == 50).all()
    assert set(tidy.threat) == {"clean", "calibration", "mean_logit"}  # --attack named no attack
    assert rows.loc["accuracy", "value"] == tidy[tidy.threat == "clean"].value.iloc[0]  # the same images
    records = {p.name: p.read_bytes() for p in (tmp_path / "results" / "records").glob("*.json")}
    capsys.readouterr()
    assert main(args) == 0  # resumed: every job already in the store, no record rewritten
    assert "0 to run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "results" / "records").glob("*.json")} == records


def test_a_family_is_switched_on_from_the_profile_and_checked_there(monkeypatch, tmp_path, mini_root):
    monkeypatch.setattr(families, "FAMILIES", families.FAMILIES + (MeanLogit,))
    args = build_parser().parse_args(_args(tmp_path, mini_root, "--model", "fastnetw8_T1"))
    (tmp_path / "p.toml").write_text(PROFILE + 'measure = ["mean_logit"]\n')
    assert make_plan(args).profile.eval.measure == ("mean_logit",)
    (tmp_path / "p.toml").write_text(PROFILE + 'measure = ["mean_logits"]\n')
    with pytest.raises(BenchError, match="unknown measurement family mean_logits; known: mean_logit"):
        make_plan(args)


def test_a_run_that_drifts_from_its_plan_fails_before_writing(monkeypatch, tmp_path, mini_root):
    monkeypatch.setattr(families, "FAMILIES", families.FAMILIES + (Drifting,))
    with pytest.raises(RuntimeError, match="measured other things than it planned"):
        main(_args(tmp_path, mini_root, "--model", "fastnetw8_T1", "--attack", "drifting"))
    tidy = pd.read_csv(tmp_path / "results" / "results.csv") if (tmp_path / "results" / "results.csv").exists() \
        else pd.DataFrame({"threat": []})
    assert "drifting" not in set(tidy.threat)
    written = [p.read_text() for p in (tmp_path / "results" / "records").glob("*.json")]
    assert not any('"drifting"' in w for w in written)


@pytest.fixture(scope="module")
def grid(mini_root, tmp_path_factory):
    """The jobs of a two-model grid with the transfer attack, planned but not run."""
    tmp = tmp_path_factory.mktemp("grid")
    args = _args(tmp, mini_root, "--model", "fastnetw8_T5,fastnetw8_T1", "--attack", "pgd,transfer,fp64")
    ctx = Context(make_plan(build_parser().parse_args(args)), lambda m: None)
    return ctx, args


def test_job_keys_and_dependencies(grid, mini_root, tmp_path):
    ctx, args = grid
    jobs = build_jobs(ctx)
    by_key = {j.key: j for j in jobs}
    train = {j.spec.name: j.key for j in jobs if j.kind == "train"}
    assert set(train) == {"fastnetw8_T5", "fastnetw8_T1"}
    evals = {(j.spec.name, j.family): j for j in jobs if j.kind == "eval"}
    # T1 is its own transfer surrogate: it gets no transfer job; T5's needs both training runs
    assert ("fastnetw8_T1", "transfer") not in evals
    assert set(evals["fastnetw8_T5", "transfer"].deps) == {train["fastnetw8_T5"], train["fastnetw8_T1"]}
    assert evals["fastnetw8_T5", "attacks"].deps == (train["fastnetw8_T5"],)
    assert {f for _, f in evals} == {"attacks", "transfer", "fp64 check", "calibration"}
    # the same grid planned again, in another process's Context, gives the same keys
    again = Context(make_plan(build_parser().parse_args(args)), lambda m: None)
    assert [j.key for j in build_jobs(again)] == [j.key for j in jobs]
    # the executor's order runs each dependency first, whatever order it is given
    order = [j.key for j in ordered(list(reversed(jobs)))]
    assert all(order.index(d) < order.index(j.key) for j in jobs for d in j.deps if d in by_key)
    # nothing is trained yet: nothing is done
    assert not any(is_done(j, ctx) for j in jobs)


def test_job_keys_follow_what_is_measured(grid, mini_root, tmp_path):
    """A job's key hashes the weights' key and the planned measurements: another attack budget is
    another job; the same one is the same job."""
    ctx, _ = grid
    keys = {j.key for j in build_jobs(ctx) if j.family == "attacks"}
    other = Context(make_plan(build_parser().parse_args(
        _args(tmp_path, mini_root, "--model", "fastnetw8_T5,fastnetw8_T1", "--attack", "pgd,transfer,fp64",
              "--steps", "3"))), lambda m: None)
    other_keys = {j.key for j in build_jobs(other) if j.family == "attacks"}
    assert len(keys) == len(other_keys) == 2 and not keys & other_keys


def test_the_eta_prices_each_kind_of_job_by_its_own(grid, monkeypatch):
    """A training run of 100 s, then two calibrations of 1 s: the one training run left is 100 s
    away, not the 34 s one pace for every job would say; with two jobs at a time, half of that."""
    from bench.grid import executor
    ctx, _ = grid
    jobs = build_jobs(ctx)
    train = [j for j in jobs if j.kind == "train"]
    calib = [j for j in jobs if j.family == "calibration"]
    for clocks, eta in (([0.0, 100.0, 101.0, 102.0], 100.0), ([0.0, 50.0, 50.5, 51.0], 50.0)):
        clock = iter(clocks)
        monkeypatch.setattr(executor.time, "perf_counter", lambda: next(clock))
        lines = []
        progress = executor.GridProgress(4, 0, lines.append, train + calib)
        for job, wall in ((train[0], 100.0), (calib[0], 1.0), (calib[1], 1.0)):
            progress.finished(job, wall, "ok")
        assert lines[-1].startswith("[3/4] ") and lines[-1].endswith(f"ETA {executor.duration(eta)}"), lines


def test_an_evaluation_nothing_finished_can_price_is_counted_not_guessed(grid, monkeypatch):
    """`bench.run --model resnet18_T5 --attack pgd` on a fresh store: the training run took 265 s
    and the two evaluations left were priced at the mean of all finished jobs, "ETA 8m50s"; they
    took 26 s. Until an evaluation has finished, one the stores cannot price is counted; then one
    of another family is priced at the finished evaluations' mean (here 10 s each)."""
    from bench.grid import executor
    ctx, _ = grid
    jobs = build_jobs(ctx)
    train = [j for j in jobs if j.kind == "train"]
    calib = [j for j in jobs if j.family == "calibration"]
    attacks = [j for j in jobs if j.family == "attacks"]
    clock = iter([0.0, 100.0, 110.0])
    monkeypatch.setattr(executor.time, "perf_counter", lambda: next(clock))
    lines = []
    progress = executor.GridProgress(4, 0, lines.append, [train[0], attacks[0], *calib])
    progress.finished(train[0], 100.0, "ok")
    assert lines[-1].endswith("; ETA unknown: 3 jobs not yet timed"), lines
    progress.finished(attacks[0], 10.0, "ok")
    assert lines[-1].endswith(f"; ETA {executor.duration(20.0)}"), lines
    # a training run left has its price (the finished jobs' mean) beside the evaluations that have none
    clock = iter([0.0, 100.0])
    lines = []
    progress = executor.GridProgress(4, 0, lines.append, [train[0], calib[0], train[1], attacks[0]])
    progress.finished(train[0], 100.0, "ok")
    assert lines[-1].endswith(f"; ETA {executor.duration(100.0)} and 2 jobs not yet timed"), lines
    # and the other way round: evaluations of 1.5 s say nothing of a training run (a grid resumed
    # with a new model: its training was priced at the evaluations' mean, hours shown as seconds)
    clock = iter([0.0, 1.5, 3.0])
    lines = []
    progress = executor.GridProgress(4, 0, lines.append, [attacks[0], calib[0], train[1], calib[1]])
    progress.finished(attacks[0], 1.5, "ok")
    progress.finished(calib[0], 1.5, "ok")
    assert lines[-1].endswith(f"; ETA {executor.duration(1.5)} and 1 job not yet timed"), lines


def test_the_eta_prices_what_the_stores_have_done_at_this_runs_pace(grid, monkeypatch):
    """The stores price each training run at 50 s and each calibration at 10 s; here the first
    training run took 100 s, so this machine runs at half their pace: the training run and two
    calibrations left are 140 s away. A calibration done in a blink (its records copied from a
    twin) says nothing about the pace (counted, it would halve the estimate): 120 s then."""
    from bench.grid import executor
    ctx, _ = grid
    jobs = build_jobs(ctx)
    train = [j for j in jobs if j.kind == "train"]
    calib = [j for j in jobs if j.family == "calibration"]
    assert len(train) == len(calib) == 2
    prices = {**{j.key: Price(50.0, 50.0) for j in train}, **{j.key: Price(10.0, 10.0) for j in calib}}
    clock = iter([0.0, 100.0, 100.1])
    monkeypatch.setattr(executor.time, "perf_counter", lambda: next(clock))
    lines = []
    progress = executor.GridProgress(4, 0, lines.append, train + calib, prices)
    progress.finished(train[0], 100.0, "ok")
    assert lines[-1].endswith(f"ETA {executor.duration(140.0)}"), lines
    progress.finished(calib[0], 0.1, "copied")
    assert lines[-1].endswith(f"ETA {executor.duration(120.0)}"), lines


def test_a_job_priced_at_the_odds_of_a_copy_sets_the_pace_by_its_full_price(grid, monkeypatch):
    """Calibrations priced at 10 s if measured and 4 s at the odds that they are a twin's copies:
    one measured in 20 s says this machine runs at half the stores' pace (not a fifth), so the
    training run of 50 s and the calibration left are 100 + 8 s away."""
    from bench.grid import executor
    ctx, _ = grid
    jobs = build_jobs(ctx)
    train = [j for j in jobs if j.kind == "train"]
    calib = [j for j in jobs if j.family == "calibration"]
    prices = {train[0].key: Price(50.0, 50.0), **{j.key: Price(10.0, 4.0) for j in calib}}
    clock = iter([0.0, 20.0])
    monkeypatch.setattr(executor.time, "perf_counter", lambda: next(clock))
    lines = []
    progress = executor.GridProgress(3, 0, lines.append, [train[0], *calib], prices)
    progress.finished(calib[0], 20.0, "ok")
    assert lines[-1].endswith(f"ETA {executor.duration(108.0)}"), lines


def test_a_revised_attack_is_measured_again_alone(monkeypatch, tmp_path, mini_root, capsys):
    """An attack whose revision is bumped (a change to its numbers, as the CE attacks' summed loss)
    has its records measured again on the next run, in the attack suite and in the eps sweep; the
    other attacks' records and the calibration stay as they were, byte for byte (the clean pass,
    which picks the points attacked, runs again: the same accuracy, a new timestamp)."""
    from dataclasses import replace

    from attacks import ATTACKS
    sweep = 'eps_sweep = ["2/255", "8/255"]\nsweep_attacks = ["pgd", "pgd_margin"]\n'
    args = _args(tmp_path, mini_root, "--model", "fastnetw8_T1", "--attack", "fgsm,pgd,eps_sweep", "--steps", "2",
                 "--tables-only")
    (tmp_path / "p.toml").write_text(PROFILE + sweep)  # over the plain profile _args wrote
    assert main(args) == 0
    records = tmp_path / "results" / "records"
    before = {p.name: p.read_text() for p in records.glob("*.json")}
    monkeypatch.setitem(ATTACKS, "pgd", replace(ATTACKS["pgd"], revision=ATTACKS["pgd"].revision + 1))
    capsys.readouterr()
    # timestamps are to the second: on a fast box both runs fit in one, and the clean pass made
    # again would write the same bytes (seen on an AVX-512 EPYC)
    time.sleep(1)
    assert main(args) == 0
    after = {p.name: p.read_text() for p in records.glob("*.json")}
    assert after.keys() == before.keys()
    changed = {json.loads(after[k])["threat"] for k in after if after[k] != before[k]}
    kept = {json.loads(after[k])["threat"] for k in after if after[k] == before[k]}
    assert changed == {"pgd", "clean"} and {"calibration", "fgsm", "pgd_margin"} <= kept
    for k in after:
        new, old = json.loads(after[k]), json.loads(before[k])
        if new["threat"] == "pgd":
            assert new["measure_version"] == ATTACKS["pgd"].revision and old["measure_version"] == new["measure_version"] - 1
        if new["threat"] == "clean":
            assert new["metrics"]["accuracy"] == old["metrics"]["accuracy"]


def test_a_crosscheck_of_another_reference_budget_is_measured_again():
    """[attack.autoattack_ref] sets the reference's budget apart from torchattacks', which alone the
    identity names: a record of another reference budget was called done. One made before the
    record kept the reference's settings stands (it cannot say)."""
    from bench.measure.crosscheck import CrossCheck
    from bench.profiles import load_profile
    profile = load_profile("smoke")
    ref = profile.attack("autoattack_ref")
    cc = CrossCheck(None, None, profile.attack("autoattack"), ref)
    assert not cc.stale({"ref_params": dict(ref.kwargs)}, None, None)
    assert cc.stale({"ref_params": dict(ref.kwargs, n_queries=ref.kwargs["n_queries"] + 1)}, None, None)
    assert not cc.stale({}, None, None)


def test_a_revision_of_either_autoattack_outdates_the_crosscheck(monkeypatch):
    """The cross-check kept its family's version whatever its attacks' revisions: a change to
    either AutoAttack would have left its records standing and unflagged (the fp64 check and the
    transfer attack follow PGD's)."""
    import dataclasses

    from attacks import ATTACKS
    from bench.measure.families import outdated
    record = {"n": 100, "threat": "autoattack_crosscheck", "view": "raw", "params": {}, "family": "diagnostic",
              "measure_version": 1}
    assert not outdated(record)
    for name in ("autoattack", "autoattack_ref"):
        with monkeypatch.context() as m:
            m.setitem(ATTACKS, name, dataclasses.replace(ATTACKS[name], revision=ATTACKS[name].revision + 1))
            assert outdated(record), name
