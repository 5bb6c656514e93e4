"""The committed results folders' tables are what the harness builds from their stores today: a
change to the report code that moves a committed number fails here until the folder is rebuilt
(`python -m bench.report --results results/NAME`), so the README never quotes a table the code
would no longer write."""
import filecmp
from pathlib import Path

import pytest

from bench.report.publish import write_reports
from bench.store import ResultStore

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.mark.parametrize("name", ["quick", "quick-seeds", "cpu", "cpu-fulltest", "cpu_fat15", "cpu_at2"])
def test_committed_tables_are_rebuilt_byte_for_byte(name, tmp_path):
    root = RESULTS / name
    if not (root / "records").is_dir():
        pytest.skip(f"results/{name} is not in this checkout")
    write_reports(ResultStore(root), tmp_path, pages=False)
    for table in ("leaderboard.csv", "results.csv"):
        assert filecmp.cmp(tmp_path / table, root / table, shallow=False), \
            f"results/{name}/{table} is stale: python -m bench.report --results results/{name}"
