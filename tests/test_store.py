"""The results store under concurrent writers, writers killed mid-run and a file system that
refuses a write midway (real processes)."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.store import ResultStore, record_id
from tests.builders import make_imagefolder

REPO = Path(__file__).resolve().parents[1]

WRITER = r"""
import sys
from bench.store import ResultStore
root, start, stop, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
store = ResultStore(root)
for i in range(start, stop):
    store.put({"run_key": f"k{i}", "dataset": "d", "split": "test", "n": 10, "subset_seed": 0, "attack_seed": 0,
               "arch": "a", "eps": 0.0,
               "threat": "pgd", "view": "raw", "params": {"eps": i}, "model": f"m{i}", "writer": tag,
               "metrics": {"robust_acc": i / 2000, "clean_acc": 0.5}, "padding": "x" * 20000})
"""


def writer(root, start, stop, tag):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(start), str(stop), tag], cwd=REPO)


def test_rerun_replaces_its_row(tmp_path):
    store = ResultStore(tmp_path)
    rec = {"run_key": "k", "dataset": "d", "split": "test", "n": 5, "subset_seed": 0, "attack_seed": 0,
           "arch": "a", "eps": 0.0,
           "threat": "clean", "view": "none", "params": {}, "model": "m", "metrics": {"accuracy": 0.1}}
    store.put(rec)
    assert store.table().value.tolist() == [0.1]
    # rewritten at once to the same size (within the clock tick of an mtime, maybe on the same
    # inode): the store, which keeps what it parsed, reads it again
    store.put(dict(rec, metrics={"accuracy": 0.2}))
    table = store.table()
    assert len(table) == 1 and table.value.iloc[0] == 0.2
    next(store.records())["model"] = "changed"  # a reader's change to a record it was given stays its own
    assert store.table().model.tolist() == ["m"]
    store.put(dict(rec, n=6, metrics={"accuracy": 0.3}))  # another subset: another measurement
    assert len(store.table()) == 2


def test_two_concurrent_writers_lose_nothing(tmp_path):
    a = writer(tmp_path, 0, 300, "a")
    b = writer(tmp_path, 150, 450, "b")  # 150 measurements written by both
    assert a.wait(120) == 0 and b.wait(120) == 0
    store = ResultStore(tmp_path)
    records = list(store.records())
    assert sorted(r["run_key"] for r in records) == sorted(f"k{i}" for i in range(450))
    assert not list((tmp_path / "records").glob(".tmp-*"))
    table = store.table()
    assert len(table) == 900 and not table.duplicated(["run_key", "metric"]).any()


def test_writer_killed_mid_run_loses_nothing_and_resumes(tmp_path):
    for attempt in range(5):
        p = writer(tmp_path, 0, 2000, "killed")
        time.sleep(1.0 + 0.3 * attempt)
        p.send_signal(signal.SIGKILL)
        p.wait()
        store = ResultStore(tmp_path)
        done = list(store.records())  # every file a reader sees is whole
        assert all(r["metrics"]["robust_acc"] == int(r["run_key"][1:]) / 2000 for r in done)
        if 0 < len(done) < 2000:
            break
    else:
        pytest.skip("the writer never got killed mid-run on this machine")
    assert writer(tmp_path, 0, 2000, "rerun").wait(300) == 0
    records = list(ResultStore(tmp_path).records())
    assert sorted(r["run_key"] for r in records) == sorted(f"k{i}" for i in range(2000))
    files = [f for f in os.listdir(tmp_path / "records") if f.endswith(".json")]
    assert len(files) == 2000


def test_a_damaged_record_is_named(tmp_path):
    from bench.errors import BenchError
    store = ResultStore(tmp_path)
    rec = {"run_key": "k", "dataset": "d", "split": "test", "n": 5, "subset_seed": 0, "attack_seed": 0,
           "arch": "a", "eps": 0.0,
           "threat": "clean", "view": "none", "params": {}, "metrics": {"accuracy": 0.1}}
    store.put(rec)
    store.path(record_id(rec)).write_text('{"run_key": ')
    with pytest.raises(BenchError, match=record_id(rec)):
        store.table()


def test_a_record_copied_under_another_name_counts_once(tmp_path, capsys):
    """A backup of a record beside it (records/backup.json) is the same measurement: read, it
    would be a second row of it in every table. Skipped, with a warning naming the file."""
    store = ResultStore(tmp_path)
    rec = {"run_key": "k", "model": "m", "dataset": "d", "split": "test", "n": 5, "subset_seed": 0, "attack_seed": 0,
           "arch": "a", "eps": 0.0,
           "threat": "clean", "view": "none", "params": {}, "metrics": {"accuracy": 0.1}}
    rid = store.put(rec)
    (tmp_path / "records" / "backup.json").write_text(store.path(rid).read_text())
    assert [r["id"] for r in store.records()] == [rid]
    assert f"backup.json skipped: its identity makes it {rid}.json" in capsys.readouterr().err


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    """A store on a shared file system and a report served to colleagues must be readable by them:
    a record, a checkpoint and its sidecar, and the data cache get 0666 less the umask (not the
    0600 of a temp file)."""

    from bench.checkpoints import CheckpointStore
    from bench.data import load_dataset
    from models import build_model, parse_name
    old = os.umask(umask)
    try:
        store = ResultStore(tmp_path / "results")
        rec = {"run_key": "k", "dataset": "d", "split": "test", "n": 5, "subset_seed": 0, "attack_seed": 0,
               "arch": "a", "eps": 0.0,
               "threat": "clean", "view": "none", "params": {}, "model": "m", "metrics": {"accuracy": 0.1}}
        store.put(rec)
        spec = parse_name("fastnetw8_T0.5")
        ckpts = CheckpointStore(tmp_path / "checkpoints")
        ckpts.save(spec, "k", build_model(spec, 10), {})
        load_dataset(str(make_imagefolder(tmp_path / "toy")), tmp_path / "cache")
    finally:
        os.umask(old)
    files = [store.path(record_id(rec)), *ckpts.paths(spec, "k"), *(tmp_path / "cache" / "data").iterdir()]
    assert len(files) == 4
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: oct(mode) for f in files}


# A process under a file size limit of sys.argv[1] bytes: a write past it fails with EFBIG (the
# signal that would kill the process ignored), as a write to a full disk fails with ENOSPC;
# LIMITED is bench.run under it
LIMIT = r"""
import json, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
"""
LIMITED = LIMIT + "from bench.run import main\nsys.exit(main(sys.argv[2:]))\n"


def test_a_refused_record_write_names_its_folder_and_leaves_no_temp_file(tmp_path):
    """Python's write names no file when it fails: the atomic write names its temp file, so the
    run's one line can say which folder has no room."""
    script = LIMIT + r"""
from bench.errors import disk_stop
from bench.store import ResultStore
try:
    ResultStore(sys.argv[2]).put({"run_key": "k", "dataset": "d", "split": "test", "n": 10, "subset_seed": 0,
                                  "arch": "a", "eps": 0.0,
                                  "attack_seed": 0, "threat": "pgd", "view": "raw", "params": {}, "model": "m",
                                  "metrics": {"robust_acc": 0.1}, "padding": "x" * 20000})
except OSError as e:
    print(json.dumps([e.errno, e.filename, disk_stop(e)]))
"""
    out = subprocess.run([sys.executable, "-c", script, "1024", str(tmp_path)], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    code, filename, line = json.loads(out.stdout)
    assert code == errno.EFBIG and Path(filename).parent == tmp_path / "records"
    assert line.startswith(f"File too large in {tmp_path / 'records'}: what finished is kept")
    assert list((tmp_path / "records").iterdir()) == []


def test_a_full_disk_stops_the_run_in_one_line_and_the_rerun_resumes(mini_data, mini_root, mini_cache, tmp_path):
    """A checkpoint larger than the file system allows (safetensors' own writer fails, under a
    64 KB file size limit: the decoded images are already in the cache; the first such write is
    the training state after epoch 1, in the checkpoint folder's in-progress/): one line that names
    the folder, exit 2, no traceback and no temp file left; with room again the same command
    finishes."""
    store = tmp_path / "s"
    args = ["--profile", "smoke", "--model", "fastnetw8_T1", "--attack", "none", "--data-root", str(mini_root),
            "--cache", str(mini_cache), "--store", str(store), "--no-progress", "--tables-only"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", LIMITED, str(64 * 1024), *args], cwd=REPO, capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: File too large in {store / 'checkpoints' / 'in-progress'}: "), last
    assert "rerun the same command to resume" in last and "Traceback" not in r.stderr
    assert not list(store.rglob(".tmp-*")) and not list(store.rglob("*.safetensors"))
    from bench.run import main  # the rerun in this process: a second process would add its imports
    assert main(args) == 0
    assert len(list(store.rglob("*.safetensors"))) == 1 and ResultStore(store).has_records()


def test_a_write_into_a_folder_another_process_removes_makes_it_again(tmp_path, monkeypatch):
    """A training run that finishes removes its checkpoints' in-progress/ when empty, under its
    own lock only; another run's first snapshot had made the folder and not yet its temp file:
    FileNotFoundError, which on Ray stopped the whole run. The write makes the folder again."""
    import bench.atomic as atomic
    folder = tmp_path / "in-progress"
    real_open, removed = os.open, []

    def open_after_a_tidy(path, *a, **k):
        if not removed:  # the other run's drop_partial, between this write's mkdir and its open
            folder.rmdir()
            removed.append(path)
        return real_open(path, *a, **k)
    monkeypatch.setattr(atomic.os, "open", open_after_a_tidy)
    atomic.write_bytes_atomic(folder / "x.json", b"{}")
    assert removed and (folder / "x.json").read_bytes() == b"{}"
