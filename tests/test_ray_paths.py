"""What the driver hands a Ray task: a joined cluster's workers resolved relative folders against
their node's working folder (the driver then showed "(no results)"), a node that does not see the
driver's folders wrote where the driver never reads, and a GPU worker trained under another
checkpoint key than the driver planned (bf16 is in the key), so every resume ran every job again.
The functions the executor calls, here; tests/test_faults.py runs them on a real Ray cluster."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench.errors import BenchError
from bench.grid import executor
from models import parse_name


def _plan(*extra):
    from bench.cli import make_plan
    from bench.run import build_parser
    return make_plan(build_parser().parse_args(
        ["--profile", "smoke", "--model", "fastnetw8_T1", "--attack", "none", "--executor", "ray", *extra]))


@pytest.mark.parametrize("from_env", [False, True])
def test_the_plan_a_ray_task_receives_has_absolute_paths(tmp_path, monkeypatch, from_env):
    """Folders typed relative (and the defaults: results/<profile>, BENCH_CACHE, BENCH_DATA) reach
    the tasks absolute, resolved in the driver's folder; the driver's own plan keeps them as typed."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pace" / "records").mkdir(parents=True)
    (tmp_path / "pace" / "records" / "r.json").write_text("{}")
    if from_env:
        monkeypatch.setenv("BENCH_CACHE", "envcache")
        monkeypatch.setenv("BENCH_DATA", "envdata")
        plan = _plan("--pace-from", "pace")
    else:
        # --store alone: a Ray run refuses --results beside it (the records would go where a node may not see)
        plan = _plan("--store", "store", "--cache", "cache", "--data-root", "data", "--pace-from", "pace")
    assert not plan.results_dir.is_absolute()  # the driver's messages quote the paths as typed
    sent = executor.plan_for_workers(plan)
    folders = [sent.results_dir, sent.cache_dir, *sent.pace_dirs, Path(sent.data_root), sent.log_dir,
               sent.checkpoint_dir] + ([] if from_env else [sent.store_dir])
    assert all(Path(f).is_absolute() for f in folders), folders
    assert sent.results_dir == tmp_path / ("results/smoke" if from_env else "store")
    assert sent.cache_dir == tmp_path / ("envcache" if from_env else "cache")
    assert Path(sent.data_root) == tmp_path / ("envdata" if from_env else "data")
    assert sent.pace_dirs == (tmp_path / "pace",)
    assert sent.log_dir == tmp_path / ("results/smoke" if from_env else "store") / "logs"


def test_a_task_on_a_node_that_does_not_see_the_driver_folder_stops_with_a_clear_error(tmp_path):
    """The node's own disk has no such token: the task stops before writing a log or a record
    there, with a line that says what to do."""
    logs = tmp_path / "results" / "logs"
    token = executor.run_token(logs, "run1")
    with pytest.raises(BenchError, match=r"^this Ray node \(.+\) does not see .*/results/logs that the driver writes: "
                                         r"give --store a folder on a shared file system that every node mounts"):
        executor.check_token(str(token))
    assert not logs.exists()
    logs.mkdir(parents=True)
    token.write_text("driver\n")
    executor.check_token(str(token))  # seen: the task goes on


@pytest.mark.parametrize("flags, gpu_precision", [
    (("--device", "cuda"), True),  # the driver knows the jobs get a GPU: they train in bf16, under that key
    (("--device", "auto", "--gpus-per-job", "1"), True),
    (("--device", "auto", "--address", "127.0.0.1:6379"), False),  # a joined cluster: not known, the CPU's
])
def test_the_driver_and_a_gpu_worker_agree_on_the_checkpoint_key(tmp_path, monkeypatch, flags, gpu_precision):
    """The driver plans on the CPU; a worker that gets a GPU runs on cuda with the precision the
    driver decided, so its checkpoints and records carry the keys the driver's resume looks for."""
    from bench.grid.models import run_key
    for name in ("BENCH_BF16", "BENCH_COMPILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    driver = _plan("--results", "res", *flags)
    assert driver.device == torch.device("cpu")
    on_gpu = executor.on_worker(executor.plan_for_workers(driver), gpu=True)  # as _ray_job adjusts it
    assert on_gpu.device.type == "cuda"
    data, spec = SimpleNamespace(fingerprint="f" * 64, num_classes=10), parse_name("fastnetw8_T1")
    assert run_key(spec, on_gpu, data) == run_key(spec, driver, data)
    assert on_gpu.accel() == driver.accel() and driver.accel().bf16 == driver.accel().compile == gpu_precision


def test_workers_train_at_the_precision_the_drivers_environment_set(tmp_path, monkeypatch):
    """BENCH_BF16=1 in the driver's shell, a cluster started from another (a joined cluster's
    workers have `ray start`'s environment): the workers read their own and trained in float32
    under another key than the driver planned, so every resume trained and measured again."""
    from bench.grid.models import run_key
    monkeypatch.setenv("BENCH_BF16", "1")
    monkeypatch.chdir(tmp_path)
    driver = _plan("--results", "res", "--device", "auto", "--address", "127.0.0.1:6379")
    data, spec = SimpleNamespace(fingerprint="f" * 64, num_classes=10), parse_name("fastnetw8_T1")
    planned = run_key(spec, driver, data)
    sent = executor.plan_for_workers(driver)
    monkeypatch.delenv("BENCH_BF16")  # the worker's environment
    for gpu in (False, True):
        worker = executor.on_worker(sent, gpu=gpu)
        assert worker.accel().bf16 and run_key(spec, worker, data) == planned


def test_a_failed_jobs_traceback_is_in_its_log(tmp_path):
    """The driver's error line names the job's log; a Ray worker's stderr stays on its node, so
    the log must hold the failure (it held the attempt line alone)."""
    from bench.grid.jobs import Job, JobLog
    log = JobLog(tmp_path, Job("eval/fastnetw8_T1/attacks/abc", "eval", parse_name("fastnetw8_T1")))

    def run():
        raise RuntimeError("the checkpoint is gone\nsecond line")
    with pytest.raises(RuntimeError):
        executor.logging_failures(log, run)
    text = log.path.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: the checkpoint is gone" in text
    assert executor.logging_failures(log, lambda: 7) == 7


def test_a_node_must_see_the_checkpoints_too(tmp_path, monkeypatch):
    """Without --store, checkpoints go to the cache: on a cluster, each node's own disk, where an
    evaluation trained its own copy of a model another node had trained (and every resume again)
    while the log folder's token said the node shared the driver's folders. Each task now checks
    a token in the checkpoint folder too."""
    monkeypatch.chdir(tmp_path)
    plan = _plan("--results", "res", "--cache", "c", "--address", "127.0.0.1:6379")
    assert executor.token_folders(plan, plan.log_dir) == [tmp_path / "res" / "logs", tmp_path / "c" / "checkpoints"]
    with_store = _plan("--store", "shared", "--address", "127.0.0.1:6379")
    assert executor.token_folders(with_store, with_store.log_dir) == [tmp_path / "shared" / "logs",
                                                                       tmp_path / "shared" / "checkpoints"]
