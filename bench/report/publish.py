"""Publishing: every report of a results folder, written from its store in one step (the end of
every run, and `make report`): results.csv, leaderboard.csv, the plots, the RobustBench exports
and index.html. Nothing here measures anything.

    python -m bench.report.publish --results results/quick   # = make report [PROFILE=quick]
"""
from __future__ import annotations

import errno
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import pandas as pd
from filelock import FileLock

from bench.atomic import user_path, write_bytes_atomic
from bench.command import Parser, finish
from bench.report.columns import latest_runs
from bench.errors import BenchError
from bench.report.export import write_exports
from bench.report.html import LEADERBOARD_FLOAT_FORMAT, outdated_summary, write_page
from bench.report.plots import (
    plot_accuracy_vs_T,
    plot_attacks_vs_T,
    plot_corruption_heatmaps,
    plot_eps_sweeps,
    plot_natural_sweeps,
    plot_reliability_diagrams,
)
from bench.report.plots import DIGESTS as RELIABILITY_DIGESTS
from bench.report.tables import leaderboard
from bench.store import COLUMNS, ResultStore

# The folders a report owns, with what it writes there: a file of an earlier grid (which would
# contradict the new tables) is removed when the new report moves in.
REPORT_FOLDERS = {"plots": "*.png", "model_cards": "*.json"}
TIDY, LEADERBOARD = "results.csv", "leaderboard.csv"  # the two tables, all that pages=False writes
# and the files it replaces; with plots/reliability, the paths that must be free for its move-in
REPORT_FILES = (TIDY, LEADERBOARD, "leaderboard_robustbench.csv", "index.html")
# what vouches for the figures beside it (a rebuild copies a figure its digest matches rather than
# drawing it): it leaves before any figure is replaced and arrives after all are, so a move-in cut
# short leaves figures nothing vouches for (drawn again), never an old figure vouched for as new
DIGESTS_FILE = Path("plots") / "reliability" / RELIABILITY_DIGESTS
# the page links the plots and cards: it arrives after them, then the digests
ARRIVE_LAST = (Path("index.html"), DIGESTS_FILE)


def check_report_paths(out_dir: Path, pages: bool = True) -> None:
    """A report moves in only once it is built (a minute on a large store, and at the end of a
    run): a file standing where it puts a folder, or a folder where it puts a file, is named
    before that. ``pages=False``: the two tables alone are written."""
    out_dir = Path(out_dir)
    for folder in (*REPORT_FOLDERS, "plots/reliability") if pages else ():
        if (out_dir / folder).exists() and not (out_dir / folder).is_dir():
            raise BenchError(f"{out_dir / folder} is a file where the report writes its {folder} folder: move it "
                             f"away, or give another --results folder")
    for name in REPORT_FILES if pages else (TIDY, LEADERBOARD):
        if (out_dir / name).is_dir():
            raise BenchError(f"{out_dir / name} is a folder where the report writes its {name}: move it away, or "
                             f"give another --results folder")


def write_reports(store: ResultStore, out_dir: Path, pages: bool = True,
                  checkpoints: Optional[Path] = None) -> pd.DataFrame:
    """results.csv (tidy), leaderboard.csv, plots/, the RobustBench exports and index.html under
    ``out_dir``; returns the leaderboard. All of it is built in a staging folder and moved in only
    once it is complete, so a failure (a full disk, say) leaves the previous reports as they were;
    the records are never touched. ``pages=False`` writes the two tables alone (the plots are
    most of a report's time) and leaves the other files as they were. ``checkpoints``: the kept
    checkpoints whose weights the page links (default ``out_dir``/checkpoints, else its sibling
    folders')."""
    out_dir = Path(out_dir)
    check_report_paths(out_dir, pages)
    # taken before the store is read: every record written before it is in this report
    started = time.time_ns()
    tidy, bits = store.table(), store.bits_table()
    latest = latest_runs(tidy)  # the rows that count, for the tables, plots, claims and page alike
    board = leaderboard(tidy, bits, latest)
    moved = _Moved()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".tmp-report-", dir=out_dir) as tmp:
            stage = Path(tmp) / (out_dir.name or out_dir.resolve().name)  # the page is titled after its folder
            write_bytes_atomic(stage / TIDY, tidy[COLUMNS].to_csv(index=False).encode())
            # the published results.csv carries its report's start as its mtime (a rename keeps it; git
            # does not track it): what a later move-in compares its own start with, leaving no file
            os.utime(stage / TIDY, ns=(started, started))
            write_bytes_atomic(stage / LEADERBOARD,
                               board.to_csv(index=False, float_format=LEADERBOARD_FLOAT_FORMAT).encode())
            if not pages:
                _move_in(stage, out_dir, started, moved, prune=False)
                return board
            plots = stage / "plots"
            plot_accuracy_vs_T(board, plots, latest)
            plot_attacks_vs_T(latest, board, plots)
            plot_eps_sweeps(latest, plots)
            plot_corruption_heatmaps(latest, plots)
            plot_natural_sweeps(latest, plots)
            plot_reliability_diagrams(store, latest, plots / "reliability", drawn=out_dir / "plots" / "reliability")
            # the RobustBench exports, then the page that links them, from the same tables
            write_exports(board, stage)
            write_page(store, stage, board, tidy, bits, checkpoints=checkpoints, page_dir=out_dir, latest=latest)
            _move_in(stage, out_dir, started, moved)
    except OSError as e:
        raise BenchError(f"cannot write the reports in {out_dir} ({e.strerror or e}): {_remedy(e)}, then rebuild them "
                         f"with `python -m bench.report --results {out_dir}` (the records in {store.records_dir} are "
                         f"kept; {_what_is_left(moved)})") from None
    return board


