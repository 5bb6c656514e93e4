"""Faults, with real processes: a real local Ray cluster whose worker is killed mid-job, the
local executor SIGKILLed at random points and sent a SIGTERM, two grids writing to one store at
once, and bad checkpoints placed in a store. The grid is tiny (two fastnets, four measurement families and a
transfer attack, so jobs have dependencies); one of its training runs is long enough to be
killed in the middle."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.checkpoints import CheckpointStore
from bench.store import ResultStore
from models import parse_name

REPO = Path(__file__).resolve().parents[1]

PROFILE = """
name = "faults"
description = "the fault tests' grid"
[recipe]
epochs = 2
batch_size = 64
lr = 0.05
train_subset = 512
[eval]
split = "test"
n = 50
batch_size = 50
attacks = ["fgsm", "pgd"]
views = ["raw", "scaled"]
transfer = true
corruptions = "generated"
corruption_names = ["gaussian_noise"]
severities = [5]
[attack.pgd]
steps = 3
[[grid]]
arch = "fastnetw8"
T = [10]
[[grid]]
arch = "fastnetw8"
T = [1]
recipe = {epochs = 4, train_subset = 1024}
"""
# Equal tables need equal float arithmetic: one thread per job, as a Ray task with one CPU has.
ENV = {"OMP_NUM_THREADS": "1"}
# What a measurement is; provenance (timestamp, wall time, thread count) is not.
VOLATILE = ["timestamp", "wall_s", "device"]
IDENTITY = ["run_key", "family", "threat", "view", "eps", "corruption", "severity", "magnitude", "n", "params",
            "metric"]


def run_args(root, store, *extra):
    """The arguments of bench.run for the faults grid on ``store``."""
    return ["--profile", str(root / "faults.toml"), "--data-root", (root / "data").read_text(), "--cache",
            str(root / "cache"), "--store", str(store), "--no-progress", "--tables-only", *extra]


def command(root, store, *extra):
    return [sys.executable, "-m", "bench.run", *run_args(root, store, *extra)]


def cli(root, store, *extra, timeout=300):
    return subprocess.run(command(root, store, *extra), cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **ENV))


def measured(store: Path) -> pd.DataFrame:
    t = pd.read_csv(store / "results.csv").drop(columns=VOLATILE)
    return t.sort_values(IDENTITY).reset_index(drop=True)


def check_store(store: Path):
    """Every record parses, every checkpoint matches its sidecar, no measurement twice."""
    table = ResultStore(store).table()  # raises on a torn record
    assert not table.duplicated(IDENTITY).any()
    ckpts = CheckpointStore(store / "checkpoints")
    for sidecar in (store / "checkpoints").glob("*.json"):
        meta = json.loads(sidecar.read_text())
        assert ckpts.verify(parse_name(meta["spec"]["name"]), meta["key"]) is not None
    return table


@pytest.fixture(scope="module")
def grid(mini_root, tmp_path_factory):
    """The grid run once, uninterrupted, by the local executor: the reference table."""
    root = tmp_path_factory.mktemp("faults")
    (root / "faults.toml").write_text(PROFILE)
    (root / "data").write_text(str(mini_root))
    out = cli(root, root / "reference")
    assert out.returncode == 0, out.stderr
    assert "grid: 9 jobs (2 training runs, 7 evaluations); 0 already done" in out.stderr
    assert "[9/9] " in out.stderr and "ETA" in out.stderr
    # a log per job; the transfer attack's names its surrogate
    logs = sorted(p.name for p in (root / "reference" / "logs").iterdir())
    assert len(logs) == 9 and all(name.endswith(".log") for name in logs)
    (transfer,) = (root / "reference" / "logs").glob("eval__fastnetw8_T10__transfer__*.log")
    assert "surrogate fastnetw8_T1" in transfer.read_text()
    # --tables-only: the tables, not the plots and the page
    assert (root / "reference" / "leaderboard.csv").is_file() and "tables in" in out.stderr
    assert not (root / "reference" / "index.html").exists() and not (root / "reference" / "plots").exists()
    return root, measured(root / "reference")


@pytest.fixture(scope="module")
def ray_address():
    """A real local Ray cluster, 2 CPUs, started here and shut down after the module's tests."""
    import ray
    from bench.grid.executor import equal_share_workers
    # as the ray executor starts a local instance: at Ray's default nice 15, beside `make test`'s
    # other workers, this module's first Ray run took 185 s instead of 20
    with equal_share_workers():
        ctx = ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == 0  # the workers' niceness
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


