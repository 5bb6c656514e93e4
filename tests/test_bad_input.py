"""Bad input, table-driven: each case exits with code 2 and one line that names the setting or
file, and writes nothing (a checksummed listing of the working folder, the results and the
cache, before and after, is equal). Cases run ``bench.run.main`` in this process; the data
cache is decoded once per data tree and copied in, so only the divergence case trains.

Then the results store's side: a record that parses but has the wrong shape is skipped with one
warning naming it, and a report that cannot be written (a file-size limit, as on a full disk)
stops in one line with the records and the previous reports untouched."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import pandas as pd
import pytest

from attacks.corruptions import EXTRA
from bench.run import main

REPO = Path(__file__).resolve().parents[1]
SMOKE = (REPO / "bench" / "profiles" / "smoke.toml").read_text()

# a profile whose one model trains in a second: 128 images, one epoch, fgsm on 20 test images
TINY = """[recipe]
epochs = 1
batch_size = 32
lr = 0.1
train_subset = 128
[eval]
n = 20
batch_size = 20
attacks = ["fgsm"]
views = ["raw"]
"""


def tiny(grid: str = '[[grid]]\narch = "fastnetw8"\nT = [1]\n', **replace) -> str:
    text = TINY
    for old, new in replace.items():
        text = text.replace(old, new)
    return text + grid


@dataclass
class Case:
    id: str
    args: List[str]
    phrase: str
    profile: Optional[str] = None  # TOML text, run as --profile p.toml
    root: str = "mini"  # the data tree: mini (2000 train, 500 test), small (200, 100), one_class, two_class,
    # three_class
    may_write: List[str] = field(default_factory=list)  # path prefixes a failing run may leave (a job log)


CASES = [
    # the command line
    Case("unknown model", ["--model", "resnet81_T5"], "unknown model 'resnet81_T5'"),
    Case("malformed model", ["--model", "resnet18_5"], "malformed model name"),
    Case("zero T", ["--model", "resnet18_T0"], "positive"),
    Case("nan T", ["--model", "resnet18_Tnan"], "expected _T<temperature>"),
    Case("newline in name", ["--model", "fastnetw8_T1\n_s2"], "expected _T<temperature>", tiny()),
    Case("name too long", ["--model", "fastnetw8_T1e290"], "characters long"),
    Case("tiny T, long name", ["--model", "fastnetw8_T1e-300"], "characters long"),
    Case("seed overflow", ["--model", "fastnet_T1_s99999999999999999999999"], "seed must be a whole number in 0.."),
    Case("negative eps", ["--eps=-8/255"], "eps must be a non-negative"),
    Case("negative eps, spaced", ["--eps", "-8/255"], "eps must be a non-negative"),
    Case("negative alpha, spaced", ["--alpha", "-.5/255"], "alpha must be a positive"),
    Case("negative sweep radius, spaced", ["--eps-sweep", "-1/255,8/255"], "eps sweep values must lie in (0, 1]"),
    Case("eps above 1", ["--eps", "2"], "eps = 2 is more than 1", tiny()),
    Case("alpha above 1", ["--alpha", "2"], "alpha = 2 is more than 1", tiny()),
    Case("eps above 1 by --param", ["--param", "pgd_margin.eps=3"], "pgd_margin: eps = 3 is more than 1", tiny()),
    # a --param the run would ignore, or give two values
    Case("param of an attack not run", ["--param", "square.n_queries=10"],
         "--param square.n_queries=10: square is not among this run's attacks (fgsm): add it with --attack", tiny()),
    Case("shift-n without shifts", ["--shift-n", "50"], "--shift-n sizes the corruptions and natural transforms, "
         "which this run does not measure", tiny()),
    Case("view without attacks", ["--attack", "none", "--view", "raw"], "--view picks the views the attacks see, "
         "and this run has no attack", tiny()),
    Case("param twice", ["--param", "fgsm.eps=2/255", "--param", "fgsm.eps=4/255"],
         "--param fgsm.eps is given twice (2/255, 4/255): give it once", tiny()),
    # --eps set fgsm.eps, and the --param after it won without a word
    Case("param against a shared flag", ["--eps", "8/255", "--param", "fgsm.eps=4/255"],
         "--param fgsm.eps=4/255 and --eps 8/255 give fgsm.eps two values: leave one out", tiny()),
    # the reference AutoAttack ran at its own budget while the record named torchattacks'
    Case("cross-check at two budgets", ["--attack", "crosscheck", "--param", "autoattack.steps=1"],
         "autoattack and autoattack_ref differ in steps (1 vs ", tiny()),
    Case("eps sweep above 1", ["--eps-sweep", "8/255,2"], "eps sweep values must lie in (0, 1]", tiny()),
    Case("zero steps", ["--steps", "0"], "steps must be >= 1"),
    Case("unknown attack", ["--attack", "pgdd"], "unknown attack 'pgdd'"),
    Case("empty attack list", ["--attack", ","], "--attack ',' names nothing", tiny()),
    Case("empty view list", ["--view", ","], "--view ',' names nothing", tiny()),
    Case("empty model list", ["--model", ","], "--model ',' names nothing"),
    Case("empty corruption list", ["--corruptions", ","], "--corruptions ',' names nothing", tiny()),
    Case("unknown view", ["--view", "logits"], "unknown view"),
    Case("unknown profile", ["--profile", "quik"], "unknown profile"),
    Case("profile typo", ["--profile", "typo.toml"], "unknown key epohcs"),
    Case("no data root", ["--data-root", "no/such/folder"], "does not exist"),
    Case("results under a file", ["--results", "a_file/results"], "cannot be written"),
    # os.access says yes to root in /proc, where no folder can be made: that was a traceback, exit 1
    *([Case("results in /proc", ["--results", "/proc/tempbench"], "results folder /proc/tempbench cannot be written"),
       Case("cache in /proc", ["--cache", "/proc/tempbench"], "cache folder /proc/tempbench cannot be written")]
      if Path("/proc/self").is_dir() else []),
    Case("n-test 0", ["--n-test", "0"], "--n-test must be >= 2"),
    Case("n-test 1", ["--n-test", "1"], "--n-test must be >= 2 (the post-hoc temperature is cross-fitted"),
    Case("shift-n 0", ["--shift-n", "0"], "--shift-n must be >= 1"),
    Case("unknown device", ["--device", "tpu"], "unknown device"),
    Case("severity 6", ["--attack", "corruptions", "--severities", "6"], "severities must lie in 1..5"),
    Case("severity words", ["--attack", "corruptions", "--severities", "high"], "--severities takes whole numbers"),
    Case("corruption typo", ["--corruptions", "fgo"], "unknown corruption 'fgo' (did you mean fog?)"),
    Case("corruption as attack", ["--attack", "fog"], "a corruption: --attack corruptions --corruptions fog"),
    # it said "download CIFAR-10-C", which would not pair with this copy of the data either
    Case("real corruptions on another copy", ["--attack", "corruptions", "--corruption-source", "real"],
         "real CIFAR-10-C pairs only with the original cifar10 data, not cifar10-mini: use corruptions = "
         "\"generated\"", tiny()),
    Case("source without corruptions", ["--attack", "pgd", "--corruption-source", "real"],
         "--corruption-source needs corruptions"),
    Case("unknown flag", ["--frobnicate"], "unrecognized arguments"),
    Case("unknown executor", ["--executor", "dask"], "invalid choice: 'dask'"),
    Case("address without ray", ["--address", "auto"], "--address is for --executor ray"),
    Case("zero cpus per job", ["--executor", "ray", "--cpus-per-job", "0"], "--cpus-per-job must be > 0"),
    Case("retries without ray", ["--max-retries", "2"], "--max-retries is for --executor ray"),
    Case("cpus per job without ray", ["--cpus-per-job", "2"], "--cpus-per-job is for --executor ray"),
    Case("negative retries", ["--executor", "ray", "--max-retries", "-1"], "--max-retries must be >= 0"),
    Case("no ray cluster", ["--executor", "ray", "--address", "127.0.0.1:1"], "no Ray cluster answers at 127.0.0.1:1"),
    Case("ray address", ["--executor", "ray", "--address", "nohost"], "is not HOST:PORT"),
    Case("store url", ["--store", "s3://bucket/grid"], "--store takes a folder"),
    Case("pace from an empty folder", ["--pace-from", "no/such/results", "--dry-run"],
         "--pace-from no/such/results: no records in no/such/results/records"),
    # found only when the reports moved in, after every job, and told to "free space there"
    Case("a file where the report's plots go", ["--results", "plots_a_file"],
         "plots_a_file/plots is a file where the report writes its plots folder: move it away", tiny()),
    Case("a folder where the report's page goes", ["--results", "page_a_folder"],
         "page_a_folder/index.html is a folder where the report writes its index.html", tiny()),
    Case("store under a file", ["--store", "a_file/store"], "store folder a_file/store cannot be written"),
    # a worker's records went to --results, which a node may not see (its check looks in the store alone)
    Case("results beside store on ray", ["--executor", "ray", "--store", "store"],
         "--results with --store under --executor ray: give --store alone on a cluster", tiny()),
    Case("gpus per job on the cpu", ["--executor", "ray", "--device", "cpu", "--gpus-per-job", "1"],
         "--gpus-per-job 1 with --device cpu: the jobs run on the CPU", tiny()),
    # an empty path was "not given": --results '' wrote into results/<profile> (from the checkout, its
    # committed results), --store '' made the working folder the store; a blank one made a folder ' '
    *[Case(f"empty {flag} {value!r}", [flag, value], f"argument {flag}: empty path {value!r}: give a folder", tiny())
      for flag in ("--results", "--store", "--cache", "--data-root", "--profile") for value in ("", " ")],
    Case("eps of another attack", ["--attack", "pgd", "--eps=-1"], "--eps: eps must be a non-negative"),
    Case("steps of another attack", ["--attack", "fgsm", "--steps", "abc"], "--steps: steps must be a whole number"),
    # a flag no chosen attack takes was ignored: the run was made at the attacks' defaults, exit 0
    Case("eps of no chosen attack", ["--attack", "pgd_l2", "--eps", "0.25"],
         "--eps applies to the Linf attacks, none of which is chosen: use --param pgd_l2.eps=0.25", tiny()),
    Case("alpha of no chosen attack", ["--attack", "natural", "--alpha", "1/255"],
         "--alpha applies to the Linf attacks, none of which is chosen: leave --alpha out", tiny()),
    Case("steps of no chosen attack", ["--attack", "fgsm", "--steps", "5"],
         "--steps applies to the attacks with steps, none of which is chosen: leave --steps out", tiny()),
    Case("profile a folder", ["--profile", "."], "profile . is a folder: give a profile name"),
    Case("all and names", ["--model", "all,fastnetw8_T1"], "'all' (the profile's grid) cannot be combined"),
    # --model file:PATH (net.safetensors: an untrained fastnetw8): values its run would divide by
    Case("file of no path", ["--model", "file:", "--arch", "fastnetw8"],
         "'file:' names no file: give --model file:PATH"),
    Case("file T inf", ["--model", "file:net.safetensors", "--arch", "fastnetw8", "--temperature", "inf"],
         "--temperature must be a finite number > 0"),
    Case("file T nan", ["--model", "file:net.safetensors", "--arch", "fastnetw8", "--temperature", "nan"],
         "--temperature must be a finite number > 0"),
    Case("file std 0", ["--model", "file:net.safetensors", "--arch", "fastnetw8", "--mean", "0.5,0.5,0.5",
                        "--std", "0,0,0"], "--std values must be > 0"),
    Case("file mean nan", ["--model", "file:net.safetensors", "--arch", "fastnetw8", "--mean", "nan,0.5,0.5",
                           "--std", "1,1,1"], "--mean takes finite numbers"),
    Case("file std inf", ["--model", "file:net.safetensors", "--arch", "fastnetw8", "--mean", "0.5,0.5,0.5",
                          "--std", "1,inf,1"], "--std takes finite numbers"),
    # a zoo model was run without them, unsaid; beside a file model, the line said they were for file models
    Case("zoo model with file flags", ["--model", "robustbench:Standard", "--temperature", "5", "--arch", "fastnetw8"],
         "--arch, --temperature are for --model file:PATH, and every model it lists must then be a file: model; "
         "robustbench:Standard is not"),
    Case("file flags beside a registry model", ["--model", "fastnetw8_T1,file:net.safetensors", "--arch", "fastnetw8"],
         "--arch is for --model file:PATH, and every model it lists must then be a file: model; fastnetw8_T1 is not"),
    # profile values of the wrong type or range: the message names the key
    Case("epochs 1.5", [], "[recipe]: epochs must be a whole number, got 1.5", tiny(**{"epochs = 1": "epochs = 1.5"})),
    Case("epochs string", [], "[recipe]: epochs must be a whole number, got '1'",
         tiny(**{"epochs = 1": 'epochs = "1"'})),
    Case("eval batch 0", [], "[eval]: batch_size must be >= 1, got 0",
         tiny(**{"batch_size = 20": "batch_size = 0"})),
    Case("T strings", [], "T must be a positive number or \"auto\"", tiny('[[grid]]\narch = "fastnetw8"\nT = ["abc"]\n')),
    Case("T bool", [], "T must be a positive number", tiny('[[grid]]\narch = "fastnetw8"\nT = true\n')),
    Case("bn_head string", [], "bn_head must be true or false",
         tiny('[[grid]]\narch = "fastnetw8"\nbn_head = "yes"\n')),
    Case("models string", [], "models must be a list of model names", tiny('[[grid]]\nmodels = "fastnetw8_T1"\n')),
    Case("zoo model in a profile", [], "models lists 'robustbench:Standard', which a profile's grid cannot hold",
         tiny('[[grid]]\nmodels = ["robustbench:Standard"]\n')),
    Case("recipe 5", [], "[recipe] must be a table", "recipe = 5\n"),
    Case("grid recipe 5", [], "recipe must be a table", tiny('[[grid]]\narch = "fastnetw8"\nrecipe = 5\n')),
    Case("grid 5", [], "grid must be [[grid]] tables", "grid = 5\n" + tiny("")),
    Case("grid entry 5", [], "[[grid]] entry 1 must be a table", "grid = [5]\n" + tiny("")),
    Case("eval 5", [], "[eval] must be a table", "eval = 5\n[recipe]\nepochs = 1\n"),
    Case("attack 5", [], "attack must be [attack.<name>] tables", "attack = 5\n" + tiny()),
    Case("attack table 5", [], "[attack.pgd] must be a table", "[attack]\npgd = 5\n" + tiny()),
    Case("profile attack key typo", [], "profile p.toml [attack.pgd]: attack pgd has no parameter stepz",
         tiny() + "[attack.pgd]\nstepz = 3\n"),
    Case("profile eps above 1", [], "[attack.pgd]: pgd: eps = 2 is more than 1", tiny() + "[attack.pgd]\neps = 2\n"),
    Case("at_eps above 1", [], "at_eps must lie in (0, 1]", tiny(**{"epochs = 1": "epochs = 1\nat_eps = 8"})),
    Case("nesterov without momentum", [], "nesterov = true needs momentum > 0",  # torch refused it mid-grid
         tiny(**{"epochs = 1": "epochs = 1\nmomentum = 0.0"})),
    Case("views string", [], "[eval]: views must be a list of strings", tiny(**{'views = ["raw"]': 'views = "raw"'})),
    Case("train_subset -5", [], "train_subset must be >= 1", tiny(**{"train_subset = 128": "train_subset = -5"})),
    Case("train_subset 0", [], "train_subset must be >= 1", tiny(**{"train_subset = 128": "train_subset = 0"})),
    Case("eval n 0", [], "[eval]: n must be >= 2", tiny(**{"n = 20": "n = 0"})),
    Case("eval n 1", [], "[eval]: n must be >= 2", tiny(**{"n = 20": "n = 1"})),
    Case("subset seed overflow", [], "subset_seed must lie in 0..",
         tiny(**{"n = 20": "n = 20\nsubset_seed = 99999999999999999999999"})),
    Case("grid seed overflow", [], "seed must be a whole number in 0..",
         tiny('[[grid]]\narch = "fastnetw8"\nseeds = [99999999999999999999999]\n')),
    Case("profile name a path", [], "name must be letters", 'name = "../elsewhere"\n' + tiny()),
    # "." and ".." passed the name check: results/. is results/ itself, results/.. the working folder
    *[Case(f"profile name {n!r}", [], "name must be letters, digits, '.', '_' or '-', not starting with '.'",
           f'name = "{n}"\n' + tiny()) for n in (".", "..")],
    Case("profile file named ..toml", ["--profile", "..toml"], "'..toml' starts with '.': rename the file"),
    # an empty list where its feature is on switched the measurement off, without a word
    Case("no views with attacks", [], "[eval] views = [] leaves the attacks no view",
         tiny(**{'views = ["raw"]': "views = []"})),
    Case("no severities with corruptions", [], "[eval] severities = [] measures no corruption",
         tiny(**{'views = ["raw"]': 'views = ["raw"]\ncorruptions = "generated"\nseverities = []'})),
    Case("no severities, corruptions asked for", ["--attack", "corruptions"], "severities = [] measures no corruption",
         tiny(**{'views = ["raw"]': 'views = ["raw"]\nseverities = []'})),
    Case("no sweep attacks with a sweep", [], "[eval] sweep_attacks = [] leaves the eps sweep no attack",
         tiny(**{'views = ["raw"]': 'views = ["raw"]\neps_sweep = ["8/255"]\nsweep_attacks = []'})),
    Case("no sweep attacks, sweep asked for", ["--eps-sweep", "8/255"], "sweep_attacks = [] leaves the eps sweep",
         tiny(**{'views = ["raw"]': 'views = ["raw"]\nsweep_attacks = []'})),
    # an L2 attack swept over Linf radii (8/255 as an L2 radius is 16x under the usual 0.5)
    Case("L2 attack in the eps sweep", [], "[eval] sweep_attacks: 'pgd_l2' is an L2 attack; the eps sweep's radii",
         tiny(**{'views = ["raw"]': 'views = ["raw"]\neps_sweep = ["8/255"]\nsweep_attacks = ["pgd_l2"]'})),
    Case("split", [], "split must be train or test", tiny(**{"n = 20": 'n = 20\nsplit = "val"'})),
    # sizes, checked once the data is loaded and before any job writes
    Case("train_subset above the split", ["--profile", "smoke"], "train_subset = 512 does not fit the 200 training",
         root="small"),
    Case("eval n above the split", ["--n-test", "600"], "[eval] n (or --n-test) = 600 is more than the 500 images"),
    Case("profile n above the split", [], "[eval] n (or --n-test) = 800 is more than the 500",
         tiny(**{"n = 20": "n = 800"})),
    Case("shift_n above the split", [], "[eval] shift_n (or --shift-n) = 900 is more than the 500",
         tiny(**{"n = 20": "n = 20\nshift_n = 900"})),
    Case("--shift-n above the split", ["--shift-n", "700"], "[eval] shift_n (or --shift-n) = 700 is more than the 500"),
    Case("default at_holdout", ["--model", "fastnet_T5_at"], "at_holdout = 1000 held-out images leave none of the 512"),
    Case("batch above the training set", [], "batch_size = 32 is more than the 20 training images",
         tiny(**{"train_subset = 128": "train_subset = 20"})),
    Case("batch above what at_holdout leaves", [], "batch_size = 32 is more than the 28 training images left",
         tiny('[[grid]]\narch = "fastnetw8"\nregime = "fat"\nrecipe = {at_holdout = 100}\n')),
    Case("transfer surrogate recipe", [], "recipe of fastnetw8_T1:",
         tiny('[[grid]]\narch = "fastnetw8"\nT = [5]\nrecipe = {train_subset = 64}\n',
              **{"n = 20": "n = 20\ntransfer = true", "train_subset = 128": "train_subset = 16"})),
    Case("one class", ["--profile", "smoke"], "has 1 class (airplane)", root="one_class"),
    # an attack whose loss needs more classes than the data has: it failed at its first evaluation
    # job, after the training run had saved its checkpoint
    Case("apgd_t on three classes", ["--profile", "smoke"],
         "apgd_t needs at least 4 classes (dlr_targeted loss) and three_class has 3", root="three_class"),
    Case("apgd_dlr on two classes", ["--attack", "apgd_dlr"], "apgd_dlr needs at least 3 classes (dlr loss) and "
         "two_class has 2", tiny(), root="two_class"),
    # a run that starts, and stops at its first epoch: nothing saved but its job log and lock
    Case("diverged", [], "fastnetw8_T0.000000000000000000000000000001: training diverged at epoch 1",
         tiny('[[grid]]\narch = "fastnetw8"\nT = [1e-30]\n'),
         may_write=["out/logs", "cache/checkpoints/fastnetw8_T0.000000000000000000000000000001-"]),
    # a finite mean loss (1e27) up to the step that made the weights NaN: they were saved, and the
    # grid stopped in the calibration of their NaN logits with a traceback
    Case("diverged weights", [], "fastnetw8_T1: training diverged at epoch 1 (mean loss",
         tiny(**{"lr = 0.1": "lr = 1e6"}), may_write=["out/logs", "cache/checkpoints/fastnetw8_T1-"]),
]


def listing(root: Path) -> dict:
    """Every folder and file under ``root`` with the sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _tree(src: Path, dst: Path, classes, per_split):
    for split, n in per_split.items():
        for cls in classes:
            (dst / split / cls).mkdir(parents=True)
            for f in sorted((src / split / cls).iterdir())[:n]:
                shutil.copyfile(f, dst / split / cls / f.name)
    return dst


