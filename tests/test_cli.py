"""The CLI end to end on the smoke profile, and bad input: exit 2, one line, nothing written."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.errors import BenchError
from bench.run import main
from tests.builders import write_cifar101

REPO = Path(__file__).resolve().parents[1]


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "bench.run", *args], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=600)


def in_process(capsys, monkeypatch, *args, env=None):
    """main() in this process, as ``cli`` runs it in a new one (the smoke run does): a new
    process would pay its seconds of imports again."""
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


@pytest.fixture(scope="module")
def smoke_run(mini_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("smoke")
    write_cifar101(base / "shift" / "CIFAR-10.1", n=40)  # a small stand-in for the real CIFAR-10.1 files
    args = ["--profile", "smoke", "--data-root", str(mini_root), "--results", str(base / "results"),
            "--cache", str(base / "cache")]
    first = cli(*args, env={"BENCH_SHIFT_DATA": str(base / "shift")})
    return base, args, first


def smoke_tables(smoke_run):
    """The smoke run's leaderboard and tidy table, once the run has succeeded."""
    base, _, first = smoke_run
    assert first.returncode == 0, first.stderr
    return pd.read_csv(base / "results" / "leaderboard.csv"), pd.read_csv(base / "results" / "results.csv")


def attack_columns(board):
    return [c for c in board.columns if c.endswith("@8/255") and not c.startswith("robust_min")]


def test_smoke_leaderboard_models_attack_columns_and_sort(smoke_run):
    _, _, first = smoke_run
    board, _ = smoke_tables(smoke_run)
    assert sorted(board.model) == ["fastnetw8_T1", "fastnetw8_T10", "fastnetw8_T1_fat@best", "fastnetw8_T1_fat@last"]
    assert set(board.source) == {"grid"} and set(board.T_source) == {"given"}
    assert (board.dataset == "cifar10-mini").all() and (board.n == 100).all()
    attack_cols = attack_columns(board)
    assert sorted(attack_cols) == ["apgd_t@8/255", "fgsm_raw@8/255", "fgsm_scaled@8/255", "pgd_margin@8/255",
                                   "pgd_raw@8/255", "pgd_scaled@8/255", "transfer@8/255"]
    # robust_min is the minimum over every attack and view, and it leads the sort
    assert (board.robust_min.round(6) == board[attack_cols].min(axis=1).round(6)).all()
    assert list(board.robust_min) == sorted(board.robust_min, reverse=True)
    assert "robust_min" in first.stdout and "fastnetw8_T10" in first.stdout  # the summary table


def test_smoke_masking_audit_columns(smoke_run):
    """The audit: a verdict for every model, the sweep, the float64 recomputation and the
    AutoAttack cross-check."""
    board, _ = smoke_tables(smoke_run)
    assert set(board.masking) <= {"none", "suspected", "likely"} and board.masking.notna().all()
    assert {"robust_min@2/255", "robust_min@32/255", "ce_gap", "fp64_gap", "aa_crosscheck_diff",
            "robust_worst", "sweep_plateau"} <= set(board.columns)
    assert (board.robust_worst <= board.robust_min + 1e-9).all()
    # the cross-check runs on the models the profile's crosscheck_models names, and only there
    checked = board.set_index("model").aa_crosscheck_n
    assert checked.dropna().to_dict() == {"fastnetw8_T10": 20, "fastnetw8_T1_fat@best": 20}


def test_smoke_transfer_from_the_t1_surrogate(smoke_run):
    """The transfer attack is crafted on the T=1 model and measured on the others, not onto itself;
    the run says so rather than leave the column empty without a word."""
    board, _ = smoke_tables(smoke_run)
    t1, t10 = board.set_index("model").loc["fastnetw8_T1"], board.set_index("model").loc["fastnetw8_T10"]
    assert pd.isna(t1["transfer@8/255"]) and pd.notna(t10["transfer@8/255"])
    assert "transfer: not measured on fastnetw8_T1 (the surrogate would be the model itself)" in smoke_run[2].stderr


def test_smoke_tidy_table_identity_and_provenance_columns(smoke_run):
    _, tidy = smoke_tables(smoke_run)
    for col in ["run_key", "model", "arch", "T", "head", "regime", "seed", "dataset", "split", "n", "threat",
                "view", "eps", "steps", "metric", "value", "code_version", "torch_version", "device",
                "timestamp", "wall_s"]:
        assert col in tidy.columns


def test_smoke_tidy_table_threats_views_families_and_budgets(smoke_run):
    _, tidy = smoke_tables(smoke_run)
    assert set(tidy[tidy.family.isin(["clean", "attack"])].threat) == {"clean", "fgsm", "pgd", "pgd_margin",
                                                                        "apgd_t", "transfer"}
    assert set(tidy.view) == {"none", "raw", "scaled", "any", "posthoc"}
    assert set(tidy.family) == {"clean", "attack", "corruption", "natural", "shift", "diagnostic", "calibration"}
    linf = tidy[tidy.metric == "max_linf"]
    assert (linf.value <= linf.eps + 1e-6).all() and set(linf.eps.round(6)) == {round(e / 255, 6) for e in (2, 8, 32)}
    assert set(tidy[tidy.threat == "pgd"].steps) == {3}  # the profile's [attack.pgd] steps