def test_a_local_ray_instance_runs_its_workers_at_normal_niceness(monkeypatch):
    from bench.grid.executor import equal_share_workers
    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    with equal_share_workers():
        assert os.environ["RAY_worker_niceness"] == "0"
    assert "RAY_worker_niceness" not in os.environ
    monkeypatch.setenv("RAY_worker_niceness", "10")  # the user's choice stands
    with equal_share_workers():
        assert os.environ["RAY_worker_niceness"] == "10"
    assert os.environ["RAY_worker_niceness"] == "10"


def run_and_kill_training(root, store, *extra, relative=False):
    """Run the grid on the Ray cluster and SIGKILL the worker that trains fastnetw8_T1 in the
    middle of its training run; returns (process, stdout, stderr, the killed pid). ``relative``:
    the command runs in ``root`` and names the store relative to it (the tasks get it absolute)."""
    args = command(root, store.relative_to(root) if relative else store, "--executor", "ray", *extra)
    proc = subprocess.Popen(args, cwd=root if relative else REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, **ENV))
    # the wait, not a check: under `make test` three workers share two cores with the Ray workers,
    # and the training run to kill can begin tens of seconds in
    killed, deadline = None, time.time() + 300
    while killed is None and time.time() < deadline and proc.poll() is None:
        logs = list((store / "logs").glob("train__fastnetw8_T1__*.log")) if (store / "logs").is_dir() else []
        text = logs[0].read_text() if logs else ""
        if "  training fastnetw8_T1:" in text:
            time.sleep(0.5)  # into the training run (4 epochs on 1,024 images: a few seconds)
            text = logs[0].read_text()
            assert "trained in" not in text, "the run finished before it could be killed"
            killed = int(text.split("attempt by pid ")[1].split()[0])
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.1)
    out, err = proc.communicate(timeout=300)
    assert killed is not None, err
    return proc, out, err, killed


def test_ray_cluster_retries_a_killed_worker_and_matches_local(grid, ray_address):
    """The CLI joins a real Ray cluster; the worker training fastnetw8_T1 is SIGKILLed
    mid-training; Ray retries the task and the table is complete and equal, measurement for
    measurement, to the local executor's."""
    root, reference = grid
    store = root / "ray"
    # a store named relative to the driver's folder: the workers of a `ray start` node resolved it
    # against that node's folder (tests/test_ray_paths.py); each task checks it sees the run's token
    proc, _, err, killed = run_and_kill_training(root, store, "--address", ray_address, relative=True)
    assert proc.returncode == 0, err
    # the run's tokens (the logs' and the checkpoints'), removed at its end
    assert not list((store / "logs").glob(".ray-run-*")) and not list((store / "checkpoints").glob(".ray-run-*"))
    log = next((store / "logs").glob("train__fastnetw8_T1__*.log")).read_text()
    pids = [int(line.split("attempt by pid ")[1].split()[0]) for line in log.splitlines() if "attempt by pid" in line]
    assert len(pids) == 2 and pids[0] == killed and pids[1] != killed  # retried on another worker
    assert log.count("trained in") == 1
    assert "ray: " in err and "[9/9] " in err
    check_store(store)
    pd.testing.assert_frame_equal(measured(store), reference)


def test_ray_worker_lost_for_good_stops_the_run_and_it_resumes_locally(grid, ray_address):
    """With no retries left, a lost worker stops the run with one line that names the job and
    its log; what finished is kept, and a local rerun completes the grid."""
    root, reference = grid
    store = root / "ray_lost"
    proc, _, err, _ = run_and_kill_training(root, store, "--address", ray_address, "--max-retries", "0")
    assert proc.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: job train/fastnetw8_T1/") and "failed on Ray" in last
    assert "train__fastnetw8_T1__" in last and "rerun to resume" in last
    check_store(store)
    out = cli(root, store)
    assert out.returncode == 0, out.stderr
    pd.testing.assert_frame_equal(measured(store), reference)


def test_a_job_no_node_can_hold_stops_the_run_before_it_waits_forever(grid, ray_address):
    """--cpus-per-job 3 on the 2-CPU cluster: every job waited for a node that does not exist,
    with no word, until the run was killed."""
    root, _ = grid
    store = root / "ray_too_big"
    out = cli(root, store, "--executor", "ray", "--address", ray_address, "--cpus-per-job", "3", timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1] == ("error: --cpus-per-job 3: the largest node of the Ray cluster has "
                                                   "2 CPUs, so no job could start: ask for at most 2")
    assert not store.exists()


