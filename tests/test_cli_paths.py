"""The commands besides bench.run (bench.report, bench.tools.*) on bad input and Ctrl-C as bench.run
is: an empty path refused, a usage error in one line, an interrupt or a full disk in one line
(exit 130, 2), no traceback; and bench.run's own: a folder where a job writes a record or its
log is refused before anything is written, --list-* beside a run's flags refused."""
from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import pytest

from bench.run import main
from tests.test_bad_input import TINY as TINY_RUN

TINY = TINY_RUN + """[[grid]]
arch = "fastnetw8"
T = [1, 2]
"""


def listing(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def entry(name: str):
    """The main() of a command, by its module."""
    import importlib
    return importlib.import_module(name).main


def call(main_, argv):
    """main_(argv)'s exit code; what escaped it (a traceback on the command line) as its repr."""
    try:
        return main_(argv)
    except SystemExit as e:
        return e.code
    except (KeyboardInterrupt, OSError) as e:
        return repr(e)


def one_line(capsys, phrase: str, first: str = "error: "):
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith(first) and phrase in err, err


# every path flag of every command but bench.run's (tests/test_bad_input.py has those), with the
# arguments that make the command stop at once on an old harness, which took '' as the working folder
EMPTY = [("bench.report.publish", ["--results", ""]),
         ("bench.report.publish", ["--checkpoints", " "]),
         ("bench.tools.fit_temperature", ["--results", ""]),
         ("bench.tools.fit_temperature", ["--csg-json", ""]),
         ("bench.tools.fit_temperature", ["--plot", ""]),
         ("bench.tools.fit_temperature", ["--json", " "]),
         ("bench.tools.perf", ["--sections", "none", "--data-root", ""]),
         ("bench.tools.recheck", ["--attack", "fgsm", "--results", ""]),
         ("bench.tools.recheck", ["--attack", "fgsm", "--results", "res", "--profile", ""]),
         ("bench.tools.recheck", ["--attack", "fgsm", "--results", "res", "--data-root", ""]),
         ("bench.tools.selfcheck", ["--data-root", ""]),
         ("bench.csg", ["--data-root", ""]),
         ("bench.report.claims", ["--results", ""])]


@pytest.mark.parametrize("module, argv", EMPTY, ids=[f"{m} {a[-2]} {a[-1]!r}" for m, a in EMPTY])
def test_an_empty_path_is_refused_in_one_line(module, argv, tmp_path, monkeypatch, capsys):
    """An empty path was "not given" or Path(''), the working folder: read as a store, written
    into (fit_temperature's --plot '' was no plot at all)."""
    import bench.tools.selfcheck
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench.tools.selfcheck, "run_battery", lambda *a, **k: pytest.fail("the battery ran"))
    assert call(entry(module), argv) == 2
    one_line(capsys, f"argument {argv[-2]}: empty path {argv[-1]!r}: give a folder or file name")
    assert list(tmp_path.iterdir()) == []


# else argparse names those first; the claims read a store before their body runs (the committed one)
REQUIRED = {"bench.tools.recheck": ["--attack", "fgsm", "--results", "res"],
            "bench.report.claims": ["--results", str(Path(__file__).resolve().parents[1] / "results" / "quick")]}
COMMANDS = ["bench.report.publish", "bench.tools.fit_temperature", "bench.tools.perf", "bench.tools.recheck",
            "bench.tools.selfcheck", "bench.csg", "bench.report.claims"]


@pytest.mark.parametrize("module", COMMANDS)
def test_a_usage_error_is_one_line(module, capsys):
    """argparse's own error is its usage block and the error, 2 to 9 lines: bench.run's is one."""
    assert call(entry(module), [*REQUIRED.get(module, []), "--frobnicate"]) == 2
    one_line(capsys, "unrecognized arguments: --frobnicate (see --help)")


# what each command calls once its arguments are parsed: interrupted or out of disk there
BODIES = {"bench.report.publish": "regenerate", "bench.tools.fit_temperature": "run",
          "bench.tools.perf": "run", "bench.tools.recheck": "recheck", "bench.tools.selfcheck": "run_battery",
          "bench.csg": "_main", "bench.report.claims": "claims_from_store"}


@pytest.mark.parametrize("module", COMMANDS)
@pytest.mark.parametrize("stop, code, first, phrase", [
    (KeyboardInterrupt(), 130, "interrupted: ", "rerun"),
    (OSError(errno.ENOSPC, "No space left on device", "/full/.tmp-fit.json.0a1b"), 2, "error: ",
     "No space left on device in /full: what finished is kept"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/r/.tmp-x.json.0a1b", None, "/r/x.json"), 2, "error: ",
     "Is a directory: /r/x.json: move what is in the way"),
], ids=["ctrl-c", "disk full", "folder in the way"])
def test_an_interrupt_or_a_full_disk_is_one_line(module, stop, code, first, phrase, tmp_path, monkeypatch, capsys):
    """Ctrl-C in bench.report and the tools was a KeyboardInterrupt traceback, a full disk an
    OSError one: bench.run says either in one line."""
    import importlib

    def body(*args, **kwargs):
        raise stop
    monkeypatch.setattr(importlib.import_module(module), BODIES[module], body)
    monkeypatch.chdir(tmp_path)
    assert call(entry(module), REQUIRED.get(module, [])) == code
    one_line(capsys, phrase, first)