def test_smoke_fast_at_trained_once_with_both_checkpoints(smoke_run):
    """The fast-AT run: trained once, both checkpoints evaluated, its epochs checked on held-out images."""
    base, _, first = smoke_run
    board, _ = smoke_tables(smoke_run)
    fat = board.set_index("model").loc[["fastnetw8_T1_fat@best", "fastnetw8_T1_fat@last"]]
    assert list(fat.checkpoint) == ["best", "last"] and set(fat.regime) == {"fat"}
    assert first.stderr.count("trained in") == 3 and "held-out margin-PGD accuracy by epoch" in first.stderr
    # no progress bar here (not a terminal), so a line an epoch, in the job's log file too; the
    # held-out figures are those the sidecar keeps
    (log,) = (base / "results" / "logs").glob("train__fastnetw8_T1_fat__*.log")
    epochs = [line for line in log.read_text().splitlines() if line.startswith("    epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"], log.read_text()
    assert "; ETA " in epochs[0] and "ETA" not in epochs[1]  # the run's own ETA while epochs are left
    (sidecar,) = (base / "cache" / "checkpoints").glob("fastnetw8_T1_fat-*.json")
    history = json.loads(sidecar.read_text())["holdout_history"]
    assert [line.split("margin-PGD ")[1] for line in epochs] == [f"{100 * h['pgd_acc']:.1f}%" for h in history]
    assert sum(line.startswith("    epoch ") for line in first.stderr.splitlines()) == 2 * 3  # every training run
    assert len(list((base / "cache" / "checkpoints").glob("*.safetensors"))) == 4  # the fast-AT run: best + last


def test_smoke_corruptions_and_mce(smoke_run):
    """The smoke profile's corruptions, generated, and the mCA/mCE columns made from them."""
    board, tidy = smoke_tables(smoke_run)
    corr = tidy[tidy.family == "corruption"]
    assert set(corr.threat) == {"corruption"}
    assert set(corr.corruption) == {"none", "gaussian_noise", "contrast", "jpeg_compression", "speckle_noise"}
    assert set(corr.severity) == {0, 1, 5} and set(corr.source) == {"cifar10c-generated"}
    assert set(corr[corr.corruption == "none"].severity) == {0}
    # the corruption subset's own clean accuracy is the reference of the relative drop
    c_clean = corr[(corr.corruption == "none") & (corr.metric == "accuracy")].set_index("model").value
    assert (board.set_index("model").c_clean.sort_index() == c_clean.sort_index()).all()
    assert (board.mCA <= board.clean + 0.05).all() and board.mCA.notna().all()
    t1 = board.set_index("model").loc["fastnetw8_T1"]
    assert t1.mCE == pytest.approx(1.0)  # the baseline is itself
    # relative CE: the corrupted error summed over severities less the clean error as often. On a
    # smoke model that sum can be nil for every corruption (0.19 and 0.13 around a clean 0.16), and
    # 0/0 has no value rather than the 1.0 a rounding residue gave
    from attacks.corruptions import BENCHMARK
    mine = corr[(corr.model == "fastnetw8_T1") & (corr.metric == "accuracy") & corr.corruption.isin(BENCHMARK)]
    rel = mine.groupby("corruption").value.agg(lambda v: (1 - v).sum() - len(v) * (1 - t1.c_clean))
    moved = (rel.abs() > 1e-9).any()
    assert t1.rel_mCE == pytest.approx(1.0) if moved else np.isnan(t1.rel_mCE), (rel.to_dict(), t1.rel_mCE)
    assert board.set_index("model").mCE_baseline.to_dict() == {
        "fastnetw8_T1": "fastnetw8_T1", "fastnetw8_T10": "fastnetw8_T1",
        "fastnetw8_T1_fat@best": "fastnetw8_T1_fat@best", "fastnetw8_T1_fat@last": "fastnetw8_T1_fat@last"}


def test_smoke_calibration_columns_and_plots(smoke_run):
    """Calibration on three views, a reliability diagram per model, and the other figures."""
    base, _, _ = smoke_run
    board, _ = smoke_tables(smoke_run)
    results = base / "results"
    assert {"ece_raw", "ece_scaled", "ece_posthoc", "nll_posthoc", "posthoc_T"} <= set(board.columns)
    assert len(list((results / "plots" / "reliability").glob("*.png"))) == 4
    assert len(list((results / "plots").glob("*.png"))) >= 4


def test_smoke_natural_shifts_and_cifar101(smoke_run):
    board, tidy = smoke_tables(smoke_run)
    assert {"nat_rotate", "nat_hue", "nat_worst_grid", "cifar10.1", "cifar10.1_gap"} <= set(board.columns)
    assert (board.nat_worst_grid <= board.clean).all()
    assert set(tidy[tidy.family == "shift"].n) == {40}


def test_rerun_reuses_checkpoints_and_duplicates_nothing(smoke_run, capsys, monkeypatch):
    base, args, first = smoke_run
    before = pd.read_csv(base / "results" / "results.csv")
    stale = base / "results" / "plots" / "acc_vs_T_an_attack_of_an_older_grid.png"
    stale.write_bytes(b"")
    again = in_process(capsys, monkeypatch, *args, env={"BENCH_SHIFT_DATA": str(base / "shift")})
    assert not stale.exists() and (base / "results" / "plots" / "acc_vs_T.png").exists()  # figures match the tables
    assert again.returncode == 0, again.stderr
    assert "trained in" not in again.stderr
    # three training runs; per model: attacks, eps sweep, fp64 check, calibration, corruptions,
    # natural, cifar10.1; the AutoAttack cross-check for the two models crosscheck_models names;
    # and the transfer attack for all but fastnetw8_T1, the surrogate
    assert "grid: 36 jobs (3 training runs, 33 evaluations); 36 already done" in again.stderr
    assert "; 0 to run" in again.stderr and "[1/" not in again.stderr
    after = pd.read_csv(base / "results" / "results.csv")
    assert len(after) == len(before)
    forced = in_process(capsys, monkeypatch, *args, "--force", "--model", "fastnetw8_T1", "--attack", "pgd",
                        "--tables-only", env={"BENCH_SHIFT_DATA": str(base / "shift")})
    assert forced.returncode == 0, forced.stderr
    after = pd.read_csv(base / "results" / "results.csv")
    assert len(after) == len(before)  # re-measured rows replaced their old versions
    key = ["run_key", "family", "threat", "view", "eps", "corruption", "severity", "magnitude", "n", "metric"]
    assert not after.duplicated(key).any()


def device_of(base: Path) -> str:
    """The device the smoke run's records name, as the estimate line writes it."""
    return json.loads(next((base / "results" / "records").glob("*.json")).read_text())["device"]


def test_dry_run_lists_what_is_left_and_writes_nothing(smoke_run, capsys, monkeypatch):
    """--dry-run on the finished smoke store: nothing left; with a model the store lacks, its
    training run and the families it would measure, the finished model not listed; and not a
    file written, changed or removed under the run's folders."""
    base, args, _ = smoke_run
    env = {"BENCH_SHIFT_DATA": str(base / "shift")}

    def snapshot():
        return {p: p.stat().st_mtime_ns for p in base.rglob("*")}
    before = snapshot()
    done = in_process(capsys, monkeypatch, *args, "--dry-run", env=env)
    assert done.returncode == 0, done.stderr
    assert "36 already done" in done.stderr and "; 0 to run" in done.stderr
    assert done.stderr.rstrip().endswith("nothing to run")
    # an empty cache (a fresh clone of a committed store): every training run to do again, and the
    # line says that the evaluations' records are there for the same runs
    fresh = in_process(capsys, monkeypatch, *args, "--dry-run", "--cache", str(base.parent / "fresh_cache"), env=env)
    assert fresh.returncode == 0, fresh.stderr
    assert "0 already done (--force re-evaluates); 36 to run (33 of them evaluations the store holds from an " \
           f"earlier training of the same run, on {device_of(base)}: found again if training here gives the same " \
           "weights" in fresh.stderr and "; this machine: cpu " in fresh.stderr
    # made on this machine's CPU and threads, they are priced as found again, not measured
    assert "priced at nothing: 33 evaluations the store holds from an earlier training on this machine's CPU " \
           "and thread count" in fresh.stderr.splitlines()[-1], fresh.stderr
    new = in_process(capsys, monkeypatch, *args, "--dry-run", "--model", "fastnetw8_T1,fastnetw8_T5",
                     "--attack", "pgd", env=env)
    assert new.returncode == 0, new.stderr
    listed = new.stderr.split("would run (--dry-run: nothing was run or written):\n")[1].splitlines()
    assert listed[0] == "  fastnetw8_T5: train, attacks, calibration", new.stderr
    # priced from the smoke run's own training runs and measurements (the same arch, recipe,
    # threats and images), all of them: nothing left unpriced
    assert listed[1].startswith("estimate: ") and "training runs left, at the pace of the stores'" in listed[1]
    assert "not counted" not in listed[1] and len(listed) == 2, new.stderr
    # a radius no record has: the clean pass is priced, the FGSM measurements counted apart
    other = in_process(capsys, monkeypatch, *args, "--dry-run", "--model", "fastnetw8_T1", "--attack", "fgsm",
                       "--eps", "3/255", env=env)
    assert other.returncode == 0, other.stderr
    expected = ["  fastnetw8_T1: attacks",
                "estimate: under a minute for 1 of the 3 measurements and training runs left, at the pace of the "
                f"stores' own records (made on {device_of(base)}); the other 2 have nothing like them in the "
                "stores: not counted"]
    assert other.stderr.rstrip().splitlines()[-2:] == expected, other.stderr
    # a new results folder has nothing to go by; --pace-from prices its grid from the smoke store
    results = args[args.index("--results") + 1]
    empty = [*args[:args.index("--results")], "--results", str(base.parent / "new_results"),
             *args[args.index("--results") + 2:], "--dry-run"]
    alone = in_process(capsys, monkeypatch, *empty, env=env)
    assert alone.returncode == 0 and alone.stderr.rstrip().splitlines()[-1].startswith("no estimate:"), alone.stderr
    paced = in_process(capsys, monkeypatch, *empty, "--pace-from", results, env=env)
    assert paced.returncode == 0, paced.stderr
    line = paced.stderr.rstrip().splitlines()[-1]
    assert line.startswith("estimate: ") and f"at the pace of the stores' own records and those of {results} " \
        f"(made on {device_of(base)})" in line and "not counted" not in line, paced.stderr
    assert not (base.parent / "new_results").exists()
    assert snapshot() == before


def test_the_estimate_prices_only_what_a_revised_attack_measures_again(smoke_run, tmp_path, capsys, monkeypatch):
    """One FGSM record of an older revision: the job measures the clean pass and FGSM on both
    views again (AttackSuite.remeasures), and the estimate prices those 3, not the suite's 7."""
    import shutil
    base, args, _ = smoke_run
    results = tmp_path / "results"
    shutil.copytree(base / "results", results)
    for path in (results / "records").glob("*.json"):
        rec = json.loads(path.read_text())
        if rec["model"] == "fastnetw8_T1" and rec["threat"] == "fgsm" and rec["view"] == "raw":
            path.write_text(json.dumps(dict(rec, measure_version=0)))
            break
    else:
        raise AssertionError("the smoke store has no FGSM record of fastnetw8_T1")
    at = args.index("--results")
    out = in_process(capsys, monkeypatch, *args[:at], "--results", str(results), *args[at + 2:], "--dry-run",
                     env={"BENCH_SHIFT_DATA": str(base / "shift")})
    assert out.returncode == 0, out.stderr
    lines = out.stderr.rstrip().splitlines()
    assert lines[-2] == "  fastnetw8_T1: attacks", out.stderr
    assert lines[-1].startswith("estimate: ") and " for 3 of the 3 measurements " in lines[-1], out.stderr


def test_the_estimate_prices_a_twin_checkpoint_at_the_odds_that_it_is_a_copy(smoke_run, tmp_path, capsys,
                                                                              monkeypatch):
    """Where an adversarial run's best epoch was its last, @last's records are @best's, copied:
    nothing to measure. A trained run's second checkpoint is priced at nothing or in full as its
    weights say (the smoke fast-AT run; a one-epoch run, whose best epoch can only be its last,
    where only what its @best has measured, clean accuracy and calibration, is a copy already); a
    run not trained yet at the odds the stores' runs of its recipe give (that one-epoch run: one of
    one, so nothing)."""
    import shutil
    from bench.cli import make_plan
    from bench.grid.estimate import estimate
    from bench.grid.jobs import Context, build_jobs
    from bench.run import build_parser
    base, args, first = smoke_run
    assert first.returncode == 0, first.stderr
    for part in ("results", "cache"):  # the smoke store stays as the other tests expect it
        shutil.copytree(base / part, tmp_path / part)
    profile = tmp_path / "smoke_one_epoch.toml"
    profile.write_text((REPO / "bench" / "profiles" / "smoke.toml").read_text() + """
[[grid]]
arch = "fastnetw8"
T = [1, 10]
seeds = [1]
regime = "fat"
recipe = {epochs = 1, at_holdout = 64, at_eval_steps = 2}
""")
    args = ["--profile", str(profile), "--data-root", args[args.index("--data-root") + 1],
            "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")]
    trained = in_process(capsys, monkeypatch, *args, "--model", "fastnetw8_T1_fat_s1", "--attack", "none",
                         "--tables-only")
    assert trained.returncode == 0, trained.stderr
    ctx = Context(make_plan(build_parser().parse_args(args)), lambda m: None)
    jobs = build_jobs(ctx)
    runs = {m["spec"]["seed"]: m["best_weights_sha256"] == m["weights_sha256"]
            for m in ctx.ckpts.sidecars() if m["spec"]["regime"] == "fat"}
    assert runs[1]

    def cost(*names):
        return estimate([j for j in jobs if j.spec.name in names], ctx)
    # the smoke run's best epoch may be its last or not (its weights differ with the thread count)
    for run, same in (("fastnetw8_T1_fat", runs[0]), ("fastnetw8_T1_fat_s1", True)):
        at_best, at_last = cost(f"{run}@best").seconds, cost(f"{run}@last").seconds
        assert at_best > 0 and (at_last == 0) == (same and run == "fastnetw8_T1_fat")
        assert cost(f"{run}@best", f"{run}@last").seconds == pytest.approx(at_best + (0 if same else at_last))
    new = "fastnetw8_T10_fat_s1"
    train, with_best, with_last = cost(new).seconds, cost(new, f"{new}@best").seconds, cost(new, f"{new}@last").seconds
    assert train > 0 and with_last > train
    both = cost(new, f"{new}@best", f"{new}@last")
    assert both.seconds == pytest.approx(with_best)
    assert "1 of the stores' 1 runs of the same recipe" in both.line(), both.line()