@pytest.fixture(scope="module")
def roots(mini_root, tmp_path_factory):
    """The data trees with a warm cache each (decoded here once, copied into each case)."""
    from bench.data import load_dataset
    base = tmp_path_factory.mktemp("bad_input")
    classes = sorted(p.name for p in (mini_root / "train").iterdir())
    trees = {"mini": mini_root,
             "small": _tree(mini_root, base / "small", classes, {"train": 20, "test": 10}),
             "one_class": _tree(mini_root, base / "one_class", classes[:1], {"train": 200, "test": 50}),
             "two_class": _tree(mini_root, base / "two_class", classes[:2], {"train": 100, "test": 20}),
             "three_class": _tree(mini_root, base / "three_class", classes[:3], {"train": 200, "test": 40})}
    out = {}
    for name, root in trees.items():
        cache = base / f"cache_{name}"
        load_dataset(str(root), cache)
        out[name] = (root, cache / "data")
    return out


def warm_cache(warm: Path, workdir: Path) -> None:
    """The decoded cache, hard-linked: 7 MB a case, 75 cases, were half a GB written and deleted
    each run. A case that wrote into a cache file in place would change its sha256 in listing()."""
    shutil.copytree(warm, workdir / "cache" / "data", copy_function=os.link)


@pytest.fixture(scope="module")
def net_file(tmp_path_factory) -> Path:
    """An untrained fastnetw8 as a safetensors file, for --model file:PATH."""
    from safetensors.torch import save_file

    from models import build_model, parse_name
    path = tmp_path_factory.mktemp("net") / "net.safetensors"
    save_file(build_model(parse_name("fastnetw8_T1"), num_classes=10).state_dict(), str(path))
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch, net_file):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "typo.toml").write_text(SMOKE.replace("epochs", "epohcs"))
    (tmp_path / "..toml").write_text(tiny())  # no name = key: named by its stem, "."
    (tmp_path / "a_file").write_text("")
    (tmp_path / "plots_a_file").mkdir()
    (tmp_path / "plots_a_file" / "plots").write_text("")
    (tmp_path / "page_a_folder" / "index.html").mkdir(parents=True)
    os.link(net_file, tmp_path / "net.safetensors")
    return tmp_path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, workdir, roots, monkeypatch, capsys):
    root, warm = roots[case.root]
    monkeypatch.setenv("BENCH_DATA", str(root))
    warm_cache(warm, workdir)
    args = ["--profile", "smoke", "--results", "out", "--cache", "cache", "--no-progress"]
    if case.profile is not None:
        (workdir / "p.toml").write_text(case.profile)
        args += ["--profile", "p.toml"]
    before = listing(workdir)
    try:
        code = main(args + case.args)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    # the error is the last line (a run that started logged its progress before it)
    assert err and err[-1].startswith("error: ") and case.phrase in err[-1], err
    assert not any(line.startswith(("Traceback", "error: ")) for line in err[:-1]), err
    changed = {k for k, v in listing(workdir).items() if before.get(k) != v}
    allowed = {k for k in changed if any(k.startswith(p) or p.startswith(k + "/") for p in case.may_write)}
    assert changed == allowed, sorted(changed - allowed)


