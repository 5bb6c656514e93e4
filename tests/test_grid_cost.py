"""scripts/grid_cost.py, which the cost figures of the cpu profile (README, results/cpu/README.md)
come from: on a folder of sidecars and records with known wall times (one record copied from a
twin)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
XEON = {"device": "cpu Xeon (AVX512, 2 threads)"}
EPYC = {"device": "cpu EPYC (AVX2, 2 threads)"}


def _write(folder: Path, name: str, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(fields))


def test_hours_by_day_and_machine_without_the_copies(tmp_path):
    _write(tmp_path / "checkpoints", "a", timestamp="2026-12-02T10:00:00", wall_s=3600, **XEON)
    _write(tmp_path / "checkpoints", "b", timestamp="2026-12-03T10:00:00", wall_s=1800, **EPYC)
    _write(tmp_path / "records", "r1", timestamp="2026-12-02T11:00:00", wall_s=7200, family="diagnostic",
           threat="autoattack_crosscheck", regime="fat", **XEON)
    _write(tmp_path / "records", "r2", timestamp="2026-12-03T11:00:00", wall_s=900, family="attack",
           threat="apgd_t", regime="std", **EPYC)
    _write(tmp_path / "records", "r3", timestamp="2026-12-03T11:00:00", wall_s=7200, family="diagnostic",
           threat="autoattack_crosscheck", regime="fat", same_weights_as="x@best", **EPYC)
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "grid_cost.py"), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert any(line.split()[:3] == ["2026-12-02", "cpu", "Xeon"] and line.split()[-4:] == ["1.00", "1", "2.00", "1"]
               for line in lines), out
    assert any(line.split()[:3] == ["2026-12-03", "cpu", "EPYC"] and line.split()[-4:] == ["0.50", "1", "0.25", "1"]
               for line in lines), out
    total = next(line for line in lines if line.split()[0] == "total").split()
    assert total[1:5] == ["1.50", "2", "2.25", "2"] and total[-2:] == ["3.75", "h"], out
    assert "1 records copied from a twin with the same weights (their source's wall_s: 2.00 h)" in out
    crosscheck = next(line for line in lines if "diagnostic/autoattack_crosscheck" in line).split()
    assert crosscheck[1:] == ["2.00", "(2.00)"], out
    assert "made under profile" not in out  # one profile: nothing to split


def test_work_copied_in_from_another_profile_is_counted_and_named(tmp_path):
    _write(tmp_path / "checkpoints", "a", timestamp="2026-12-05T10:00:00", wall_s=3600, profile="cpu", **EPYC)
    _write(tmp_path / "checkpoints", "b", timestamp="2026-12-05T10:00:00", wall_s=1800, profile="cpu_at2", **EPYC)
    _write(tmp_path / "records", "r1", timestamp="2026-12-05T11:00:00", wall_s=900, family="attack",
           threat="apgd_t", regime="at", profile="cpu_at2", **EPYC)
    _write(tmp_path / "records", "r2", timestamp="2026-12-05T11:00:00", wall_s=1800, family="attack",
           threat="apgd_t", regime="zoo", profile="cpu", **EPYC)
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "grid_cost.py"), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    total = next(line for line in lines if line.split()[0] == "total").split()
    assert total[1:5] == ["1.50", "2", "0.75", "2"], out
    rows = {line.split()[3]: line.split()[4:] for line in lines if "made under profile" in line}
    assert rows == {"cpu": ["1.00", "1", "0.50", "1"], "cpu_at2": ["0.50", "1", "0.25", "1"]}, out
    # a zoo model is standard, as the grid's estimator counts it: only the PGD-AT record is adversarial
    assert next(line for line in lines if "attack/apgd_t" in line).split()[1:] == ["0.75", "(0.25)"], out


def test_standard_regimes_as_the_grid_estimator_counts_them():
    import importlib.util
    from bench.grid.estimate import STANDARD_REGIMES
    spec = importlib.util.spec_from_file_location("grid_cost", REPO / "scripts" / "grid_cost.py")
    grid_cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grid_cost)
    assert grid_cost.STANDARD_REGIMES == STANDARD_REGIMES


def test_a_folder_without_records_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "grid_cost.py"), str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("where, text, phrase", [
    ("records", "{bad", "is not a readable JSON file"),
    ("records", "[1]", "holds a JSON list, not an object"),
    ("records", json.dumps({"timestamp": "2026-12-05T11:00:00", "threat": "pgd"}), "it has no family"),
    ("records", json.dumps({"timestamp": "2026-12-05T11:00:00", "family": "attack", "threat": "pgd", "wall_s": "9"}),
     "wall_s is '9', not a number"),
    ("checkpoints", json.dumps({"timestamp": 20261205, "wall_s": 9}), "timestamp is 20261205, not text"),
])
def test_an_unreadable_sidecar_or_record_is_named_in_one_line(tmp_path, where, text, phrase):
    # a hand-edited or truncated file stopped the tally with a traceback
    _write(tmp_path / "records", "ok", timestamp="2026-12-05T11:00:00", wall_s=900, family="attack", threat="pgd")
    (tmp_path / where).mkdir(exist_ok=True)
    (tmp_path / where / "bad.json").write_text(text)
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "grid_cost.py"), str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr.startswith(f"error: {tmp_path / where / 'bad.json'}") and phrase in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_records_and_sidecars_without_a_wall_time_are_counted_apart(tmp_path):
    """A record's wall_s may be null (the store accepts it): that was refused as "fix or delete
    it"; one without wall_s was added as 0 h without a word. Both are counted apart, and said."""
    _write(tmp_path / "checkpoints", "a", timestamp="2026-12-05T10:00:00", wall_s=3600, **EPYC)
    _write(tmp_path / "checkpoints", "b", timestamp="2026-12-05T10:00:00", **EPYC)
    _write(tmp_path / "records", "r1", timestamp="2026-12-05T11:00:00", wall_s=900, family="attack", threat="pgd",
           **EPYC)
    _write(tmp_path / "records", "r2", timestamp="2026-12-05T11:00:00", wall_s=None, family="attack", threat="pgd",
           **EPYC)
    _write(tmp_path / "records", "r3", timestamp="2026-12-05T11:00:00", family="attack", threat="pgd", **EPYC)
    _write(tmp_path / "records", "r4", timestamp="2026-12-05T11:00:00", wall_s=None, family="attack", threat="pgd",
           same_weights_as="x@best", **EPYC)
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "grid_cost.py"), str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    total = next(line for line in done.stdout.splitlines() if line.split()[0] == "total").split()
    assert total[1:5] == ["1.00", "1", "0.25", "1"], done.stdout
    assert "not counted: 2 records without wall_s" in done.stdout, done.stdout
    assert "not counted: 1 checkpoints without wall_s" in done.stdout, done.stdout
    assert "1 records copied from a twin with the same weights (their source's wall_s: 0.00 h)" in done.stdout
