"""The RobustBench exports and the report's move-in, on copies of results/quick's records: a
number exported says how it was made and nothing more (no extra data claimed for a network trained
elsewhere, no corruptions_acc off the real CIFAR-10-C), no row is lost to another dataset's twin,
and a move-in cut short or finishing late leaves no report that passes for what it is not."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.errors import BenchError
from bench.report import publish
from bench.report.columns import latest_runs
from bench.report.export import model_card, robustbench_leaderboard
from bench.report.publish import write_reports
from bench.report.tables import leaderboard
from bench.store import COLUMNS, ResultStore

QUICK = Path(__file__).resolve().parents[1] / "results" / "quick" / "records"


def copy_records(models, dest: Path) -> Path:
    """results/quick's records of ``models`` under ``dest``/records (the committed folder is only read)."""
    if not QUICK.is_dir():
        pytest.skip("results/quick is not in this checkout")
    (dest / "records").mkdir(parents=True)
    for path in QUICK.glob("*.json"):
        if json.loads(path.read_text())["model"] in models:
            shutil.copy(path, dest / "records" / path.name)
    return dest


@pytest.fixture(scope="module")
def quick_tidy(tmp_path_factory):
    root = copy_records({"fastnet_T1", "fastnet_T1_fat@best"}, tmp_path_factory.mktemp("quick"))
    return ResultStore(root).table()


def board_of(tidy: pd.DataFrame) -> pd.DataFrame:
    return leaderboard(tidy, None, latest_runs(tidy))


def test_one_network_on_two_datasets_keeps_a_row_per_dataset(quick_tidy):
    """fastnet_T1_fat@best and its @last twin (one hash), measured on cifar10-jpeg75 and on
    cifar10: four rows named "X@best [dataset]" / "X@last [dataset]". The twins of each dataset
    are one row; the two datasets' rows are two. Grouped on the name before the last "@" and the
    hash alone, one dataset's row was dropped as a twin of the other's."""
    other = quick_tidy.assign(dataset="cifar10", value=quick_tidy["value"] * 0.5)
    both = [quick_tidy, other]
    for tidy in (quick_tidy, other):
        twin = tidy[tidy.model == "fastnet_T1_fat@best"]
        both.append(twin.assign(model="fastnet_T1_fat@last", checkpoint="last"))
    board = board_of(pd.concat(both, ignore_index=True))
    assert len(board) == 6 and board.weights_sha256.nunique() == 2
    methods = robustbench_leaderboard(board).set_index("Method")
    assert sorted(methods.index) == ["fastnet_T1 [cifar10-jpeg75]", "fastnet_T1 [cifar10]",
                                     "fastnet_T1_fat@best [cifar10-jpeg75] (= @last)",
                                     "fastnet_T1_fat@best [cifar10] (= @last)"]
    rows = board.set_index("model")
    for dataset in ("cifar10", "cifar10-jpeg75"):
        assert methods.loc[f"fastnet_T1_fat@best [{dataset}] (= @last)", "Standard accuracy"] == \
            round(100 * rows.loc[f"fastnet_T1_fat@best [{dataset}]", "clean"], 2)


def test_extra_data_is_claimed_only_for_networks_trained_here(quick_tidy):
    """A grid model trained on the dataset's own split: no extra data. A RobustBench zoo model
    (Carmon2019Unlabeled trained on 500k extra images) or a caller's network: unknown, not False."""
    board = board_of(quick_tidy)
    grid = board[board.model == "fastnet_T1"].iloc[0]
    assert model_card(grid)["additional_data"] is False
    for source in ("zoo", "file", "python"):
        row = grid.copy()
        row["source"] = source
        card = model_card(row)
        assert card["additional_data"] is None and "additional_data unknown" in card["footnote"]
    mixed = board.assign(source=["zoo" if m == "fastnet_T1" else "grid" for m in board.model])
    extra = robustbench_leaderboard(mixed).set_index("Method")["Extra data"]
    assert extra["fastnet_T1"] == "unknown" and extra["fastnet_T1_fat@best"] is False