def test_one_model_and_attack_by_name(smoke_run, capsys, monkeypatch):
    base, args, _ = smoke_run
    out = in_process(capsys, monkeypatch, *args, "--model", "fastnetw8_T1", "--attack", "fgsm", "--eps", "4/255",
                     "--results", str(base / "single"), "--tables-only")
    assert out.returncode == 0, out.stderr
    board = pd.read_csv(base / "single" / "leaderboard.csv")
    assert list(board.model) == ["fastnetw8_T1"]
    assert "fgsm_raw@4/255" in board.columns and "robust_min@4/255" in board.columns


def test_threats_by_name_corruptions(smoke_run, capsys, monkeypatch):
    base, args, _ = smoke_run
    out = in_process(capsys, monkeypatch, *args, "--model", "fastnetw8_T1", "--attack", "corruptions",
                     "--corruptions", "gaussian_noise,fog", "--severities", "3,5", "--n-test", "80", "--shift-n", "60",
                     "--results", str(base / "by_name_c"))
    assert out.returncode == 0, out.stderr
    tidy = pd.read_csv(base / "by_name_c" / "results.csv")
    # --shift-n sizes the corrupted subset alone, --n-test the clean one
    assert set(tidy[tidy.threat == "corruption"].n) == {60} and set(tidy[tidy.threat == "clean"].n) == {80}
    # no attack, no transform, no CIFAR-10.1; clean accuracy and calibration are always measured
    assert set(tidy.threat) == {"clean", "calibration", "corruption"}
    corr = tidy[tidy.threat == "corruption"]
    assert set(zip(corr.corruption, corr.severity)) == {("none", 0), ("gaussian_noise", 3), ("gaussian_noise", 5),
                                                        ("fog", 3), ("fog", 5)}
    assert corr.magnitude.isna().all()
    board = pd.read_csv(base / "by_name_c" / "leaderboard.csv")
    assert {"mCA", "mCA_s3", "mCA_s5", "c_clean"} <= set(board.columns) and "mCA_s1" not in board.columns
    plots = {p.name for p in (base / "by_name_c" / "plots").glob("*.png")}
    assert {"corruptions_heatmap_fastnetw8.png", "corruptions_vs_severity_fastnetw8.png"} <= plots