def test_tables_only_runs_beside_a_file_named_plots(workdir, roots, monkeypatch, capsys):
    """--tables-only writes no plots: the file is in nobody's way, and is left as it was."""
    root, warm = roots["mini"]
    monkeypatch.setenv("BENCH_DATA", str(root))
    warm_cache(warm, workdir)
    (workdir / "p.toml").write_text(tiny())
    assert main(["--profile", "p.toml", "--results", "plots_a_file", "--cache", "cache", "--no-progress",
                 "--tables-only"]) == 0, capsys.readouterr().err
    assert (workdir / "plots_a_file" / "plots").read_text() == ""
    assert (workdir / "plots_a_file" / "leaderboard.csv").exists()


def test_a_tilde_after_an_equals_sign_means_the_home_folder(workdir, roots, monkeypatch, capsys):
    """bash expands no ~ in --results=~/out: the run wrote into a folder named ~ here, and the
    report of ~/out found nothing there."""
    from bench.report.publish import main as report_main
    root, warm = roots["mini"]
    home = workdir / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("BENCH_DATA", str(root))
    warm_cache(warm, home)
    (workdir / "p.toml").write_text(tiny())
    assert main(["--profile=p.toml", "--results=~/out", "--cache=~/cache", "--no-progress", "--tables-only"]) == 0, \
        capsys.readouterr().err
    assert (home / "out" / "leaderboard.csv").exists() and not (workdir / "~").exists()
    assert len(list((home / "cache" / "checkpoints").glob("*.safetensors"))) == 1
    (home / "out" / "leaderboard.csv").unlink()
    assert report_main(["--results=~/out"]) == 0, capsys.readouterr().err
    assert (home / "out" / "leaderboard.csv").exists() and not (workdir / "~").exists()


