"""scripts/compare_runs.py, which the seed-paired comparisons of two profiles in results/cpu/README.md
come from: its arithmetic on leaderboards with known values, its refusals, and that page's figures
(15 against 10 epochs of fast AT; PGD-AT with two steps against fast AT) from the committed folders."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "compare_runs.py"), *map(str, args)],
                          capture_output=True, text=True)


def board(folder: Path, regime: str, values, arch="fastnet", head="plain"):
    """A leaderboard with one row per (seed, checkpoint): values[(seed, checkpoint)] = robust_min;
    with arch or head lists, one model per pair of them, each with those values plus its index."""
    folder.mkdir(parents=True, exist_ok=True)
    models = list(zip(*(x if isinstance(x, list) else [x] for x in (arch, head))))
    pd.DataFrame([dict(model=f"{a}{'_bn' * (h == 'bn')}_T1_s{s}@{c}", arch=a, head=h, lr_scale=False, T=1.0,
                       regime=regime, seed=s, checkpoint=c, robust_min=v + i / 10, clean=0.6)
                  for i, (a, h) in enumerate(models)
                  for (s, c), v in values.items()]).to_csv(folder / "leaderboard.csv", index=False)


def test_paired_difference_and_interval(tmp_path):
    board(tmp_path / "a", "fat", {(0, "last"): 0.30, (1, "last"): 0.28, (2, "last"): 0.29, (0, "best"): 0.30,
                                  (3, "last"): 0.5})  # seed 3 has no partner: left out
    board(tmp_path / "b", "at", {(0, "last"): 0.32, (1, "last"): 0.31, (2, "last"): 0.30, (0, "best"): 0.33})
    done = run(tmp_path / "a", tmp_path / "b", "--regime", "fat", "--cand-regime", "at", "--metric", "robust_min")
    assert done.returncode == 0, done.stderr
    lines = {line.split()[1]: line.split() for line in done.stdout.splitlines()[1:]}
    # differences 2, 3, 1 pp: mean 2, sd 1, t(0.975, 2) = 4.303 -> half-width 2.48
    assert lines["@last"][2:5] == ["+2.0", "[-0.5,", "+4.5]"] and lines["@last"][6] == "2"
    assert lines["@best"][2:4] == ["+3.0", "(one"]


def test_refusals(tmp_path):
    board(tmp_path / "a", "fat", {(0, "last"): 0.3})
    board(tmp_path / "b", "at", {(0, "last"): 0.3})
    for args in [(tmp_path / "a", tmp_path / "nothing"), (tmp_path / "a", tmp_path / "b", "--regime", "fat"),
                 (tmp_path / "a", tmp_path / "b", "--regime", "fat", "--cand-regime", "at", "--metric", "nope")]:
        done = run(*args)
        assert done.returncode == 2 and done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    # a column of words (the regime, a masking verdict) has no difference: one line, not pandas' TypeError
    done = run(tmp_path / "a", tmp_path / "b", "--regime", "fat", "--cand-regime", "at", "--metric", "clean,model")
    assert done.returncode == 2 and done.stdout == "" and "--metric model: not a column of numbers" in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    # spaces and a trailing comma are not column names
    done = run(tmp_path / "a", tmp_path / "b", "--regime", "fat", "--cand-regime", "at",
               "--metric", "clean, robust_min,")
    assert done.returncode == 0 and "robust_min" in done.stdout, done.stderr


def test_a_usage_error_is_one_line(tmp_path):
    """Plain argparse printed its usage above the error: a screenful for one mistake."""
    board(tmp_path / "a", "std", {(0, "last"): 0.3})
    for args, phrase in [((tmp_path / "a",), "required: cand"), ((tmp_path / "a", tmp_path / "a", "--T", "hot"),
                                                                  "argument --T: invalid float value: 'hot'"),
                         ((tmp_path / "a", tmp_path / "a", "--frobnicate"), "unrecognized arguments: --frobnicate")]:
        done = run(*args)
        assert done.returncode == 2 and done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith("error: ") and phrase in done.stderr, done.stderr


def test_each_model_pairs_with_its_own(tmp_path):
    """Other widths and the BN head share T and regime with the plain arm: each pairs with its own
    counterpart (the pairs were every model against every other, 75 of them from 15 models)."""
    seeds = {(0, "last"): 0.30, (1, "last"): 0.28, (2, "last"): 0.29}
    models = dict(arch=["fastnet", "fastnet", "fastnetw32"], head=["plain", "bn", "plain"])
    board(tmp_path / "a", "std", seeds, **models)
    board(tmp_path / "b", "std", {k: v + 0.01 for k, v in seeds.items()}, **models)
    done = run(tmp_path / "a", tmp_path / "b", "--metric", "robust_min")
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()[1:]]
    assert [line[1] for line in lines] == ["fastnet_bn_T1", "fastnet_T1", "fastnetw32_T1"], done.stdout
    # each +1.0 pp with df 2 over its own three seeds: seed 0 of fastnetw32 is 50.00 in both
    assert all(line[3] == "+1.0" and line[7] == "2" for line in lines), done.stdout
    assert lines[2][8:10] == ["s0", "50.00->51.00"], done.stdout


def test_an_unusable_leaderboard_is_one_line(tmp_path):
    board(tmp_path / "good", "std", {(0, "last"): 0.3})
    twice = tmp_path / "twice"
    board(twice, "std", {(0, "last"): 0.3})
    pd.concat([pd.read_csv(twice / "leaderboard.csv")] * 2).to_csv(twice / "leaderboard.csv", index=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "leaderboard.csv").write_text("")
    (tmp_path / "header").mkdir()
    (tmp_path / "header" / "leaderboard.csv").write_text("model,arch,T,head,regime,lr_scale,seed,checkpoint,clean\n")
    (tmp_path / "old").mkdir()
    pd.read_csv(twice / "leaderboard.csv").drop(columns=["regime"]).to_csv(tmp_path / "old" / "leaderboard.csv")
    for folder, phrase in [("twice", "holds one model twice at T=1, regime std"), ("empty", "is empty"),
                           ("header", "has a header and no rows"), ("old", "has no column regime")]:
        done = run(tmp_path / "good", tmp_path / folder)
        assert done.returncode == 2 and done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith(f"error: {tmp_path / folder / 'leaderboard.csv'} {phrase}"), done.stderr


def test_readme_figure_for_fifteen_epochs():
    if not (REPO / "results" / "cpu_fat15" / "leaderboard.csv").is_file():
        pytest.skip("results/cpu_fat15 is not in this checkout")
    done = run(REPO / "results" / "cpu", REPO / "results" / "cpu_fat15", "--T", "1", "--regime", "fat")
    assert done.returncode == 0, done.stderr
    rows = {tuple(line.split()[:2]): line.split()[2:5] for line in done.stdout.splitlines()[1:]}
    assert rows[("robust_min", "@last")] == ["+1.2", "[+0.3,", "+2.2]"]
    assert rows[("clean", "@last")] == ["+2.7", "[+1.9,", "+3.5]"]
    readme = (REPO / "results" / "cpu" / "README.md").read_text()
    assert "`robust_min` @last **+1.2 pp [+0.3, +2.2]** and clean accuracy +2.7 pp [+1.9, +3.5]" in readme


def test_readme_figures_for_two_step_pgd_at():
    if not (REPO / "results" / "cpu_at2" / "leaderboard.csv").is_file():
        pytest.skip("results/cpu_at2 is not in this checkout")
    done = run(REPO / "results" / "cpu_fat15", REPO / "results" / "cpu_at2", "--T", "1", "--regime", "fat",
               "--cand-regime", "at")
    assert done.returncode == 0, done.stderr
    rows = {tuple(line.split()[:2]): " ".join(line.split()[2:5]) for line in done.stdout.splitlines()[1:]}
    readme = " ".join((REPO / "results" / "cpu" / "README.md").read_text().split())
    quoted = {("robust_min", "@last"): "`robust_min` @last {} pp {}", ("robust_min", "@best"): "@best {} {}",
              ("clean", "@last"): "clean accuracy @last **{} pp {}**"}
    for key, text in quoted.items():
        mean, ci = rows[key].split(" ", 1)
        assert text.format(mean, ci) in readme, (key, rows[key])
