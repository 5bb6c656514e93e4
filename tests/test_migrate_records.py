"""scripts/migrate_records.py, which moved the committed stores' float64 checks to the ids their
positions give them and re-marked their post-hoc calibration records: on a store of a real run,
undone as an older harness wrote it, it must give back exactly what today's code writes, and the
next run must then find everything done."""
import json
import subprocess
import sys
from pathlib import Path

from bench.run import main
from bench.store import ResultStore, legacy_record_id

REPO = Path(__file__).resolve().parents[1]
PROFILE = """
name = "migrate"
description = "one tiny model: a float64 check on part of its evaluation, and its calibration"
[recipe]
epochs = 2
batch_size = 64
lr = 0.1
train_subset = 500
[eval]
split = "test"
n = 100
batch_size = 100
attacks = ["fgsm"]
views = ["raw"]
fp64_n = 20
[attack.pgd]
steps = 2
[[grid]]
arch = "fastnetw8"
T = [1]
"""


def migrate(*args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "migrate_records.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def _run(mini_root, tmp_path, attacks):
    """PROFILE's grid measured into tmp_path/out: (the folder, the command line to run it again)."""
    (tmp_path / "p.toml").write_text(PROFILE)
    out = tmp_path / "out"
    args = ["--profile", str(tmp_path / "p.toml"), "--data-root", str(mini_root), "--cache", str(tmp_path / "c"),
            "--results", str(out), "--no-progress", "--tables-only", "--attack", attacks]
    assert main(args) == 0
    return out, args


def records(out):
    return {(r["threat"], r["view"]): r for r in ResultStore(out).records()}


def test_an_older_stores_records_come_back_as_todays(mini_root, tmp_path, capsys):
    out, args = _run(mini_root, tmp_path, "fgsm,fp64")
    today = records(out)
    fp64, posthoc = today[("pgd_fp64", "raw")], today[("calibration", "posthoc")]
    assert fp64["positions"]["eval_n"] == 100 and len(fp64["positions"]["index"]) == 20
    assert posthoc["measure_version"] == 2 and today[("calibration", "raw")]["measure_version"] == 1
    # as the harness wrote them before: the check without positions under its old id, post-hoc v1
    folder = out / "records"
    (folder / f"{fp64['id']}.json").unlink()
    old = {k: v for k, v in fp64.items() if k != "positions"}
    old["id"] = legacy_record_id(old)
    (folder / f"{old['id']}.json").write_text(json.dumps(old))
    (folder / f"{posthoc['id']}.json").write_text(json.dumps(dict(posthoc, measure_version=1)))
    capsys.readouterr()
    assert main(args + ["--dry-run"]) == 0
    left = capsys.readouterr().err
    assert "fp64 check" in left and "calibration" in left  # neither counts as done

    assert migrate("fp64-positions", out, "--data-root", mini_root).returncode == 0
    run = migrate("calibration-v2", out)
    assert run.returncode == 0 and "1 of 1 post-hoc calibration records marked version 2" in run.stdout, run.stdout
    assert records(out) == today and len(list(folder.glob("*.json"))) == len(today)
    assert main(args + ["--dry-run"]) == 0
    assert "0 to run" in capsys.readouterr().err


def test_a_posthoc_record_of_an_older_version_is_measured_again(mini_root, tmp_path):
    """A half with no error gave the old post-hoc view a T at the search's bound (nll ~30x the raw):
    its records, version 1, must not count as done where the migration could not vouch for them."""
    out, args = _run(mini_root, tmp_path, "fgsm")
    posthoc = records(out)[("calibration", "posthoc")]
    path = out / "records" / f"{posthoc['id']}.json"
    path.write_text(json.dumps(dict(posthoc, measure_version=1, timestamp="2026-01-01T00:00:00+00:00")))
    assert main(args) == 0
    again = json.loads(path.read_text())
    assert again["measure_version"] == 2 and again["timestamp"] != "2026-01-01T00:00:00+00:00"


def test_the_migration_leaves_what_it_cannot_tell_apart(mini_root, tmp_path):
    """A float64 check without positions beside a newer one under its new name (resume measured it
    again) overwrote that one; beside a whole evaluation on as many images, which it may be the
    check of, it was moved into the larger evaluation. Both now stay as they are, named; a run cut
    off after writing the new file (the same record there) is finished."""
    out, args = _run(mini_root, tmp_path, "fgsm,fp64")
    fp64 = records(out)[("pgd_fp64", "raw")]
    folder = out / "records"
    old = {k: v for k, v in fp64.items() if k != "positions"}
    old["id"] = legacy_record_id(old)
    (folder / f"{old['id']}.json").write_text(json.dumps(old))
    newer = dict(fp64, timestamp="2099-01-01T00:00:00+00:00")
    (folder / f"{fp64['id']}.json").write_text(json.dumps(newer))
    run = migrate("fp64-positions", out, "--data-root", mini_root)
    assert run.returncode == 0 and "holds another measurement already; left as is" in run.stdout, run.stdout
    assert json.loads((folder / f"{fp64['id']}.json").read_text()) == newer and (folder / f"{old['id']}.json").exists()
    (folder / f"{fp64['id']}.json").write_text(json.dumps(fp64))  # as this script writes it, then cut off
    assert "1 of 1 float64 checks without positions moved" in migrate("fp64-positions", out, "--data-root",
                                                                       mini_root).stdout
    assert not (folder / f"{old['id']}.json").exists() and records(out)[("pgd_fp64", "raw")] == fp64
    # a 20-image evaluation beside the 100-image one: the old check on 20 may be either's
    assert main(args[:-1] + ["fgsm", "--n-test", "20"]) == 0
    (folder / f"{fp64['id']}.json").unlink()
    (folder / f"{old['id']}.json").write_text(json.dumps(old))
    run = migrate("fp64-positions", out, "--data-root", mini_root)
    assert "evaluations on [20, 100] images could each be its own; left as is" in run.stdout, run.stdout
    assert (folder / f"{old['id']}.json").exists() and not (folder / f"{fp64['id']}.json").exists()