def test_an_attack_at_eps_0_leaves_clean_accuracy_and_its_sweep_takes_the_default_steps(workdir, roots,
                                                                                     monkeypatch, capsys):
    """--eps 0 (an attack that should change nothing) stopped every run with an eps sweep in a
    ZeroDivisionError: the sweep scales each radius's step by alpha / eps of the attack."""
    root, warm = roots["mini"]
    monkeypatch.setenv("BENCH_DATA", str(root))
    warm_cache(warm, workdir)
    (workdir / "p.toml").write_text(tiny(**{'attacks = ["fgsm"]': 'attacks = ["pgd"]\neps_sweep = ["4/255"]'}))
    assert main(["--profile", "p.toml", "--results", "out", "--cache", "cache", "--no-progress", "--tables-only",
                 "--eps", "0"]) == 0, capsys.readouterr().err
    rows = pd.read_csv(workdir / "out" / "results.csv")
    clean = rows[(rows.threat == "clean") & (rows.metric == "accuracy")].value.item()
    pgd = rows[(rows.threat == "pgd") & (rows.metric == "robust_acc")].sort_values("eps")
    assert pgd.eps.tolist() == [0, pytest.approx(4 / 255)] and pgd.value.iloc[0] == clean
    assert json.loads(pgd.params.iloc[1])["alpha"] == pytest.approx(1 / 255)  # 2/255 at 8/255, the defaults