def test_fit_temperature_says_a_file_is_not_a_results_folder(tmp_path, capsys):
    (tmp_path / "leaderboard.csv").write_text("")
    assert entry("bench.tools.fit_temperature")(["--results", str(tmp_path / "leaderboard.csv")]) == 2
    one_line(capsys, f"--results {tmp_path / 'leaderboard.csv'} is a file, not a results folder")


# --- bench.run ------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, phrase", [
    (["--list-attacks", "--model", "bogus_T1"], "--list-attacks only lists and runs nothing, so --model would be "
                                                "ignored: leave it out"),
    (["--list-models", "--dry-run", "--attack", "bogus"], "so --attack, --dry-run would be ignored: leave them out"),
    (["--list-attacks", "--profile", "smoke"], "so --profile would be ignored"),
])
def test_a_list_refuses_the_flags_of_a_run(argv, phrase, capsys):
    """--list-attacks --model bogus_T1 printed the list and exited 0: the model was never looked at."""
    assert call(main, argv) == 2
    one_line(capsys, phrase)


def test_both_lists_print_both(capsys):
    """--list-models --list-attacks printed the models alone; --profile names the grid listed."""
    assert main(["--list-models", "--list-attacks", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "Profile 'smoke' grid" in out and "Attacks (torchattacks" in out


@pytest.fixture(scope="module")
def tiny_run(mini_root, tmp_path_factory):
    """A finished run of two tiny models, its results and cache, to copy and damage."""
    base = tmp_path_factory.mktemp("tiny_run")
    (base / "p.toml").write_text(TINY)
    argv = ["--profile", str(base / "p.toml"), "--data-root", str(mini_root), "--results", str(base / "out"),
            "--cache", str(base / "cache"), "--no-progress", "--tables-only"]
    assert main(argv) == 0
    return base, argv


def _record_of(results: Path, model: str) -> Path:
    return next(p for p in sorted((results / "records").glob("*.json")) if json.loads(p.read_text())["model"] == model)


@pytest.mark.parametrize("what", ["record", "job log"])
def test_a_folder_where_a_job_writes_a_file_is_refused_before_anything_is_written(what, tiny_run, capsys):
    """A folder named as one of a job's records or its log: planning warned that the record was
    skipped, then the job raised IsADirectoryError (rc 1, a traceback) after the other jobs had
    written theirs."""
    base, argv = tiny_run
    out = base / "out"
    victim = _record_of(out, "fastnetw8_T2") if what == "record" else \
        next((out / "logs").glob("eval__fastnetw8_T2__attacks__*.log"))
    saved = victim.read_bytes()
    victim.unlink()
    victim.mkdir()
    try:
        before = listing(base)
        capsys.readouterr()
        assert call(main, [*argv, "--force"]) == 2  # --force: every evaluation is written again
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1] == (f"error: {'result record' if what == 'record' else 'job log'} {victim} is a folder, where "
                           f"the run writes its {'result record' if what == 'record' else 'job log'}s: move it away, "
                           f"or give another --results folder"), err
        assert listing(base) == before
    finally:
        victim.rmdir()
        victim.write_bytes(saved)


def test_a_folder_made_in_the_way_while_the_run_runs_is_one_line(tiny_run, monkeypatch, capsys):
    """The planner refuses what it finds; a folder made in a file's way after it (by a person, a
    second run) failed the run with an IsADirectoryError traceback."""
    import bench.grid.runner
    from bench.atomic import write_bytes_atomic
    base, argv = tiny_run
    in_the_way = base / "out" / "made_later.json"

    def run(plan, **kwargs):
        in_the_way.mkdir()
        write_bytes_atomic(in_the_way, b"{}")
    monkeypatch.setattr(bench.grid.runner, "run", run)
    try:
        assert call(main, argv) == 2
        err = capsys.readouterr().err
        assert err == f"error: Is a directory: {in_the_way}: move what is in the way and rerun the same command " \
                      f"(what finished is kept: every write is atomic)\n", err
    finally:
        in_the_way.rmdir()


def test_an_empty_cache_variable_is_unset(monkeypatch):
    """BENCH_CACHE='' made Path(''), the working folder: the checkout, when run from it, became
    the cache of decoded data and checkpoints. Empty is unset, as an empty BENCH_DATA is."""
    from bench.data import default_cache_dir
    monkeypatch.setenv("BENCH_CACHE", "")
    assert default_cache_dir() == Path(".cache")
    monkeypatch.setenv("BENCH_CACHE", "/tmp/somewhere")
    assert default_cache_dir() == Path("/tmp/somewhere")


def test_another_eval_batch_size_measures_the_batch_seeded_families_again(tiny_run, tmp_path, capsys):
    """A random start is drawn per batch: at another [eval] batch_size 150 of 200 PGD starts
    differ, yet resume called the old records done. The attack suite is measured again there;
    calibration, which draws nothing per batch, is not."""
    import shutil
    base, argv = tiny_run
    work = tmp_path / "copy"
    shutil.copytree(base, work)
    profile = work / "p.toml"
    profile.write_text(profile.read_text().replace("batch_size = 20", "batch_size = 10"))
    again = [a.replace(str(base), str(work)) for a in argv]
    capsys.readouterr()
    assert main(again) == 0
    records = [json.loads(p.read_text()) for p in (work / "out" / "records").glob("*.json")]
    attacks = [r for r in records if r["family"] == "attack"]
    assert attacks and {r["eval_batch_size"] for r in attacks} == {10}
    capsys.readouterr()
    assert main(again) == 0
    assert "0 to run" in "".join(capsys.readouterr())  # and then they are done
