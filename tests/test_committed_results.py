"""The committed results folders' tables are what the harness builds from their stores today: a
change to the report code that moves a committed number fails here until the folder is rebuilt
(`python -m bench.report --results results/NAME`), so the README never quotes a table the code
would no longer write."""
import filecmp
import math
from pathlib import Path

import pytest

from bench.report.publish import write_reports
from bench.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


@pytest.mark.parametrize("name", ["quick", "quick-seeds", "cpu", "cpu-fulltest", "cpu_fat15", "cpu_at2"])
def test_committed_tables_are_rebuilt_byte_for_byte(name, tmp_path):
    root = RESULTS / name
    if not (root / "records").is_dir():
        pytest.skip(f"results/{name} is not in this checkout")
    write_reports(ResultStore(root), tmp_path, pages=False)
    for table in ("leaderboard.csv", "results.csv"):
        assert filecmp.cmp(tmp_path / table, root / table, shallow=False), \
            f"results/{name}/{table} is stale: python -m bench.report --results results/{name}"


def test_the_readmes_findings_are_the_claims_of_results_cpu():
    """The README's findings table says what bench.report.claims computes from results/cpu today:
    each claim's verdict, and the numbers its row quotes among that claim's comparisons."""
    import re

    from bench.report.claims import claims_from_store
    root = RESULTS / "cpu"
    if not (root / "records").is_dir():
        pytest.skip("results/cpu is not in this checkout")
    readme = (RESULTS.parent / "README.md").read_text()
    section = readme.split("## Findings at a glance", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): (m.group(2), m.group(3)) for m in
            re.finditer(r"^\| (A\d|B) [^|]*\| ([^|]+) \| ([^|]+) \|$", section, re.M)}
    claims = {c.key: c for c in claims_from_store(ResultStore(root))}
    assert set(rows) == set(claims)
    for key, (verdict, numbers) in rows.items():
        assert verdict.strip() == claims[key].verdict, key
        computed = {f"[{100 * c.interval[0]:+.1f}, {100 * c.interval[1]:+.1f}]"
                    for c in claims[key].comparisons if math.isfinite(c.diff)}
        for interval in re.findall(r"\[[+-]\d+\.\d, [+-]\d+\.\d\]", numbers):
            assert interval in computed, (key, interval, computed)


def test_what_a_cut_short_write_leaves_is_never_committed():
    """A report staging folder or an atomic write's temp file, left by a killed run in a results
    folder, showed in `git status` beside the results, and `git add results/cpu` took it."""
    import shutil
    import subprocess
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    left = ["results/cpu/.tmp-report-k2j3/index.html", "results/cpu/records/.tmp-0a1b.json.5f3e9c2a1d0b4e6f",
            "results/quick/.tmp-leaderboard.csv.1234abcd"]
    kept = ["results/cpu/records/0a1b.json", "results/cpu/index.html"]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *left, *kept], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    assert ignored == left


def test_the_readmes_quick_table_is_what_readme_table_prints(tmp_path):
    """"The table is printed by `python scripts/readme_table.py results/quick`": the README's rows
    are that command's output, line for line, on the committed leaderboard (a `make bench` here on
    another CPU rewrites results/quick); a folder without a leaderboard is one line, exit 2."""
    import subprocess
    import sys
    committed = subprocess.run(["git", "show", "HEAD:results/quick/leaderboard.csv"], cwd=ROOT, capture_output=True)
    if committed.returncode != 0:
        pytest.skip("no committed results/quick/leaderboard.csv (not a git checkout?)")
    (tmp_path / "quick").mkdir()
    (tmp_path / "quick" / "leaderboard.csv").write_bytes(committed.stdout)
    script = [sys.executable, str(ROOT / "scripts" / "readme_table.py")]
    done = subprocess.run([*script, str(tmp_path / "quick")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    table = done.stdout.splitlines()
    readme = (ROOT / "README.md").read_text().splitlines()
    start = readme.index(table[0], readme.index("## Results of the quick profile"))
    assert readme[start:start + len(table)] == table and not readme[start + len(table)].startswith("|")
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([*script, str(empty)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == "" and done.stderr == (
        f"error: {empty} has no leaderboard.csv: give a results folder (python -m bench.report --results "
        f"{empty} builds one)\n")


def test_the_readmes_picture_shows_the_committed_quick_leaderboard():
    """The README opens on docs/report.png, results/quick's page as `make screenshot` draws it; the
    PNG names the sha256 of the leaderboard.csv beside that page and of the page (without the time it
    was generated). A picture of a leaderboard or page the folder no longer holds (the one of
    2026-11-23 showed 17 models on 500 images, 67.0% clean at T=1, for weeks after the folder held
    14 on 400) fails here until `make screenshot` draws it again. Both files as committed, as
    above: a `make bench` here rewrites results/quick."""
    import hashlib
    import io
    import re
    import subprocess

    from PIL import Image
    assert "](docs/report.png)" in (ROOT / "README.md").read_text()
    shown = subprocess.run(["git", "show", "HEAD:docs/report.png"], cwd=ROOT, capture_output=True)
    board = subprocess.run(["git", "show", "HEAD:results/quick/leaderboard.csv"], cwd=ROOT, capture_output=True)
    page = subprocess.run(["git", "show", "HEAD:results/quick/index.html"], cwd=ROOT, capture_output=True)
    if shown.returncode != 0 or board.returncode != 0 or page.returncode != 0:
        pytest.skip("no committed docs/report.png or results/quick (not a git checkout?)")
    picture = Image.open(io.BytesIO(shown.stdout))
    assert picture.size == (1600, 1200)
    assert picture.text.get("tempbench-leaderboard-sha256") == hashlib.sha256(board.stdout).hexdigest(), \
        "docs/report.png shows another leaderboard than results/quick's: make screenshot"
    untimed = re.sub(rb"Generated\s+\d{4}-\d\d-\d\d \d\d:\d\d UTC", b"Generated", page.stdout)
    assert picture.text.get("tempbench-page-sha256") == hashlib.sha256(untimed).hexdigest(), \
        "docs/report.png shows another page than results/quick/index.html: make screenshot"


@pytest.mark.parametrize("name, panel, says", [
    ("quick", "mCA", " (n=200)"), ("quick", "nat_worst_grid", " (n=200)"), ("quick", "pgd_raw@8/255", ""),
    ("quick", "clean", ""), ("cpu", "square@8/255", " (n=500)"), ("cpu", "pgd_margin@8/255", ""),
])
def test_a_panel_on_other_images_names_its_n(name, panel, says):
    """plots/acc_vs_T.png's title named the leaderboard's n for every panel: n=400 over the quick
    profile's corruptions and natural shifts (200 images), n=2000 over the cpu profile's Square (500)."""
    from bench.report.columns import latest_runs
    from bench.report.plots import _panel_n
    from bench.report.tables import leaderboard
    store = ResultStore(Path(__file__).resolve().parents[1] / "results" / name)
    tidy, bits = store.table(), store.bits_table()
    latest = latest_runs(tidy)
    assert _panel_n(leaderboard(tidy, bits, latest), latest, panel) == says