def test_the_size_check_runs_before_the_data_is_trained_on(workdir, roots, monkeypatch, capsys):
    """The smoke profile on the 200-image tree used to log 'training ...' and fail after writing
    logs and a lock; now nothing past the data summary is logged."""
    root, warm = roots["small"]
    monkeypatch.setenv("BENCH_DATA", str(root))
    assert main(["--profile", "smoke", "--results", "out", "--cache", "cache", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "  training " not in err and "grid:" not in err and not (workdir / "out").exists()


@pytest.mark.parametrize("args, phrase", [
    (["--n-test", "600"], "[eval] n (or --n-test) = 600 is more than the 100 images"),
    (["--shift-n", "700", "--attack", "natural"], "[eval] shift_n (or --shift-n) = 700 is more than the 100"),
])
def test_a_size_error_stops_before_the_data_is_decoded(args, phrase, workdir, roots, monkeypatch, capsys):
    """With a cold cache the sizes are checked on the tree's file listing: the decoded data (177 MB
    for CIFAR-10) used to be written to the cache before the error."""
    root, _ = roots["small"]
    monkeypatch.setenv("BENCH_DATA", str(root))
    before = listing(workdir)
    assert main(["--profile", "smoke", "--results", "out", "--cache", "cache", "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and phrase in err[0], err
    assert listing(workdir) == before


def test_ray_auto_without_a_cluster_stops_before_anything_is_written(workdir, roots, monkeypatch, capsys):
    """--address auto with no cluster to find (none running here, no RAY_ADDRESS, no `ray start`
    recorded: Ray's own lookup is told so, whatever else runs on this machine) stopped only when the
    jobs were to start, after the data was decoded into the cache."""
    pytest.importorskip("ray")
    from ray._private import services
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: frozenset())
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: None)
    root, _ = roots["small"]
    monkeypatch.setenv("BENCH_DATA", str(root))
    before = listing(workdir)
    assert main(["--profile", "smoke", "--results", "out", "--cache", "cache", "--no-progress", "--executor", "ray",
                 "--address", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --address auto found no running Ray cluster"), err
    assert listing(workdir) == before


@pytest.mark.parametrize("blocked, args, phrase", [
    ("out/records", [], "records folder out/records cannot be written"),
    ("out/logs", [], "job log folder out/logs cannot be written"),
    ("cache/checkpoints", [], "checkpoint folder cache/checkpoints cannot be written"),
    ("out/checkpoints", ["--profile", "keep.toml"], "checkpoint folder out/checkpoints cannot be written"),
    ("store/logs", ["--store", "store"], "job log folder store/logs cannot be written"),
], ids=["records", "logs", "cache checkpoints", "kept checkpoints", "store logs"])
def test_a_file_in_place_of_a_folder_the_run_writes_stops_before_anything_is_written(
        blocked, args, phrase, workdir, roots, monkeypatch, capsys):
    """A file where the run's records, job logs or checkpoints go (its folder writable) was found
    only once a model had trained and its checkpoint was written: a traceback, exit 1."""
    root, warm = roots["mini"]
    monkeypatch.setenv("BENCH_DATA", str(root))
    warm_cache(warm, workdir)
    (workdir / "p.toml").write_text(tiny())
    (workdir / "keep.toml").write_text("keep_checkpoints = true\n" + tiny())
    (workdir / blocked).parent.mkdir(exist_ok=True)
    (workdir / blocked).write_text("")
    before = listing(workdir)
    assert main(["--profile", "p.toml", "--results", "out", "--cache", "cache", "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {phrase}") and f"move the file {blocked} away" in err[0], err
    assert listing(workdir) == before


def test_a_bad_folder_from_the_environment_is_named_as_such(workdir, monkeypatch, capsys):
    """$BENCH_DATA and $BENCH_CACHE stand in for --data-root and --cache: an error about the
    folder one of them gave says so, or the user looks for a flag they never typed."""
    monkeypatch.setenv("BENCH_DATA", str(workdir / "nowhere"))
    assert main(["--profile", "smoke", "--results", "out", "--no-progress", "--dry-run"]) == 2
    assert f"error: data root {workdir / 'nowhere'} (from $BENCH_DATA) does not exist" in capsys.readouterr().err
    monkeypatch.setenv("BENCH_CACHE", "a_file")
    before = listing(workdir)
    assert main(["--profile", "smoke", "--results", "out", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: cache folder a_file (from $BENCH_CACHE) cannot be written (a_file is not a writable "
                   "folder): pass --cache DIR or set BENCH_CACHE to a writable folder"], err
    assert listing(workdir) == before


@pytest.mark.parametrize("var", ["BENCH_COMPILE", "BENCH_BF16"])
def test_a_bad_accelerator_setting_stops_before_anything_is_written(var, workdir, roots, monkeypatch, capsys):
    """BENCH_COMPILE / BENCH_BF16 (bench/accel.py) are read at plan time, not when training starts."""
    root, warm = roots["mini"]
    monkeypatch.setenv("BENCH_DATA", str(root))
    warm_cache(warm, workdir)
    monkeypatch.setenv(var, "maybe")
    assert main(["--profile", "smoke", "--results", "out", "--cache", "cache", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {var}='maybe'") and not (workdir / "out").exists()


def test_bf16_attacks_asked_for_stop_the_run_rather_than_be_ignored(workdir, roots, monkeypatch, capsys):
    """BENCH_ATTACK_BF16=1 asks for a view of the model the evaluator never builds: the run made
    float32 attacks without a word."""
    root, warm = roots["mini"]
    monkeypatch.setenv("BENCH_DATA", str(root))
    monkeypatch.setenv("BENCH_ATTACK_BF16", "1")
    assert main(["--profile", "smoke", "--results", "out", "--cache", "cache", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: BENCH_ATTACK_BF16=1: the evaluator does not run attacks in bf16 (its early stops would "
                   "be decided on bf16 logits, up to 1.6 pp weaker; its records would not say so): unset it"], err
    assert not (workdir / "out").exists()


# --- the results store and the reports ------------------------------------------------------------

def record(model: str, T: float, **over) -> dict:
    rec = {"run_key": f"key-{model}", "dataset": "d", "split": "test", "n": 10, "subset_seed": 0, "attack_seed": 0,
           "threat": "clean", "view": "none", "params": {}, "model": model, "arch": "fastnet", "T": T,
           "head": "plain", "regime": "std", "lr_scale": False, "seed": 0, "checkpoint": "last",
           "feature_dim": 64, "family": "clean", "num_classes": 10, "source": "d:test", "eps": 0.0,
           "steps": 0, "metrics": {"accuracy": 0.5 + T / 100}, "code_version": "abc", "torch_version": "2",
           "device": "cpu", "timestamp": "2025-01-01T00:00:00", "wall_s": 1.0}
    rec.update(over)
    return rec


BAD_RECORDS = {
    "a list": [],
    "an empty object": {},
    "no identity": {"schema": 2},
    "a text metric": dict(record("fastnet_T9", 9.0, run_key="bad"), schema=2, metrics={"accuracy": "abc"}),
    "a text n": dict(record("fastnet_T9", 9.0, run_key="bad"), schema=2, n="ten"),
    "schema text": {"schema": "2"},
    # fields the tables compare, sort or format (a TypeError in every report, the claims too)
    "a text T": dict(record("fastnet_T9", 9.0, run_key="bad"), schema=2, T="abc"),
    "a null T": dict(record("fastnet_T9", 9.0, run_key="bad"), schema=2, T=None),
    "a T of 0": dict(record("fastnet_T9", 9.0, run_key="bad"), schema=2, T=0),  # the plots' log axis
    "a text eps": dict(record("fastnet_T9", 9.0, run_key="bad"), schema=2, eps="8/255"),
    "params a list": dict(record("fastnet_T9", 9.0, run_key="bad"), schema=2, params=[]),
    "a numeric view": dict(record("fastnet_T9", 9.0, run_key="bad"), schema=2, view=1),
}


def test_malformed_records_are_skipped_with_one_warning_each(tmp_path, capsys):
    from bench.report.publish import main as report_main
    from bench.store import IDENTITY, ResultStore, record_id
    store = ResultStore(tmp_path)
    rid = store.put(record("fastnet_T1", 1.0))
    bad = {}
    for i, (what, content) in enumerate(BAD_RECORDS.items()):
        # under the name its identity gives, where it has one: else the name alone has it skipped
        named = isinstance(content, dict) and all(k in content for k in IDENTITY)
        content = dict(content, run_key=f"bad{i}") if named else content  # one file each
        bad[what] = store.path(record_id(content) if named else f"{i:020d}")
        bad[what].write_text(json.dumps(content))
    # names that are not readable files: an IsADirectoryError stopped every report with a traceback
    bad["a folder"] = store.path("f" * 20)
    bad["a folder"].mkdir()
    bad["a link to nothing"] = store.path("e" * 20)
    bad["a link to nothing"].symlink_to(tmp_path / "gone.json")
    assert report_main(["--results", str(tmp_path)]) == 0  # make report
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(bad), err  # one warning per file, however often the report reads the store
    for what, path in bad.items():
        assert any(line.startswith(f"warning: result record {path} skipped") for line in err), what
    tidy = pd.read_csv(tmp_path / "results.csv")
    assert list(tidy.model) == ["fastnet_T1"] and (tmp_path / "index.html").is_file()
    # the planner reads a malformed record as missing: the measurement is made again
    assert store.get(f"{0:020d}") is None and store.get(rid)["metrics"] == {"accuracy": 0.51}
    # the claims read the same store the same way
    from bench.report.claims import main as claims_main
    capsys.readouterr()
    assert claims_main(["--results", str(tmp_path)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(bad) and all(line.startswith("warning: result record ") for line in err), err


@pytest.mark.parametrize("over, problem", [
    ({"bits": "00"}, "bits is not 10 images' results (4 hex digits)"),  # cut short
    ({"bits": "zz00"}, "bits is not 10 images' results"),
    ({"bits": "0000", "positions": {"index": [0, 1], "eval_n": 20}}, "positions is not 10 image indices"),
    ({"bits": "0000", "positions": {"index": list(range(10, 20)), "eval_n": 12}}, "positions is not 10 image"),
    # fields the tables group by, take the latest of or add up: each was a TypeError in every report
    ({"bits": "0000", "timestamp": 123}, "timestamp is 123, not a string or null"),
    ({"bits": "0000", "device": ["cpu"]}, "device is ['cpu'], not a string or null"),
    ({"bits": "0000", "code_version": ["abc"]}, "code_version is ['abc'], not a string or null"),
    ({"bits": "0000", "measure_version": None}, "measure_version is None, not a number"),
    ({"bits": "0000", "wall_s": [1]}, "wall_s is [1], not a number or null"),
    ({"bits": "0000", "best_epoch": "3"}, "best_epoch is '3', not a whole number or null"),
    # json reads NaN back as a float; an accuracy of 3 took a square root of a negative in the claims
    ({"bits": "0000", "metrics": {"robust_acc": float("nan"), "clean_acc": 0.5}}, "robust_acc=nan is not a finite"),
    ({"bits": "0000", "metrics": {"robust_acc": 0.3, "clean_acc": 3}}, "clean_acc=3 is not a fraction in [0, 1]"),
    ({"bits": "0000", "autoattack_warnings": [1]}, "autoattack_warnings is [1], not a list of strings"),
    ({"bits": "0000", "reliability": {"confidence": [0.5], "accuracy": [], "count": [3]}}, "reliability is"),
    ({"bits": "0000", "n": float("nan")}, "its n is not a number"),  # json writes NaN, and reads it back
], ids=["bits short", "bits not hex", "positions short", "positions past eval_n", "timestamp a number",
        "device a list", "code_version a list", "measure_version null", "wall_s a list", "best_epoch text",
        "robust_acc NaN", "clean_acc 3", "warnings of numbers",
        "reliability of two lengths", "n NaN"])
def test_per_image_results_that_do_not_fit_n_are_skipped(over, problem, tmp_path, capsys):
    """An attack record whose bits were not n images' (a record edited or cut short by hand), or
    with a field of another type than the tables take, stopped every report with a numpy shape
    error or a TypeError; it is skipped with one warning, as a record of bad JSON is."""
    from bench.report.publish import main as report_main
    from bench.store import ResultStore, pack_bits, record_id
    store = ResultStore(tmp_path)
    store.put(record("fastnet_T1", 1.0))
    attack = dict(family="attack", view="raw", eps=8 / 255, steps=10, metrics={"robust_acc": 0.3, "clean_acc": 0.5})
    store.put(record("fastnet_T1", 1.0, threat="pgd", bits=pack_bits([1, 0, 0] * 3 + [1]), **attack))
    bad = dict(record("fastnet_T1", 1.0, threat="apgd_t", **attack), **over, schema=2)
    store.path(record_id(bad)).write_text(json.dumps(bad))
    assert report_main(["--results", str(tmp_path)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: result record")]
    assert len(err) == 1 and err[0].startswith(f"warning: result record {store.path(record_id(bad))} skipped: ")
    assert problem in err[0] and (tmp_path / "index.html").is_file()


def test_a_metric_not_measured_is_no_row(tmp_path, capsys):
    """null is a record's "not measured" (the harness writes a NaN so): a null robust_acc became a
    NaN row of the tidy table, and the leaderboard's idxmin over no number stopped every report."""
    from bench.report.publish import main as report_main
    from bench.store import ResultStore
    store = ResultStore(tmp_path)
    store.put(record("fastnet_T1", 1.0))
    attack = dict(family="attack", view="raw", eps=8 / 255, steps=10)
    store.put(record("fastnet_T1", 1.0, threat="pgd", metrics={"robust_acc": None, "clean_acc": 0.5}, **attack))
    assert report_main(["--results", str(tmp_path)]) == 0
    assert "skipped" not in capsys.readouterr().err  # the record is kept, its metric left out
    tidy = pd.read_csv(tmp_path / "results.csv")
    assert set(tidy[tidy.threat == "pgd"].metric) == {"clean_acc"}


def test_records_without_their_arch_or_eps_are_skipped(tmp_path, capsys):
    """Without its arch (a TypeError labelling the model's family) or its eps (a ValueError filing
    the attack), a record stopped every report."""
    from bench.report.publish import main as report_main
    from bench.store import ResultStore, record_id
    store = ResultStore(tmp_path)
    store.put(record("fastnet_T1", 1.0))
    paths = []
    for key in ("arch", "eps"):
        bad = dict(record("fastnet_T1", 1.0, threat="pgd", family="attack", view="raw", eps=8 / 255, steps=10,
                          params={"lacks": key}, metrics={"robust_acc": 0.3, "clean_acc": 0.5}), schema=2)
        del bad[key]
        paths.append(store.path(record_id(bad)))
        paths[-1].write_text(json.dumps(bad))
    assert report_main(["--results", str(tmp_path)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: result record")]
    assert err == [f"warning: result record {path} skipped: it lacks {key}; delete it and rerun that measurement"
                   for path, key in sorted(zip(paths, ("arch", "eps")))]


def test_a_check_record_short_of_a_metric_counts_as_no_check(tmp_path, capsys):
    """A float64 check without one of its accuracies (a record cut short by hand) stopped every
    report with a KeyError, or an idxmin over no number where another record had the column."""
    from bench.report.publish import main as report_main
    from bench.store import ResultStore
    store = ResultStore(tmp_path)
    store.put(record("fastnet_T1", 1.0))
    store.put(record("fastnet_T1", 1.0, threat="pgd", family="attack", view="raw", eps=8 / 255, steps=10,
                     metrics={"robust_acc": 0.3, "clean_acc": 0.5}, bits="0000"))
    store.put(record("fastnet_T1", 1.0, threat="pgd_fp64", family="check", view="raw", eps=8 / 255, steps=10,
                     params={"attack": "pgd", "eps": 8 / 255, "steps": 10},
                     metrics={"robust_acc_fp32": 0.3, "clean_acc_fp32": 0.5, "clean_acc_fp64": 0.5}))
    assert report_main(["--results", str(tmp_path)]) == 0, capsys.readouterr().err
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert "fp64_gap" not in board or board.fp64_gap.isna().all()  # no check counted: no gap


FSIZE_LIMIT = 20_000  # bytes: the tables fit, a figure does not


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes past ``limit`` bytes fail (EFBIG), as writes on a full disk do (ENOSPC). Only the
    soft limit is lowered, so it can be put back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_reports_are_replaced_only_once_all_are_written(tmp_path, capsys):
    """A report that cannot be written (here past a file-size limit, which fails writes as a full
    disk does) stops with one line; the records and the previous reports stay as they were."""
    from bench.report.publish import main as report_main
    from bench.store import ResultStore
    store = ResultStore(tmp_path)
    for t in (1.0, 5.0):
        store.put(record(f"fastnet_T{t:g}", t))
    assert report_main(["--results", str(tmp_path)]) == 0
    store.put(record("fastnet_T50", 50.0))  # the next report differs
    records = listing(tmp_path / "records")
    reports = {k: v for k, v in listing(tmp_path).items() if not k.startswith("records")}
    assert any(len(p.read_bytes()) > FSIZE_LIMIT for p in (tmp_path / "plots").glob("*.png"))
    capsys.readouterr()
    with file_size_limit(FSIZE_LIMIT):
        code = report_main(["--results", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: cannot write the reports in {tmp_path}") and "records" in err[0]
    assert listing(tmp_path / "records") == records
    assert {k: v for k, v in listing(tmp_path).items() if not k.startswith("records")} == reports
    # with room again, the same command completes the report
    assert report_main(["--results", str(tmp_path)]) == 0
    assert "fastnet_T50" in set(pd.read_csv(tmp_path / "results.csv").model)
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize("keep, left_out", [
    # a ZeroDivisionError drawing accuracy against T, with no panel to draw
    (lambda r: r["threat"] in ("brightness", "pgd_fp64", "autoattack_crosscheck"), "acc_vs_T.png"),
    # a ValueError colouring the severity curves of a family with no benchmark corruption
    (lambda r: r["threat"] == "corruption" and r["corruption"] in EXTRA, "corruptions_vs_severity_"),
], ids=["no clean records", "extra corruptions alone"])
def test_a_store_copied_in_part_gets_its_report(keep, left_out, tmp_path, capsys):
    """Parts of the quick store (records copied, or deleted, by hand) stopped bench.report with a
    traceback; each gets its page, without the plot it has nothing for."""
    import json
    from bench.report.publish import main as report_main
    (tmp_path / "records").mkdir()
    for path in sorted((REPO / "results" / "quick" / "records").glob("*.json")):
        if keep(json.loads(path.read_text())):
            shutil.copyfile(path, tmp_path / "records" / path.name)
    assert len(list((tmp_path / "records").iterdir())) > 20
    assert report_main(["--results", str(tmp_path)]) == 0, capsys.readouterr().err
    assert (tmp_path / "index.html").exists() and not list((tmp_path / "plots").glob(left_out + "*"))


def test_a_report_blocked_by_a_file_is_named_before_it_is_built(tmp_path, capsys):
    """A file where the report puts its plots folder failed after the whole report was built, with
    "free space there"; now it is named first, and nothing is written."""
    from bench.report.publish import main as report_main
    from bench.store import ResultStore
    ResultStore(tmp_path).put(record("fastnet_T1", 1.0))
    (tmp_path / "plots").write_text("mine")
    before = listing(tmp_path)
    assert report_main(["--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'plots'} is a file where the report writes its plots folder: move it away, "
                   f"or give another --results folder"]
    assert listing(tmp_path) == before


@pytest.mark.parametrize("make, phrase", [(None, "no such folder"), ("file", "a file, not a folder")])
def test_a_checkpoints_folder_that_is_none_is_named_before_the_report(make, phrase, tmp_path, capsys):
    """bench.report --checkpoints FILE said "no such folder" of a file that is there."""
    from bench.report.publish import main as report_main
    from bench.store import ResultStore
    ResultStore(tmp_path / "r").put(record("fastnet_T1", 1.0))
    if make:
        (tmp_path / "ckpt").write_text("")
    before = listing(tmp_path)
    assert report_main(["--results", str(tmp_path / "r"), "--checkpoints", str(tmp_path / "ckpt")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --checkpoints {tmp_path / 'ckpt'}: {phrase} (the kept checkpoints of the run, e.g. "
        f"results/cpu/checkpoints for a run with --store results/cpu)"]
    assert listing(tmp_path) == before


def test_two_reports_published_into_one_folder_at_once_both_succeed(tmp_path):
    """Two runs finishing at once (two processes) each removed the stale plots of an earlier grid:
    one unlinked a file the other had just removed and stopped with exit 2 and 'free space there'."""
    import subprocess
    import sys
    from bench.store import ResultStore
    store = ResultStore(tmp_path)
    for t in (1.0, 5.0):
        store.put(record(f"fastnet_T{t:g}", t))
    (tmp_path / "plots").mkdir()
    for i in range(10_000):  # enough that the two prunes overlap
        (tmp_path / "plots" / f"old_{i:05d}.png").write_bytes(b"")
    cmd = [sys.executable, "-m", "bench.report.publish", "--results", str(tmp_path)]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    done = [(*p.communicate(timeout=120), p.returncode) for p in procs]
    for out, err, code in done:
        assert code == 0 and err == "" and out.strip() == str(tmp_path / "index.html"), err
    assert not list((tmp_path / "plots").glob("old_*")) and list((tmp_path / "plots").glob("*.png"))
    assert set(pd.read_csv(tmp_path / "results.csv").model) == {"fastnet_T1", "fastnet_T5"}
    assert not list(tmp_path.glob(".tmp-*"))


# --- the tools ------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, phrase", [
    (["--sections", "bogus", "--repeats", "0"], "--sections 'bogus': unknown bogus"),
    (["--sections", ","], "--sections ',': names none"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--train-images", "64"], "--train-images must be at least one training batch (128 images), got 64"),
    (["--train-images", "0"], "--train-images must be at least one training batch"),
    (["--eval-images", "0"], "--eval-images must be >= 1"),
    (["--model", "resnet81_T5"], "unknown model 'resnet81_T5'"),
    (["--train-images", "5000"], "--train-images 5000 does not fit cifar10-mini"),
    (["--sections", "corruptions", "--train-images", "1000", "--eval-images", "100", "--corruption-images", "600"],
     "--corruption-images 600 does not fit"),
])
def test_perf_arguments_are_checked_before_the_data_is_decoded(args, phrase, mini_root, tmp_path, monkeypatch,
                                                                capsys):
    """`python -m bench.tools.perf` did nothing with exit code 0 for an unknown section or zero
    repeats, raised a ValueError for fewer training images than a batch, and said the rest only
    once the data was decoded into the cache."""
    from bench.tools.perf import main as perf_main
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    assert perf_main(["--data-root", str(mini_root), *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and phrase in err, err
    assert not list(tmp_path.iterdir())