def test_sigterm_stops_a_ray_run_as_it_stops_a_local_one(grid, ray_address):
    """ray.init installs its own SIGTERM handler (sys.exit(15), no line); the driver puts the
    run's back, so that a SIGTERM once the jobs are under way stops a Ray run with the local run's
    line and exit code 143, and nothing torn."""
    root, _ = grid
    store = root / "ray_term"
    proc = subprocess.Popen(command(root, store, "--executor", "ray", "--address", ray_address), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, **ENV))
    deadline = time.time() + 300  # a job's log: ray.init has returned and the first job begun
    while time.time() < deadline and proc.poll() is None and not list(store.glob("logs/*.log")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == ("terminated (SIGTERM): finished measurements are kept; rerun the "
                                            "same command to resume")
    assert not list(store.rglob(".tmp-*"))
    check_store(store)


def test_sigkill_at_random_points_then_resume(grid):
    """The local executor SIGKILLed at random instants, again and again: after each kill the
    store validates; a final rerun completes the grid with each measurement once, equal to the
    uninterrupted run."""
    root, reference = grid
    store, rng = root / "killed", random.Random(8)
    # one random instant in each third of 3-15 s: startup and data, training, evaluation
    for delay in (rng.uniform(3 + 4 * k, 7 + 4 * k) for k in range(3)):
        proc = subprocess.Popen(command(root, store), cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=dict(os.environ, **ENV))
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if store.is_dir():
            check_store(store)
    out = cli(root, store)
    assert out.returncode == 0, out.stderr
    table = check_store(store)
    assert len(table) == len(reference)
    pd.testing.assert_frame_equal(measured(store), reference)


@pytest.mark.parametrize("signum, raised", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, "Terminated")])
def test_an_interrupt_during_start_up_is_held_until_the_imports_end(signum, raised):
    """A real SIGINT or SIGTERM inside bench.run's start-up block (the imports, the plan) does not
    land in whatever library code is running then: it is raised (KeyboardInterrupt, Terminated)
    when the block ends, and the handlers before it are back; an error of the block itself still
    comes out as itself."""
    import threading
    from bench.errors import BenchError
    from bench.run import Terminated, signals_held
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread alone")
    raised = Terminated if raised == "Terminated" else raised
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    reached = []
    with pytest.raises(raised) as caught:
        with signals_held():
            os.kill(os.getpid(), signum)
            time.sleep(0.05)  # Python runs the handler here, between two bytecodes
            reached.append("after the signal")
    assert reached == ["after the signal"] and caught.type is raised
    assert {sig: signal.getsignal(sig) for sig in before} == before
    with pytest.raises(BenchError):
        with signals_held():
            os.kill(os.getpid(), signum)
            time.sleep(0.05)
            raise BenchError("bad input")
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_sigterm_mid_grid_stops_cleanly_with_143_and_the_rerun_resumes(grid, tmp_path, monkeypatch, capsys):
    """A SIGTERM (a scheduler's time limit) in the middle of the grid, here as the third job
    starts: the run stops with one line and exit code 143, its two finished jobs kept and nothing
    torn; the same command then finishes the grid, equal to the uninterrupted run. In this
    process, the signal sent to itself: a job begins at a known point, not at a guessed instant."""
    import threading
    import bench.grid.executor as executor
    from bench.run import main
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread alone")
    root, reference = grid
    store = tmp_path / "store"
    started, real = [], executor.execute

    def execute(job, ctx, log):
        started.append(job.key)
        if len(started) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises here, in the job, as it would in any code it runs
        return real(job, ctx, log)

    before, threads = signal.getsignal(signal.SIGTERM), torch.get_num_threads()
    torch.set_num_threads(1)  # the reference's arithmetic (ENV): equal tables need it
    try:
        monkeypatch.setattr(executor, "execute", execute)
        assert main(run_args(root, store)) == 143
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1] == ("terminated (SIGTERM): finished measurements are kept; rerun the "
                                                "same command to resume")
        assert signal.getsignal(signal.SIGTERM) is before and len(started) == 3
        assert "[2/9] " in err and "[3/9] " not in err
        assert not list(store.rglob(".tmp-*"))
        check_store(store)
        monkeypatch.undo()
        assert main(run_args(root, store)) == 0
        assert "2 already done" in capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)
    pd.testing.assert_frame_equal(measured(store), reference)


