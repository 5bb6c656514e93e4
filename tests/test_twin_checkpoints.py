"""An adversarial run whose best epoch was its last has one set of weights under two names
(@best, @last): measured once, its records copied to the other name, each saying so."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from bench.cli import make_plan
from bench.grid.jobs import Context, build_jobs, is_done
from bench.run import build_parser, main

REPO = Path(__file__).resolve().parents[1]

# one epoch: the best epoch is the last, whatever the CPU
PROFILE = """
name = "twins"
description = "one epoch of fast AT"
[recipe]
epochs = 1
batch_size = 64
lr = 0.05
train_subset = 512
[eval]
split = "test"
n = 50
batch_size = 50
attacks = ["fgsm", "pgd_margin"]
views = ["raw", "scaled"]
[attack.pgd_margin]
steps = 2
[[grid]]
arch = "fastnetw8"
T = [2]
regime = "fat"
recipe = {at_holdout = 64, at_eval_steps = 2}
"""


def records(out):
    """(checkpoint -> {measurement identity -> record}) of a results folder."""
    got = {"best": {}, "last": {}}
    for path in (out / "records").glob("*.json"):
        r = json.loads(path.read_text())
        got[r["checkpoint"]][(r["n"], r["threat"], r["view"], json.dumps(r["params"], sort_keys=True))] = r
    return got


def test_one_set_of_weights_is_measured_once(mini_root, tmp_path, capsys):
    (tmp_path / "p.toml").write_text(PROFILE)
    args = ["--profile", str(tmp_path / "p.toml"), "--data-root", str(mini_root), "--cache", str(tmp_path / "cache"),
            "--results", str(tmp_path / "out"), "--no-progress", "--tables-only"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "the same weights as fastnetw8_T2_fat@best" in err
    got = records(tmp_path / "out")
    assert got["best"].keys() == got["last"].keys() and len(got["best"]) >= 5
    for ident, last in got["last"].items():
        best = got["best"][ident]
        assert "same_weights_as" not in best and last["same_weights_as"] == best["run_key"] != last["run_key"]
        assert last["weights_sha256"] == best["weights_sha256"] and last["model"] == "fastnetw8_T2_fat@last"
        # the measurement's own provenance: when, where and at what cost it was made
        for k in ("metrics", "timestamp", "wall_s", "device", "code_version", "bits"):
            assert last.get(k) == best.get(k), k
    board = pd.read_csv(tmp_path / "out" / "leaderboard.csv").set_index("model")
    assert board.loc["fastnetw8_T2_fat@last", "robust_min"] == board.loc["fastnetw8_T2_fat@best", "robust_min"]
    tidy = pd.read_csv(tmp_path / "out" / "results.csv")
    assert set(tidy[tidy.checkpoint == "last"].same_weights_as) == {best["run_key"]}
    assert tidy[tidy.checkpoint == "best"].same_weights_as.isna().all()
    # one network, ranked once where RobustBench's table would list it twice; the page counts
    # what was measured, the copies apart
    from bench.report.export import robustbench_leaderboard
    from bench.report.html import write_page
    from bench.store import ResultStore
    assert list(robustbench_leaderboard(board.reset_index()).Method) == ["fastnetw8_T2_fat@best (= @last)"]
    store = ResultStore(tmp_path / "out")
    page = write_page(store, tmp_path / "page", board.reset_index(), store.table()).read_text()
    made = len(got["best"])
    assert f"({made} measurements, and {len(got['last'])} copied to a checkpoint of the same weights)" in page

    # resumed: both complete, nothing measured or copied again
    assert main(args) == 0
    assert "0 to run" in capsys.readouterr().err
    # --force measures each name itself
    assert main(args + ["--force"]) == 0
    assert "the same weights as" not in capsys.readouterr().err
    assert all("same_weights_as" not in r for r in records(tmp_path / "out")["last"].values())


def test_a_checkpoints_jobs_wait_for_its_twins(mini_root, tmp_path):
    """Each family's job of @last depends on @best's, so that an executor running jobs at once
    (Ray) measures one set of weights once: @last copies what @best measured."""
    (tmp_path / "p.toml").write_text(PROFILE)
    args = ["--profile", str(tmp_path / "p.toml"), "--data-root", str(mini_root), "--cache", str(tmp_path / "cache"),
            "--results", str(tmp_path / "out"), "--no-progress"]
    jobs = build_jobs(Context(make_plan(build_parser().parse_args(args)), lambda m: None))
    evals = {(j.spec.checkpoint, j.family): j for j in jobs if j.kind == "eval"}
    families = {f for _, f in evals}
    assert len(families) >= 2 and {c for c, _ in evals} == {"best", "last"}
    for family in families:
        best, last = evals["best", family], evals["last", family]
        assert best.key in last.deps and last.key not in best.deps and best.key not in best.deps


def test_on_ray_the_twin_is_copied_not_measured_beside_it(mini_root, tmp_path):
    """A real local Ray instance with a CPU per job: both checkpoints' jobs could start the moment
    training ends; @last's wait for @best's and copy its records."""
    (tmp_path / "p.toml").write_text(PROFILE)
    out = subprocess.run([sys.executable, "-m", "bench.run", "--profile", str(tmp_path / "p.toml"), "--data-root",
                          str(mini_root), "--cache", str(tmp_path / "cache"), "--results", str(tmp_path / "out"),
                          "--no-progress", "--tables-only", "--executor", "ray", "--cpus-per-job", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    got = records(tmp_path / "out")
    assert got["best"].keys() == got["last"].keys() and len(got["last"]) >= 5
    measured_twice = [ident for ident, r in got["last"].items() if "same_weights_as" not in r]
    assert not measured_twice, measured_twice


def test_the_eta_prices_a_trained_runs_twin_as_what_it_is(mini_root, tmp_path):
    """A run not trained yet has its @last priced at the odds the stores give (here the T=2 run's:
    one of one was its @best's weights), so its measured price, the one the pace is taken
    against, is in full; once the run is trained, its @last is known to be a copy: nothing."""
    from bench.grid.estimate import Pricer
    from bench.grid.executor import GridProgress
    from bench.grid.jobs import execute
    (tmp_path / "p.toml").write_text(PROFILE)
    args = ["--data-root", str(mini_root), "--cache", str(tmp_path / "cache"), "--results", str(tmp_path / "out"),
            "--no-progress"]
    assert main(["--profile", str(tmp_path / "p.toml"), *args, "--tables-only"]) == 0
    (tmp_path / "q.toml").write_text(PROFILE.replace("T = [2]", "T = [2, 3]"))
    ctx = Context(make_plan(build_parser().parse_args(["--profile", str(tmp_path / "q.toml"), *args])),
                  lambda m: None)
    todo = [j for j in build_jobs(ctx) if not is_done(j, ctx)]
    assert {j.spec.T for j in todo} == {3}
    pricer = Pricer(todo, ctx)
    before = pricer.prices(todo)
    (train,) = [j for j in todo if j.kind == "train"]
    last = [j.key for j in todo if j.spec.checkpoint == "last"]
    best = [j.key for j in todo if j.spec.checkpoint == "best"]
    assert last and set(last) | set(best) <= set(before)
    assert all(before[k].expected == 0 < before[k].measured for k in last)
    progress = GridProgress(len(todo), 0, lambda m: None, todo, dict(before), reprice=pricer.after_training)
    execute(train, ctx, lambda m: None)
    progress.finished(train, 1.0, "trained")
    after = progress.prices
    assert set(pricer.after_training(train)) == set(last) | set(best)
    assert all(after[k].measured == after[k].expected == 0 for k in last)
    assert all(after[k] == before[k] and after[k].measured > 0 for k in best)


def test_under_force_the_eta_prices_every_twin_in_full(mini_root, tmp_path):
    """--force measures each checkpoint's name itself, copying nothing from its twin: every @last
    is priced in full, before its run is trained and after (where its records are also held)."""
    from bench.grid.estimate import Pricer
    from bench.grid.jobs import execute
    (tmp_path / "p.toml").write_text(PROFILE)
    args = ["--data-root", str(mini_root), "--cache", str(tmp_path / "cache"), "--results", str(tmp_path / "out"),
            "--no-progress"]
    assert main(["--profile", str(tmp_path / "p.toml"), *args, "--tables-only"]) == 0
    (tmp_path / "q.toml").write_text(PROFILE.replace("T = [2]", "T = [2, 3]"))
    ctx = Context(make_plan(build_parser().parse_args(["--profile", str(tmp_path / "q.toml"), *args, "--force"])),
                  lambda m: None)
    todo = [j for j in build_jobs(ctx) if j.kind == "eval" or not is_done(j, ctx)]
    assert {j.spec.T for j in todo if j.kind == "train"} == {3} and {j.spec.T for j in todo} == {2, 3}
    pricer = Pricer(todo, ctx)
    before = pricer.prices(todo)
    last = [j.key for j in todo if j.spec.checkpoint == "last"]
    assert len(last) >= 4 and all(before[k].expected == before[k].measured > 0 for k in last)
    (train,) = [j for j in todo if j.kind == "train"]
    execute(train, ctx, lambda m: None)
    after = pricer.after_training(train)
    assert all(p.expected == p.measured > 0 for p in after.values())
    assert {k for k in after if k in last} == {j.key for j in todo if j.spec.checkpoint == "last" and j.spec.T == 3}


def test_the_eta_prices_evaluations_held_for_a_retraining_here_at_nothing(mini_root, tmp_path):
    """A store whose checkpoints are gone (a fresh clone of committed results), its records made
    on this machine's CPU and thread count: each evaluation is expected to be found again once its
    run trains to the same weights, so priced at nothing (and in full if measured); after training,
    at nothing where the weights are the records' and in full where they are not. Records made on
    another machine are priced in full from the start."""
    from bench.grid.estimate import Pricer, estimate
    from bench.grid.jobs import execute, held_for_retraining
    from bench.provenance import device_name
    (tmp_path / "p.toml").write_text(PROFILE.replace('regime = "fat"', 'regime = "std"').replace(
        "recipe = {at_holdout = 64, at_eval_steps = 2}\n", ""))
    args = ["--profile", str(tmp_path / "p.toml"), "--data-root", str(mini_root), "--results", str(tmp_path / "out"),
            "--no-progress"]
    assert main([*args, "--cache", str(tmp_path / "cache"), "--tables-only"]) == 0

    def fresh_clone(cache: str, *more: str):
        ctx = Context(make_plan(build_parser().parse_args([*args, "--cache", str(tmp_path / cache), *more])),
                      lambda m: None)
        todo = [j for j in build_jobs(ctx) if not is_done(j, ctx)]
        (train,) = [j for j in todo if j.kind == "train"]
        return ctx, todo, train, [j for j in todo if j.kind == "eval"], Pricer(todo, ctx)

    def rewrite(**fields):
        for f in (tmp_path / "out" / "records").glob("*.json"):
            f.write_text(json.dumps({**json.loads(f.read_text()), **fields}))

    # --force measures every evaluation again: nothing is expected to be found, before training or after
    ctx, _, train, forced, pricer = fresh_clone("forced", "--force")
    assert forced and all(p.expected == p.measured > 0 for p in pricer.prices(forced).values())
    execute(train, ctx, lambda m: None)
    assert all(is_done(j, ctx) for j in forced)
    # a run's reprices replace its jobs' prices; those it leaves out keep their full ones
    assert all(p.expected == p.measured > 0 for p in pricer.after_training(train).values())
    ctx, todo, train, evals, pricer = fresh_clone("fresh")
    assert evals and all(held_for_retraining(j, ctx) == device_name(ctx.plan.device) for j in evals)
    before = pricer.prices(evals)
    assert set(before) == {j.key for j in evals} and all(p.expected == 0 < p.measured for p in before.values())
    assert f"priced at nothing: {len(evals)} evaluations the store holds from an earlier training on this " \
           "machine's CPU and thread count" in estimate(todo, ctx).line()
    execute(train, ctx, lambda m: None)
    after = pricer.after_training(train)
    assert set(after) == set(before) and all(p.measured == p.expected == 0 for p in after.values())

    # records of other weights, as a machine whose training differs leaves: measured after all
    rewrite(weights_sha256="0" * 64)
    ctx, todo, train, evals, pricer = fresh_clone("fresh2")
    assert all(p.expected == 0 < p.measured for p in pricer.prices(evals).values())
    execute(train, ctx, lambda m: None)
    assert all(p.expected == p.measured > 0 for p in pricer.after_training(train).values())

    # records made on another machine: in full before training too
    rewrite(device="cpu Another CPU (AVX512, 64 threads)")
    ctx, todo, train, evals, pricer = fresh_clone("fresh3")
    assert all(held_for_retraining(j, ctx) for j in evals)
    assert all(p.expected == p.measured > 0 for p in pricer.prices(evals).values())
    assert "priced at nothing" not in estimate(todo, ctx).line()