def test_corruptions_acc_only_from_the_real_cifar10c_on_all_its_images(quick_tidy):
    """RobustBench's corruptions_acc is the mean over the real CIFAR-10-C, 15 corruptions x
    severities 1-5 on its 10,000 images. A mean over corruptions generated here (results/quick's
    cifar10c-generated) or over a subset is another number: the field stays empty and the footnote
    says why. Before, any 15 x 5 mean filled it."""
    row = board_of(quick_tidy).set_index("model", drop=False).loc["fastnet_T1"].copy()
    assert row.c_source == "cifar10c-generated"
    row["c_corruptions"], row["c_severities"], row["c_n"] = 15, "1,2,3,4,5", 10000
    card = model_card(row)
    assert "corruptions_acc" not in card and "not the real CIFAR-10-C" in card["footnote"]
    row["c_source"], row["c_n"] = "cifar10c", 2000
    card = model_card(row)
    assert "corruptions_acc" not in card and "not on all 10,000" in card["footnote"]
    row["c_n"] = 10000
    card = model_card(row)
    assert card["corruptions_acc"] == f"{100 * row.mCA:.2f}" and "corruptions_acc left empty" not in card["footnote"]


def test_a_move_in_cut_short_vouches_for_no_old_figure_and_says_so(tmp_path, monkeypatch):
    """fastnet_T5's reliability bins change; the move-in fails on fastnet_T1.png. Before, the new
    digests.json had moved in first (sorted order) beside the old fastnet_T5.png: every rebuild then
    copied that old figure as the new bins' drawing, and the error said "the previous reports are
    unchanged" after half of them were replaced."""
    out = copy_records({"fastnet_T1", "fastnet_T5"}, tmp_path / "quick")
    write_reports(ResultStore(out), out)
    figures = out / "plots" / "reliability"
    old_png, old_digests = (figures / "fastnet_T5.png").read_bytes(), json.loads((figures / "digests.json").read_text())
    for path in (out / "records").glob("*.json"):
        rec = json.loads(path.read_text())
        if rec["model"] == "fastnet_T5" and rec.get("threat") == "calibration" and rec["view"] == "raw":
            rec["reliability"]["accuracy"] = [None if a is None else 1.0 for a in rec["reliability"]["accuracy"]]
            path.write_text(json.dumps(rec))
    real = os.replace

    def fails_on_t1(src, dst):
        if Path(dst) == figures / "fastnet_T1.png":
            raise PermissionError(13, "Permission denied", str(dst))
        return real(src, dst)
    monkeypatch.setattr(publish.os, "replace", fails_on_t1)
    with pytest.raises(BenchError) as failed:
        write_reports(ResultStore(out), out)
    monkeypatch.setattr(publish.os, "replace", real)
    message = str(failed.value)
    assert "unchanged" not in message and "partly replaced" in message, message
    if (figures / "digests.json").is_file():  # what is vouched for is what lies there
        now = json.loads((figures / "digests.json").read_text())
        assert now.get("fastnet_T5.png") == old_digests["fastnet_T5.png"] or \
            (figures / "fastnet_T5.png").read_bytes() != old_png
    write_reports(ResultStore(out), out)
    assert (figures / "fastnet_T5.png").read_bytes() != old_png  # drawn from the new bins


def test_a_report_begun_earlier_does_not_replace_a_newer_one(tmp_path, capsys):
    """Two builds into one folder: the first reads the store, then a run adds fastnet_T5 and its
    own report (begun later) moves in while the first still builds. The first, finishing last,
    replaced the newer tables: fastnet_T5 was gone from results.csv until the next rebuild."""
    old = copy_records({"fastnet_T1"}, tmp_path / "old")
    new = copy_records({"fastnet_T1", "fastnet_T5"}, tmp_path / "new")
    out = tmp_path / "out"
    early = ResultStore(old)
    read_early = early.table

    def table_then_a_newer_report_moves_in():
        got = read_early()
        write_reports(ResultStore(new), out, pages=False)
        return got
    early.table = table_then_a_newer_report_moves_in
    write_reports(early, out, pages=False)
    published = pd.read_csv(out / "results.csv")
    assert set(published.model) == {"fastnet_T1", "fastnet_T5"}
    assert (out / "results.csv").read_bytes() == ResultStore(new).table()[COLUMNS].to_csv(index=False).encode()
    assert "not moved in" in capsys.readouterr().err
    write_reports(ResultStore(old), out, pages=False)  # begun after it: moves in as ever
    assert set(pd.read_csv(out / "results.csv").model) == {"fastnet_T1"}