class _Moved:
    """How far a move-in got: the files it replaced of the ``staged`` ones."""

    def __init__(self):
        self.paths: List[Path] = []
        self.staged = 0


def _what_is_left(moved: _Moved) -> str:
    """What a failed write left of the published reports, for its error message."""
    done = moved.paths
    if not done:
        return "the previous reports are unchanged"
    if len(done) == moved.staged:
        return "this build's reports are in place, but files of the previous ones that they drop are left beside them"
    named = ", ".join(str(p) for p in done[:3]) + (f" and {len(done) - 3} more" if len(done) > 3 else "")
    return (f"the reports there are partly replaced: {len(done)} of this build's {moved.staged} files moved in "
            f"({named}), the others are still the previous build's; rebuild before reading them")


def _remedy(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # EFBIG: a file-size limit fails a write as a full disk
        return "free space there"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make the folder writable"
    return f"mend {e.filename}" if e.filename else "mend that"


def _move_in(stage: Path, out_dir: Path, started: int, moved: _Moved, prune: bool = True) -> bool:
    """Each staged file over its published one (a rename each: readers never see a torn file), the
    page and then the reliability digests last (ARRIVE_LAST), then (``prune``) the files of the
    report's folders that this report did not write are removed. ``moved`` follows it, file by
    file. False, and nothing moved, where a report begun after ``started`` (time.time_ns()) from
    other records is already published: it was built from a later state of the store."""
    staged = sorted(p.relative_to(stage) for p in stage.rglob("*") if p.is_file())
    staged = [p for p in staged if p not in ARRIVE_LAST] + [p for p in ARRIVE_LAST if p in staged]
    moved.staged = len(staged)
    # two runs finishing into one folder move in one after the other: one report's files, never a mix
    with FileLock(str(out_dir / ".report.lock")):
        newer = _published_start(out_dir)
        if newer is not None and newer > started:
            if (out_dir / TIDY).read_bytes() != (stage / TIDY).read_bytes():
                # a report from an older store, finishing last, replaced a newer one: that one holds every
                # record this one read from before this one began, and a run publishes again after its records
                print(f"note: the report in {out_dir} was begun after this one, from a later state of its records: "
                      f"left in place, this one is not moved in", file=sys.stderr)
                return False
            # the same records (two runs publishing at once): this one moves in, its tables as new as those
            # there, but under their later start, which a third report begun between the two compares with
            os.utime(stage / TIDY, ns=(newer, newer))
        if prune:
            (out_dir / DIGESTS_FILE).unlink(missing_ok=True)
        for rel in staged:
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / rel, out_dir / rel)
            moved.paths.append(rel)
        if not prune:
            return True
        keep = set(staged)
        for folder, pattern in REPORT_FOLDERS.items():
            for old in (out_dir / folder).rglob(pattern) if (out_dir / folder).is_dir() else []:
                if old.relative_to(out_dir) not in keep:
                    old.unlink(missing_ok=True)  # gone already (a person, or an older writer without the lock)
    return True


def _published_start(out_dir: Path) -> Optional[int]:
    """When the published report was begun (its results.csv's mtime, write_reports), or None."""
    try:
        stamp = (out_dir / TIDY).stat().st_mtime_ns
    except OSError:
        return None
    # a time to come is no build's start (a copy from a machine whose clock is ahead): never let it
    # refuse every rebuild
    return stamp if stamp <= time.time_ns() else None


def regenerate(results_dir: Path, checkpoints: Optional[Path] = None, store: Optional[ResultStore] = None) -> Path:
    """Rebuild every report of a results folder from its store, measuring nothing."""
    results_dir = Path(results_dir)
    store = store or ResultStore(results_dir)
    if not store.has_records():
        raise BenchError(f"no results in {results_dir}/records: run `make bench` (or bench.run --results "
                         f"{results_dir}) first")
    if checkpoints is not None and not Path(checkpoints).is_dir():
        what = "a file, not a folder" if Path(checkpoints).exists() else "no such folder"
        raise BenchError(f"--checkpoints {checkpoints}: {what} (the kept checkpoints of the run, e.g. "
                         f"results/cpu/checkpoints for a run with --store results/cpu)")
    write_reports(store, results_dir, checkpoints=checkpoints)
    return results_dir / "index.html"


def main(argv: Optional[list] = None) -> int:
    p = Parser(prog="python -m bench.report",
               description="Rebuild results.csv, leaderboard.csv, the plots, the RobustBench "
                           "exports and index.html from a results store (measures nothing).")
    p.add_argument("--results", type=user_path, default="results/quick", help="results folder (default results/quick)")
    p.add_argument("--checkpoints", type=user_path, default=None,
                   help="the kept checkpoints the page links (default <results>/checkpoints, else those of "
                        "<results>'s sibling folders, matched by sha256; e.g. the --store folder's checkpoints "
                        "for a run that evaluated another folder's models)")
    args = p.parse_args(argv)
    # the reports move in only once all are built: an interrupted rebuild leaves the records as they were
    return finish(lambda: _publish(args), "the records are untouched; rerun the same command to rebuild the reports")


def _publish(args) -> int:
    store = ResultStore(Path(args.results))  # one store: a malformed record is warned about once
    path = regenerate(Path(args.results), None if args.checkpoints is None else Path(args.checkpoints), store)
    stale = outdated_summary(store)
    if stale:
        print(f"warning: {stale}", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
