"""The scripts and tools around the grid on input they did not expect: scripts/gpu_window.py's bad
paths and manifests (one line, exit 2, before the data is decoded) and its atomic files,
bench/grid/estimate.py's history over stale and duplicated records, scripts/readme_table.py's
order of rows and its unreadable leaderboards."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_data(monkeypatch):
    """bench.data.load_dataset stands in: decoding the data first was minutes before the refusal."""
    import bench.data

    def load_dataset(*args, **kwargs):
        raise AssertionError("the data was loaded before the input was checked")
    monkeypatch.setattr(bench.data, "load_dataset", load_dataset)


def one_line(capsys, phrase: str):
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and phrase in err, err


def test_gpu_window_manifest_refuses_a_missing_folder_before_the_data(tmp_path, capsys, no_data):
    gpu_window = script("gpu_window")
    assert gpu_window.main(["manifest", str(tmp_path / "nodir" / "source.json"), "--data", str(tmp_path)]) == 2
    one_line(capsys, f"no folder {tmp_path / 'nodir'} for the manifest: make it first")
    assert gpu_window.main(["manifest", str(tmp_path), "--data", str(tmp_path)]) == 2
    one_line(capsys, f"{tmp_path} is a folder: give the manifest's file name")
    assert list(tmp_path.iterdir()) == []


def test_gpu_window_manifest_of_missing_data_is_one_line(tmp_path, capsys):
    # the BenchError of bench.data was a traceback and exit 1
    assert script("gpu_window").main(["manifest", str(tmp_path / "source.json"), "--data", str(tmp_path / "no"),
                                      "--cache", str(tmp_path / "cache")]) == 2
    one_line(capsys, f"data root {tmp_path / 'no'} does not exist")
    assert not (tmp_path / "source.json").exists()


def test_gpu_window_writes_its_files_atomically(tmp_path, capsys, monkeypatch):
    """The manifest and provenance.json appear by a rename of a whole file (bench.atomic): a
    reader never meets half of one. A bad manifest leaves provenance.json written, with the error."""
    import bench.data
    gpu_window = script("gpu_window")
    renamed = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renamed.append(Path(dst)), replace(src, dst)))
    monkeypatch.setattr(bench.data, "load_dataset",
                        lambda *a, **k: SimpleNamespace(name="cifar10-mini", fingerprint="f" * 64))
    manifest = tmp_path / "source.json"
    assert gpu_window.main(["manifest", str(manifest), "--data", str(tmp_path)]) == 0
    assert renamed == [manifest] and json.loads(manifest.read_text())["data_fingerprint"] == "f" * 64

    import bench.provenance
    monkeypatch.setattr(bench.provenance, "code_version", lambda: "unknown")  # a copy without .git
    manifest.write_text("not json")
    monkeypatch.setattr(bench.data, "load_dataset", lambda *a, **k: 1 / 0)  # the store scan's error, recorded
    out = tmp_path / "gpu" / "provenance.json"
    assert gpu_window.main(["provenance", "--out", str(out), "--profile", "smoke", "--results", str(tmp_path / "r"),
                            "--cache", str(tmp_path / "cache"), "--device", "cpu", "--manifest", str(manifest),
                            "--grid-rc", "0", "--wall-s", "1", "--grid-wall-s", "1"]) == 0
    prov = json.loads(out.read_text())
    assert renamed[1:] == [out, out] and prov["code_version"] == "unknown", prov
    assert prov["manifest_error"].startswith(f"manifest {manifest} is not a readable JSON file")
    assert prov["progress_error"].startswith("ZeroDivisionError")


@pytest.mark.parametrize("text, phrase", [
    ("not json", "is not a readable JSON file (JSONDecodeError)"),
    ('["a"]', "holds a JSON list, not an object"),
    ('{"code_version": "abc"}', "has no files, tree_sha256"),
    ('{"code_version": "abc", "files": "bench", "tree_sha256": "0"}', "its files are not a list of paths"),
])
def test_gpu_window_code_version_of_a_bad_manifest_is_one_line(text, phrase, tmp_path, capsys, monkeypatch):
    import bench.provenance
    monkeypatch.setattr(bench.provenance, "code_version", lambda: "unknown")  # as on the device: no .git
    (tmp_path / "source.json").write_text(text)
    assert script("gpu_window").main(["code-version", str(tmp_path / "source.json")]) == 2
    one_line(capsys, phrase)


def test_gpu_window_evaluation_time_leaves_out_copies(monkeypatch):
    """A record copied from a twin (same_weights_as) carries its source's wall time: counted, it
    doubled an adversarial model's evaluation time (scripts/grid_cost.py leaves them out too)."""
    import bench.cli
    import bench.grid.jobs
    records = [dict(model="m_fat@last", wall_s=10.0), dict(model="m_fat@last", wall_s=10.0, same_weights_as="k@best"),
               dict(model="m_fat@best", wall_s=10.0)]
    ctx = SimpleNamespace(store=SimpleNamespace(records=lambda: iter(records)))
    jobs = [SimpleNamespace(kind="eval", spec=SimpleNamespace(name=n)) for n in ("m_fat@best", "m_fat@last")]
    monkeypatch.setattr(bench.cli, "make_plan", lambda args: None)
    monkeypatch.setattr(bench.grid.jobs, "Context", lambda plan, log: ctx)
    monkeypatch.setattr(bench.grid.jobs, "build_jobs", lambda c: jobs)
    monkeypatch.setattr(bench.grid.jobs, "is_done", lambda job, c: True)
    progress = script("gpu_window").grid_progress(["--profile", "smoke"])
    assert {m: r["eval_s"] for m, r in progress["models"].items()} == {"m_fat@best": 10.0, "m_fat@last": 10.0}