def test_threats_by_name_natural_and_cifar101(smoke_run, capsys, monkeypatch):
    from attacks.natural import NATURAL
    base, args, _ = smoke_run
    out = in_process(capsys, monkeypatch, *args, "--model", "fastnetw8_T1", "--attack", "natural,cifar10.1",
                     "--results", str(base / "by_name_n"),
                     env={"BENCH_SHIFT_DATA": str(base / "shift")})
    assert out.returncode == 0, out.stderr
    tidy = pd.read_csv(base / "by_name_n" / "results.csv")
    assert set(tidy.threat) == {"clean", "calibration", "cifar10.1", "worst_grid", *NATURAL}
    rot = tidy[(tidy.threat == "rotate") & (tidy.metric == "accuracy")]  # a row per metric: one per magnitude
    assert sorted(rot.magnitude) == sorted(NATURAL["rotate"].magnitudes) and rot.corruption.isna().all()
    assert (base / "by_name_n" / "plots" / "natural_vs_magnitude_fastnetw8.png").is_file()
    board = pd.read_csv(base / "by_name_n" / "leaderboard.csv")
    assert {f"nat_{t}" for t in NATURAL} | {"nat_worst_grid", "cifar10.1", "cifar10.1_gap"} <= set(board.columns)


def test_cifar101_by_name_downloads_it_or_stops(smoke_run, http_server, monkeypatch, capsys):
    """Asked for by name and missing, CIFAR-10.1 is downloaded (here from a local server); where
    that fails the run stops with one line and writes nothing."""
    www, url = http_server
    base, args, _ = smoke_run
    monkeypatch.delenv("BENCH_SHIFT_DATA", raising=False)
    monkeypatch.setattr("bench.shift_data.CIFAR101_URL", url + "/missing/")
    results = base / "dl_results"
    assert main([*args, "--model", "fastnetw8_T1", "--attack", "cifar10.1", "--results", str(results)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress log: one error line
    assert last.startswith("error: could not download CIFAR-10.1") and not results.exists()
    write_cifar101(www / "v6", n=30)
    monkeypatch.setattr("bench.shift_data.CIFAR101_URL", url + "/v6/")
    assert main([*args, "--model", "fastnetw8_T1", "--attack", "cifar10.1", "--results", str(results)]) == 0
    tidy = pd.read_csv(results / "results.csv")
    assert set(tidy[tidy.threat == "cifar10.1"].n) == {30}
    assert (base / "cache" / "downloads" / "CIFAR-10.1" / "cifar10.1_v6_data.npy").is_file()


def test_cifar101_that_all_brings_in_is_skipped_offline_not_fatal(mini_root, tmp_path, http_server, monkeypatch):
    """--attack all offline stopped at CIFAR-10.1's download, so everything else it names went
    unmeasured; named in --attack, CIFAR-10.1 still stops the run (the test above)."""
    from bench.cli import make_plan
    from bench.grid.jobs import Context
    from bench.measure.cifar101 import Cifar101
    from bench.run import build_parser
    _, url = http_server
    monkeypatch.delenv("BENCH_SHIFT_DATA", raising=False)
    monkeypatch.setattr("bench.shift_data.CIFAR101_URL", url + "/missing/")

    def plan(attack):
        return make_plan(build_parser().parse_args(
            ["--profile", "smoke", "--data-root", str(mini_root), "--model", "fastnetw8_T1", "--attack", attack,
             "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")]))

    lines = []
    everything = plan("all")
    assert everything.fetch_shift_sets and not everything.require_shift_sets
    assert Cifar101.prepare(Context(everything, lines.append), lines.append) is None
    assert lines[-1].startswith("shifts: CIFAR-10.1 skipped: could not download CIFAR-10.1")
    named = plan("pgd,cifar10.1")
    assert named.require_shift_sets
    with pytest.raises(BenchError, match="could not download CIFAR-10.1"):
        Cifar101.prepare(Context(named, lines.append), lines.append)
    assert not (tmp_path / "cache" / "downloads" / "CIFAR-10.1").exists()  # no partial download either way


def test_lists(capsys, monkeypatch):
    out = in_process(capsys, monkeypatch, "--list-models")
    assert out.returncode == 0 and "resnet18" in out.stdout and "fastnet_T50_lrT" in out.stdout
    grammar = out.stdout.splitlines()[0]
    assert grammar.endswith("[_s<seed>][@best|@last]") and "robustbench:<Name>" in out.stdout
    out = in_process(capsys, monkeypatch, "--list-attacks")
    assert out.returncode == 0 and "pgd" in out.stdout and "eps=8/255" in out.stdout


@pytest.mark.parametrize("command", [["-m", "bench.run", "--list-models"],
                                     [str(REPO / "scripts" / "readme_table.py"), str(REPO / "results" / "quick")]])
def test_a_reader_that_leaves_early_gets_no_traceback(command):
    """`--list-models | head -1`: a pipe whose reader is gone. The write raised BrokenPipeError and
    a traceback went to the terminal under the line the reader took; the reader here is gone before
    the first write, so the write fails every time, not only when the output outgrows the pipe."""
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run([sys.executable, *command], cwd=REPO, stdout=w, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr


# Bad input (exit 2, one line, nothing written): the table in tests/test_bad_input.py


def test_corrupt_dataset_cache_exits_2(mini_root, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    from bench.data import load_dataset
    load_dataset(str(mini_root), cache)
    (f,) = (cache / "data").glob("*.safetensors")
    f.write_bytes(f.read_bytes()[:5000])
    out = in_process(capsys, monkeypatch, "--profile", "smoke", "--data-root", str(mini_root), "--cache", str(cache),
                     "--results", str(tmp_path / "out"))
    assert out.returncode == 2 and "dataset cache" in out.stderr and "corrupt" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def _summary_store(tmp_path, clean: float, n: int = 10):
    """A store holding one model's clean accuracy, and the fields every record of it shares."""
    from bench.store import ResultStore
    store = ResultStore(tmp_path)
    base = {"run_key": "k", "dataset": "d", "split": "test", "n": n, "subset_seed": 0, "attack_seed": 0,
            "model": "fastnet_T1", "arch": "fastnet", "T": 1.0, "head": "plain", "regime": "std", "lr_scale": False,
            "seed": 0, "checkpoint": "last", "feature_dim": 64, "timestamp": "2025-01-01T00:00:00",
            "code_version": "c", "device": "cpu", "steps": 1}
    store.put(dict(base, threat="clean", view="none", params={}, family="clean", eps=0.0,
                   metrics={"accuracy": clean}))
    return store, base


def test_summary_rounds_as_the_job_log_does(tmp_path):
    """1,287 and 607 of 2,000 images: the job log, the HTML page and the README tables print 64.3
    and 30.3 (Python's rounding of the floats); the end-of-run table must not say 64.4 and 30.4
    (numpy's .round(1), which it used before)."""
    from bench.measure.base import pct
    from bench.report.tables import leaderboard, summary
    store, base = _summary_store(tmp_path, clean=1287 / 2000, n=2000)
    store.put(dict(base, threat="pgd", view="raw", params={"eps": 8 / 255}, family="attack", eps=8 / 255,
                   metrics={"robust_acc": 607 / 2000}))
    row = summary(leaderboard(store.table())).splitlines()[1].split()
    assert (pct(1287 / 2000), pct(607 / 2000)) == ("64.3%", "30.3%")
    assert row[row.index("2000") + 1:row.index("2000") + 3] == ["64.3", "30.3"]


def test_summary_says_where_robust_min_is_when_the_run_measured_another_eps(tmp_path):
    """--eps 4/255 measures no attack at 8/255, where robust_min is defined: the printed table
    says so and shows robust_min@4/255 instead of a bare NaN."""
    from bench.report.tables import leaderboard, summary
    store, base = _summary_store(tmp_path, clean=0.6)
    store.put(dict(base, threat="fgsm", view="raw", params={"eps": 4 / 255}, family="attack", eps=4 / 255,
                   metrics={"robust_acc": 0.2}))
    text = summary(leaderboard(store.table()))
    assert text.splitlines()[-1] == ("robust_min is defined at 8/255; this run measured 4/255: "
                                     "see robust_min@4/255")
    assert "robust_min@4/255" in text.splitlines()[0] and "20.0" in text.splitlines()[1]


def test_summary_points_to_another_eps_only_for_the_rows_attacked_there(tmp_path):
    """A clean-only model beside one with an eps sweep (results/cpu's BN-head arm beside its
    sweeps) has no robust_min anywhere: the note and seven sweep columns of NaN were printed for
    it. A model attacked only at 4/255 beside one attacked at 8/255 gets the note, for that row."""
    from bench.report.tables import leaderboard, summary
    store, base = _summary_store(tmp_path, clean=0.6)
    for eps, acc in ((8 / 255, 0.1), (4 / 255, 0.3)):
        store.put(dict(base, threat="pgd", view="raw", params={"eps": eps}, family="attack", eps=eps,
                       metrics={"robust_acc": acc}))
    other = dict(base, run_key="k2", model="fastnet_T5", T=5.0)
    store.put(dict(other, threat="clean", view="none", params={}, family="clean", eps=0.0, metrics={"accuracy": 0.5}))
    text = summary(leaderboard(store.table()))
    assert "is defined at" not in text and "robust_min@" not in text.splitlines()[0], text
    store.put(dict(other, threat="fgsm", view="raw", params={"eps": 2 / 255}, family="attack", eps=2 / 255,
                   metrics={"robust_acc": 0.25}))
    text = summary(leaderboard(store.table()))
    assert ("robust_min is defined at 8/255; this run measured 2/255 for 1 of these models: see "
            "robust_min@2/255") in text.splitlines(), text
    assert "robust_min@2/255" in text.splitlines()[0] and "robust_min@4/255" not in text.splitlines()[0]


def test_summary_shows_the_column_robust_min_comes_from(tmp_path):
    """A run with more columns than the small-run rule shows every attack for: the table named
    apgd_t as where robust_min came from but printed no apgd_t column."""
    from bench.report.tables import leaderboard, summary
    store, base = _summary_store(tmp_path, clean=0.6)
    for threat, view, acc in (("pgd", "raw", 0.3), ("pgd", "scaled", 0.25), ("fgsm", "raw", 0.4),
                              ("apgd_t", "any", 0.1)):
        store.put(dict(base, threat=threat, view=view, params={"eps": 8 / 255}, family="attack", eps=8 / 255,
                       metrics={"robust_acc": acc, "zero_grad_frac": 0.0, "saturated_frac": 0.0}))
    store.put(dict(base, threat="corruption", view="none", params={"name": "fog", "severity": 3}, family="corruption",
                   eps=0.0, metrics={"accuracy": 0.5}))
    board = leaderboard(store.table())
    head, row = (line.split() for line in summary(board).splitlines()[:2])
    assert list(board.robust_min_by) == ["apgd_t/any"]
    assert "apgd_t@8/255" in head and row[head.index("apgd_t@8/255")] == "10.0"
    assert "fgsm_raw@8/255" not in head  # the other attacks stay in leaderboard.csv


def test_help_loads_no_torch():
    """--help answers without loading torch (seconds on a slow box): the parser imports nothing heavy."""
    import subprocess
    import sys
    code = ("import sys, contextlib, io\nfrom bench.run import main\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    main(['--help'])\n"
            "assert '--profile' in out.getvalue()\nprint('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_grid_entry_measures_what_it_names(mini_root, tmp_path, capsys, monkeypatch):
    """[[grid]] measure: a model narrowed to clean accuracy and calibration gets those records
    alone, beside a model of the same run that is attacked; with keep_checkpoints the checkpoints
    are in <results>/checkpoints and the leaderboard's weights link to them."""
    prof = tmp_path / "narrow.toml"
    prof.write_text('keep_checkpoints = true\n[recipe]\nepochs = 1\nbatch_size = 64\ntrain_subset = 128\n'
                    '[eval]\nn = 30\nbatch_size = 30\nattacks = ["fgsm"]\nviews = ["raw"]\n'
                    '[[grid]]\narch = "fastnetw8"\nT = [1]\n'
                    '[[grid]]\narch = "fastnetw8"\nbn_head = true\nT = [2]\nmeasure = ["clean", "calibration"]\n')
    res = tmp_path / "res"
    out = in_process(capsys, monkeypatch, "--profile", str(prof), "--model", "all", "--data-root", str(mini_root),
                     "--results", str(res), "--cache", str(tmp_path / "cache"), "--no-progress")
    assert out.returncode == 0, out.err
    threats = pd.read_csv(res / "results.csv").groupby("model").threat.agg(set)
    assert threats["fastnetw8_bn_T2"] == {"clean", "calibration"}
    assert threats["fastnetw8_T1"] == {"clean", "calibration", "fgsm"}
    kept = sorted(p.name for p in (res / "checkpoints").glob("*.safetensors"))
    assert [k.split("-")[0] for k in kept] == ["fastnetw8_T1", "fastnetw8_bn_T2"]
    assert not (tmp_path / "cache" / "checkpoints").exists()
    board = pd.read_csv(res / "leaderboard.csv", dtype={"weights_sha256": str}).set_index("model")
    sha = json.loads(next((res / "checkpoints").glob("fastnetw8_T1-*.json")).read_text())["weights_sha256"]
    assert board.weights_sha256["fastnetw8_T1"] == sha
    page = (res / "index.html").read_text()
    assert f'href="checkpoints/{kept[0]}"' in page and f'href="checkpoints/{kept[1]}"' in page


def test_an_attack_added_to_a_profile_costs_that_attack_alone(mini_root, tmp_path, capsys, monkeypatch):
    """Resume at the measurement: after the suite ran FGSM, a profile that adds PGD reruns the
    attack-suite job for PGD (and the clean pass that picks the attacked points), and the FGSM
    records stay as they were."""
    prof = tmp_path / "p.toml"
    text = ('[recipe]\nepochs = 1\nbatch_size = 64\ntrain_subset = 128\n[eval]\nn = 30\nbatch_size = 30\n'
            'attacks = ["fgsm"]\nviews = ["raw"]\n[attack.pgd]\nsteps = 2\n[[grid]]\narch = "fastnetw8"\nT = [1]\n')
    prof.write_text(text)
    args = ["--profile", str(prof), "--model", "all", "--data-root", str(mini_root), "--results", str(tmp_path / "r"),
            "--cache", str(tmp_path / "cache"), "--no-progress", "--tables-only"]
    assert in_process(capsys, monkeypatch, *args).returncode == 0

    def records():
        return {(r["threat"], r["view"]): r for r in map(json.loads, map(Path.read_text, (tmp_path / "r" / "records").glob("*.json")))}
    before = records()
    prof.write_text(text.replace('attacks = ["fgsm"]', 'attacks = ["fgsm", "pgd"]'))
    out = in_process(capsys, monkeypatch, *args)
    assert out.returncode == 0, out.err
    after = records()
    assert set(after) - set(before) == {("pgd", "raw")}
    assert after[("fgsm", "raw")] == before[("fgsm", "raw")]  # not measured again: the same record, timestamp included
    assert after[("clean", "none")]["metrics"]["accuracy"] == before[("clean", "none")]["metrics"]["accuracy"]


def test_a_report_keeps_the_reliability_figures_drawn_from_the_same_bins(smoke_run, tmp_path):
    """Rebuilding the reports copies each reliability figure whose bins have not changed (its
    digest in plots/reliability/digests.json) instead of drawing it again, and draws the one whose
    bins have."""
    import json
    import shutil

    from bench.report.plots import _slug
    from bench.report.publish import write_reports
    from bench.store import ResultStore
    base, _, _ = smoke_run
    out = tmp_path / "results"
    (out / "records").mkdir(parents=True)
    for path in (base / "results" / "records").glob("*.json"):  # two of the smoke run's models: quicker
        if json.loads(path.read_text())["model"] in ("fastnetw8_T1", "fastnetw8_T10"):
            shutil.copy(path, out / "records" / path.name)
    write_reports(ResultStore(out), out)
    folder = out / "plots" / "reliability"
    digests = json.loads((folder / "digests.json").read_text())
    assert sorted(digests) == sorted(p.name for p in folder.glob("*.png")) and len(digests) == 2
    kept, redrawn = sorted(digests)[:2]
    for name in (kept, redrawn):  # a mark no drawing makes: it survives a copy only
        (folder / name).write_bytes((folder / name).read_bytes() + b"kept")
    rec_path = next(p for p in (out / "records").glob("*.json") if json.loads(p.read_text()).get("threat") ==
                    "calibration" and f"{_slug(json.loads(p.read_text())['model'])}.png" == redrawn)
    rec = json.loads(rec_path.read_text())
    rec["reliability"]["count"][0] += 1
    rec_path.write_text(json.dumps(rec))
    write_reports(ResultStore(out), out)
    assert (folder / kept).read_bytes().endswith(b"kept")
    assert not (folder / redrawn).read_bytes().endswith(b"kept")
    assert json.loads((folder / "digests.json").read_text())[redrawn] != digests[redrawn]
    (folder / kept).unlink()  # its digest still listed: drawn again, not an error
    write_reports(ResultStore(out), out)
    assert (folder / kept).is_file() and not (folder / kept).read_bytes().endswith(b"kept")