def test_two_grids_write_to_one_store_at_once(grid):
    """Two overlapping grids at once on one store: the shared training run is trained once
    (the other waits on its lock and loads it), the shared measurements are there once, none is
    lost."""
    root, reference = grid
    store = root / "shared"
    procs = [subprocess.Popen(command(root, store, "--model", models), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(os.environ, **ENV))
             for models in ("fastnetw8_T1,fastnetw8_T10", "fastnetw8_T5,fastnetw8_T1")]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert sum(e.count("trained in") for e in errs) == 3  # T1 once, T10, T5
    table = check_store(store)
    assert set(table.model) == {"fastnetw8_T1", "fastnetw8_T5", "fastnetw8_T10"}
    ours = measured(store)
    pd.testing.assert_frame_equal(ours[ours.model != "fastnetw8_T5"].reset_index(drop=True), reference)
    assert len(ours[ours.model == "fastnetw8_T5"]) == len(reference[reference.model == "fastnetw8_T10"])


def _spoiled(grid, tmp_path, capsys, spoil):
    """A copy of the reference store with one checkpoint spoiled: the run stops with one line
    of error and exit 2 before it writes anything (the planner checks every checkpoint first).
    In this process: nothing here needs a process of its own, and each costs ~5 s of imports."""
    from bench.run import main
    root, _ = grid
    store = tmp_path / "store"
    shutil.copytree(root / "reference", store)
    ckpts = store / "checkpoints"
    t1 = {p.suffix: p for p in ckpts.glob("fastnetw8_T1-*") if p.suffix in (".json", ".safetensors")}
    t10 = {p.suffix: p for p in ckpts.glob("fastnetw8_T10-*") if p.suffix in (".json", ".safetensors")}
    spoil(t1, t10)
    before = sorted((p, p.stat().st_mtime_ns) for p in store.rglob("*"))
    capsys.readouterr()
    code = main(run_args(root, store, "--force"))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()  # the progress log, then one line of error
    assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1
    assert sorted((p, p.stat().st_mtime_ns) for p in store.rglob("*")) == before
    return lines[-1]


def test_truncated_checkpoint_exits_2(grid, tmp_path, capsys):
    def spoil(t1, t10):
        t1[".safetensors"].write_bytes(t1[".safetensors"].read_bytes()[:1000])
    assert "is corrupt or truncated (sha256 mismatch): delete fastnetw8_T1-" in _spoiled(grid, tmp_path, capsys, spoil)


@pytest.mark.parametrize("part, phrase", [(".safetensors", "checkpoint weights {} are not a file: delete"),
                                           (".json", "checkpoint sidecar {} cannot be read (Is a directory): delete")])
def test_a_folder_in_place_of_a_checkpoint_file_exits_2(grid, tmp_path, capsys, part, phrase):
    """A folder by a checkpoint file's name stopped the run (and recheck) with an IsADirectoryError."""
    def spoil(t1, t10):
        t1[part].unlink()
        t1[part].mkdir()
        spoil.path = t1[part]
    err = _spoiled(grid, tmp_path, capsys, spoil)
    assert phrase.format(spoil.path) in err, err


def test_checkpoint_of_another_spec_exits_2(grid, tmp_path, capsys):
    def spoil(t1, t10):
        shutil.copyfile(t1[".json"], t10[".json"])
        shutil.copyfile(t1[".safetensors"], t10[".safetensors"])
    assert "belongs to 'fastnetw8_T1'" in _spoiled(grid, tmp_path, capsys, spoil)


class Payload:
    def __reduce__(self):
        return (exec, (f"open({str(PWNED)!r}, 'w').write('x')",))


PWNED = Path("/tmp") / f"tempbench-pwned-{os.getpid()}"


def test_pickle_payload_as_checkpoint_is_refused(grid, tmp_path, capsys):
    """A pickle that runs code when unpickled, placed as a checkpoint with a sidecar that
    vouches for it (an attacker who can write the store can write both): refused, never run."""
    import hashlib
    import pickle

    def spoil(t1, t10):
        t1[".safetensors"].write_bytes(pickle.dumps({"fc.weight": Payload()}))
        meta = json.loads(t1[".json"].read_text())
        meta["weights_sha256"] = hashlib.sha256(t1[".safetensors"].read_bytes()).hexdigest()
        t1[".json"].write_text(json.dumps(meta))
    assert "is not a safetensors file" in _spoiled(grid, tmp_path, capsys, spoil)
    assert not PWNED.exists()