def test_pace_history_skips_stale_records_and_counts_copies_once(tmp_path):
    """A stale record (an older schema, which ResultStore.table() skips) need not have n, threat or
    view: a KeyError in --dry-run. results/cpu holds cpu_at2's records and sidecars, so --pace-from
    both counted each run and measurement twice."""
    from bench.checkpoints import CheckpointStore
    from bench.grid.estimate import _history
    from bench.store import ResultStore
    source = REPO / "results" / "cpu_at2"
    if not (source / "records").is_dir():
        pytest.skip("results/cpu_at2 is not in this checkout")
    record = next(p for p in sorted((source / "records").glob("*.json"))
                  if not json.loads(p.read_text()).get("same_weights_as"))  # a copy sets no pace
    sidecar = sorted((source / "checkpoints").glob("*.json"))[0]
    for folder in ("own", "other"):
        (tmp_path / folder / "records").mkdir(parents=True)
        (tmp_path / folder / "checkpoints").mkdir()
        shutil.copy(record, tmp_path / folder / "records")
        shutil.copy(sidecar, tmp_path / folder / "checkpoints")
    rec = json.loads(record.read_text())
    # the same measurement, copied under another profile (as results/cpu holds it): one pace
    (tmp_path / "other" / "records" / record.name).write_text(json.dumps(dict(rec, profile="cpu")))
    (tmp_path / "other" / "records" / "stale.json").write_text(json.dumps(dict(schema=1, model="fastnet_T1",
                                                                              wall_s=3.0)))
    own = tmp_path / "own"
    ctx = SimpleNamespace(store=ResultStore(own), ckpts=CheckpointStore(own / "checkpoints"),
                          plan=SimpleNamespace(pace_dirs=(tmp_path / "other",)))
    paces, best_was_last = _history(ctx)
    assert sorted(len(v) for v in paces.values()) == [1, 1], paces
    assert [len(v) for v in best_was_last.values()] == [1]


def leaderboard(folder: Path, rows) -> Path:
    folder.mkdir(parents=True)
    pd.DataFrame([dict(model=m, T=t, head=h, regime=r, lr_scale=lr, clean=0.5) for m, t, h, r, lr in rows]).to_csv(
        folder / "leaderboard.csv", index=False)
    return folder


def readme_table(folder: Path):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "readme_table.py"), str(folder)],
                          capture_output=True, text=True, cwd=REPO)


def test_readme_table_puts_the_bn_head_after_the_plain_arm(tmp_path):
    # board.head is DataFrame.head, a method: comparing it with "bn" was False for every row
    folder = leaderboard(tmp_path / "r", [("m_bn_T1", 1.0, "bn", "std", False), ("m_T2", 2.0, "plain", "std", False),
                                          ("m_T1", 1.0, "plain", "std", False), ("m_T5_lrT", 5.0, "plain", "std", True),
                                          ("m_T1_fat", 1.0, "plain", "fat", False)])
    done = readme_table(folder)
    assert done.returncode == 0, done.stderr
    assert [line.split()[1] for line in done.stdout.splitlines()[2:]] == ["m_T1", "m_T2", "m_bn_T1", "m_T5_lrT",
                                                                          "m_T1_fat"], done.stdout


@pytest.mark.parametrize("text, phrase", [
    ("", "is empty"),
    ("model,T,head,lr_scale,clean\nm_T1,1,plain,False,0.5\n", "has no column regime"),
    ("model,T,head,regime,clean\nm_T1,1,plain,std,0.5\n", "has no column lr_scale"),
    ("model,T,head,regime,lr_scale,clean\n", "has a header and no rows"),
])
def test_readme_table_of_an_unusable_leaderboard_is_one_line(text, phrase, tmp_path):
    (tmp_path / "leaderboard.csv").write_text(text)
    done = readme_table(tmp_path)
    assert done.returncode == 2 and done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: {tmp_path / 'leaderboard.csv'} {phrase}"), done.stderr


@pytest.mark.parametrize("name, argv", [
    ("gpu_window", ["manifest", "", "--data", "data"]),
    ("gpu_window", ["manifest", "source.json", "--data", " "]),
    ("gpu_window", ["manifest", "source.json", "--data", "data", "--cache", ""]),
    ("gpu_estimate", ["--cache", ""]),
    ("gpu_estimate", ["--data-root", " "]),
])
def test_the_gpu_scripts_refuse_an_empty_path_in_one_line(name, argv, tmp_path, capsys, monkeypatch, no_data):
    """An empty --cache was the working folder, an empty --data-root "not given"; a usage error
    was argparse's usage block and the error."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        script(name).main(argv)
    assert stop.value.code == 2
    one_line(capsys, "empty path")
    assert list(tmp_path.iterdir()) == []
