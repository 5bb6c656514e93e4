"""Command-line input that was read otherwise than meant: a bare profile name taken for a file of
the working folder, a view given twice run twice, a --param that quietly overrode --eps, a device
string torch cannot use, a script argument ignored. Refusals are one line, exit 2, nothing written
(tests/test_bad_input.py holds the table of them that runs whole command lines)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.cli import make_plan
from bench.errors import BenchError
from bench.profiles import PROFILE_DIR, load_profile
from bench.run import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def _plan(tmp_path: Path, *extra):
    return make_plan(build_parser().parse_args(
        ["--profile", "smoke", "--model", "fastnetw8_T1", "--results", str(tmp_path / "r"), "--cache",
         str(tmp_path / "c"), "--data-root", str(tmp_path / "data"), "--no-progress", *extra]))


@pytest.mark.parametrize("make", ["folder", "file"])
def test_a_bare_profile_name_is_the_shipped_profile_whatever_the_working_folder_holds(make, tmp_path, monkeypatch):
    """--profile smoke beside a folder (or file) named smoke was read as that path: "is a folder",
    or its text parsed as the profile."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke").mkdir() if make == "folder" else (tmp_path / "smoke").write_text("not = [toml")
    profile = load_profile("smoke")
    assert (profile.source, profile.name) == (str(PROFILE_DIR / "smoke.toml"), "smoke")
    with pytest.raises(BenchError, match="is a folder" if make == "folder" else "is not valid TOML"):
        load_profile("./smoke")  # a path still names what is there


def test_a_view_given_twice_runs_once(tmp_path):
    """--view raw,raw ran every attack on the raw view twice, for one record."""
    plan = _plan(tmp_path, "--attack", "fgsm,pgd", "--view", "raw,scaled,raw")
    assert list(plan.views) == ["raw", "scaled"]


def test_a_param_against_a_shared_flag_is_refused_unless_it_agrees(tmp_path):
    """--eps 4/255 --param fgsm.eps=8/255 ran FGSM at 8/255 without a word; a --param of the same
    value, or of an L2 radius (another unit, which --eps does not set), is no conflict."""
    with pytest.raises(BenchError, match=r"^--param fgsm.eps=8/255 and --eps 4/255 give fgsm.eps two values"):
        _plan(tmp_path, "--attack", "fgsm", "--eps", "4/255", "--param", "fgsm.eps=8/255")
    plan = _plan(tmp_path, "--attack", "fgsm,pgd_l2", "--eps", "4/255", "--param", "fgsm.eps=4/255",
                 "--param", "pgd_l2.eps=0.5")
    eps = {a.name: a.eps for a in plan.attacks}
    assert eps == pytest.approx({"fgsm": 4 / 255, "pgd_l2": 0.5})
    plan = _plan(tmp_path, "--attack", "fgsm", "--eps", "8/255", "--param", f"fgsm.eps={8 / 255!r}")  # one value
    assert plan.attacks[0].eps == 8 / 255


@pytest.mark.parametrize("device, phrase", [
    ("cuda:abc", "unknown device 'cuda:abc': use auto, cpu, cuda or cuda:N"),  # was torch's RuntimeError
    ("cuda:7", "--device cuda:7: torch sees"),  # was found at the first tensor moved there
])
def test_a_device_string_torch_cannot_use_is_one_line(device, phrase, tmp_path, monkeypatch, capsys):
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, as far as the check asks
    code = main(["--profile", "smoke", "--model", "fastnetw8_T1", "--results", "r", "--cache", "c", "--data-root",
                 "data", "--no-progress", "--device", device])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and phrase in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_readme_table_refuses_an_argument_it_would_ignore(tmp_path):
    """A second folder was ignored: the table came from the first alone, exit 0."""
    (tmp_path / "leaderboard.csv").write_text("model,T,head,regime,lr_scale,clean\nm_T1,1,plain,std,False,0.5\n")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "readme_table.py"), str(tmp_path), "results/cpu"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: unrecognized arguments: results/cpu"), done.stderr
