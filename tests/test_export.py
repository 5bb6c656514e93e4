"""RobustBench-format exports: model cards and leaderboard_robustbench.csv, checked against the
leaderboard they are made from (stores built here with ResultStore.put)."""
from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest

from bench.report.export import (PROVENANCE_COLUMNS, ROBUSTBENCH_COLUMNS, model_card, robustbench_leaderboard,
                                 write_exports)
from tests.builders import StoreBuilder, sweep_store

# robustbench.utils.ModelInfo's fields (robustbench 1.1.1): the model_info/<dataset>/<threat>/<Name>.json format
MODEL_INFO_FIELDS = ["link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                     "architecture", "eps", "clean_acc", "reported", "corruptions_acc", "corruptions_acc_3d",
                     "corruptions_mce", "corruptions_mce_3d", "autoattack_acc", "footnote"]


def pct(v) -> str:
    return f"{100 * v:.2f}"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("results") / "quick"
    _, board, _ = sweep_store(root).tables()
    write_exports(board, root)
    return root, board


def test_model_cards_match_the_leaderboard(exported):
    root, board = exported
    cards = sorted((root / "model_cards").glob("*.json"))
    assert [c.stem for c in cards] == sorted(board.model)
    for _, row in board.iterrows():
        card = json.loads((root / "model_cards" / f"{row.model}.json").read_text())
        assert list(card) == [f for f in MODEL_INFO_FIELDS if f in card]  # RobustBench's fields, in its order
        assert {"link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                "architecture", "eps", "clean_acc", "reported", "autoattack_acc"} <= set(card)
        assert card["clean_acc"] == pct(row.clean)
        assert card["reported"] == pct(row.robust_min)
        assert card["autoattack_acc"] == pct(row.aa_pyautoattack)  # no full AutoAttack here: the cross-check
        assert "on 100 images" in card["footnote"]
        # severities 1 and 5 only: a partial mean is named as such, never RobustBench's corruptions_acc
        assert "corruptions_acc" not in card
        assert (f"{pct(row.mCA)}% over the {int(row.c_corruptions)} CIFAR-10-C benchmark corruptions x severities "
                f"1,5 on 500 images") in card["footnote"]
        assert card["dataset"] == "cifar10-jpeg75"  # not passed off as CIFAR-10
        assert card["eps"] == "8/255" and card["additional_data"] is False and card["number_forward_passes"] == 1
        assert row.code_version in card["footnote"] and f"{int(row.n)} images" in card["footnote"]
        assert card["architecture"].startswith("fastnet") and "M=64" in card["architecture"]
        assert ("loss x T" in card["name"]) == bool(row.lr_scale)


def test_cards_load_as_robustbench_model_info(exported):
    from bench.errors import BenchError
    from models.zoo import _robustbench_utils
    try:
        utils = _robustbench_utils()
    except BenchError:
        pytest.skip("robustbench is not installed (pip install -e '.[robustbench]')")
    assert [f.name for f in dataclasses.fields(utils.ModelInfo)] == MODEL_INFO_FIELDS
    root, _ = exported
    for path in (root / "model_cards").glob("*.json"):
        info = utils.ModelInfo(**json.loads(path.read_text()))
        float(info.clean_acc), float(info.autoattack_acc)  # what robustbench's list_available_models parses


def test_robustbench_leaderboard_csv(exported):
    root, board = exported
    lb = pd.read_csv(root / "leaderboard_robustbench.csv")
    assert list(lb.columns) == ROBUSTBENCH_COLUMNS + PROVENANCE_COLUMNS
    assert list(lb.Rank) == list(range(1, len(board) + 1))
    assert list(lb["Best known robust accuracy"]) == sorted(lb["Best known robust accuracy"], reverse=True)
    b = board.set_index("model")
    for _, r in lb.iterrows():
        m = b.loc[r.Method]
        assert math.isclose(r["Standard accuracy"], round(100 * m.clean, 2))
        assert math.isclose(r["AutoAttack robust accuracy"], round(100 * m.aa_pyautoattack, 2))
        assert math.isclose(r["Best known robust accuracy"], round(100 * m.robust_worst, 2))
        assert r["AA eval. potentially unreliable"] == (m.masking in ("likely", "suspected"))
        assert r["Extra data"] == False  # noqa: E712 - a CSV boolean
        # what RobustBench's table leaves implied: the data, the images of the accuracies and of
        # AutoAttack's number (here the cross-check's, on fewer)
        assert r["Dataset"] == "cifar10-jpeg75" and r["Images"] == m.n and r["AutoAttack images"] == 100


def test_a_figure_from_part_of_the_images_says_how_many(tmp_path):
    """Square on 200 of the 1,000 images set robust_min, and the run's own AutoAttack ran on 100 of
    them: the card said "on the n=1000 evaluation images" and the page and leaderboard named no n."""
    from bench.report.html import leaderboard_rows
    from tests.builders import EPS
    b = StoreBuilder(tmp_path, n=1000).model("fastnet_T1", 1, 0.62, pgd_raw=0.30, pgd_scaled=0.30)
    b.model("fastnet_T5", 5, 0.62, pgd_raw=0.25, pgd_scaled=0.25)
    spec = b.specs["fastnet_T1"]
    b._put(spec, "attack", "square", "any", {"clean_acc": 0.62, "robust_acc": 0.10, "success_rate": 0.8}, eps=EPS,
           n=200, params={"eps": EPS, "n_queries": 5000}, positions={"eval_n": 1000, "index": list(range(0, 1000, 5))})
    b._put(spec, "attack", "autoattack", "raw", {"clean_acc": 0.62, "robust_acc": 0.12, "success_rate": 0.8}, eps=EPS,
           n=100, params={"eps": EPS, "version": "standard", "steps": 100, "n_queries": 5000},
           positions={"eval_n": 1000, "index": list(range(0, 1000, 10))})
    tidy, board, _ = b.tables()
    row = board.set_index("model", drop=False).loc["fastnet_T1"]
    assert row.robust_min == 0.10 and row.robust_min_by == "square/any" and row.robust_min_n == 200
    assert row.autoattack == 0.12 and row.autoattack_n == 100
    other = board.set_index("model").loc["fastnet_T5"]
    assert pd.isna(other.robust_min_n) and pd.isna(other.autoattack_n)  # its figures are on all 1,000
    card = model_card(row)
    assert "reported = robust_min (square/any, on 200 of the 1000 images)" in card["footnote"]
    assert "AutoAttack standard on 100 of the n=1000 evaluation images" in card["footnote"]
    lb = robustbench_leaderboard(board).set_index("Method")
    assert lb.loc["fastnet_T1", "Images"] == 1000 and lb.loc["fastnet_T1", "AutoAttack images"] == 100
    assert pd.isna(lb.loc["fastnet_T5", "AutoAttack images"])  # no AutoAttack number at all
    cols, rows = leaderboard_rows(board, tidy)
    cells = {r[0]["text"]: {c[0]: x for c, x in zip(cols, r)} for r in rows}
    assert cells["fastnet_T1"]["robust_min"]["small"] == "n=200"
    assert "on n=200 of the row's n=1000 images" in cells["fastnet_T1"]["robust_min"]["tip"]
    assert cells["fastnet_T1"]["autoattack_shown"]["small"] == "n=100"
    assert cells["fastnet_T5"]["robust_min"]["small"] == ""


def test_an_unaudited_row_is_not_cleared_and_an_unattacked_one_claims_no_minimum(tmp_path):
    """A row without a masking verdict read False in "AA eval. potentially unreliable" (checked and
    fine); a card without robust_min described one ("the minimum over every Linf attack")."""
    b = StoreBuilder(tmp_path, n=500).model("fastnet_T1", 1, 0.6).model("fastnet_T5", 5, 0.6)
    _, board, _ = b.tables()
    board.loc[board.model == "fastnet_T5", "masking"] = float("nan")
    lb = robustbench_leaderboard(board).set_index("Method")
    assert lb.loc["fastnet_T5", "AA eval. potentially unreliable"] == "not audited"
    # found nothing, but AutoAttack, what the column is about, never ran: not cleared either (it read False)
    assert lb.loc["fastnet_T1", "AA eval. potentially unreliable"] == "no AutoAttack run"
    checked = StoreBuilder(tmp_path / "checked", n=500).model("fastnet_T1", 1, 0.6, crosscheck=0.0)
    assert robustbench_leaderboard(checked.tables()[1]).set_index("Method").loc[
        "fastnet_T1", "AA eval. potentially unreliable"] == False  # noqa: E712 - False, not "no AutoAttack run"
    row = board.iloc[0].copy()
    row["robust_min"] = float("nan")
    foot = model_card(row)["footnote"]
    assert "reported left empty: no Linf attack at 8/255 was measured" in foot and "minimum over" not in foot


def test_full_autoattack_preferred_and_absent_autoattack(tmp_path):
    b = StoreBuilder(tmp_path, n=500)
    b.model("fastnet_T1", 1, 0.6).model("fastnet_T5", 5, 0.6)
    _, board, _ = b.tables()
    row = board.iloc[0].copy()
    card = model_card(row)
    assert card["autoattack_acc"] is None and "not run" in card["footnote"]
    assert "corruptions_acc" not in card  # only where measured
    row["autoattack"] = 0.123
    row["aa_pyautoattack"] = 0.5
    card = model_card(row)
    assert card["autoattack_acc"] == "12.30" and "n=500" in card["footnote"]
    lb = robustbench_leaderboard(board.assign(autoattack=[0.1, 0.2]))
    assert list(lb["AutoAttack robust accuracy"].sort_values()) == [10.0, 20.0]


def test_autoattack_at_a_reduced_budget_is_not_reported_as_autoattack(tmp_path):
    """The quick profile's cross-check runs AutoAttack at 20 iterations and 500 queries (100 and
    5,000 are AutoAttack's): a weaker attack, whose robust accuracy the model cards gave as
    autoattack_acc and leaderboard_robustbench.csv as "AutoAttack robust accuracy", both meaning
    AutoAttack standard's. Now they stay empty and the footnote, the leaderboard and the page say
    what ran; at the full budget the number is kept. The same for the suite's own autoattack."""
    from bench.report.html import leaderboard_rows
    from tests.builders import EPS
    b = StoreBuilder(tmp_path / "store", n=200)
    b.model("fastnet_T1", 1, 0.6, pgd_raw=0.1, pgd_scaled=0.1).model("fastnet_T5", 5, 0.6, pgd_raw=0.2, pgd_scaled=0.2)
    for name, steps, queries in (("fastnet_T1", 20, 500), ("fastnet_T5", 100, 5000)):
        b._put(b.specs[name], "diagnostic", "autoattack_crosscheck", "raw",
               {"clean_acc": 0.6, "robust_acc_torchattacks": 0.08, "robust_acc_pyautoattack": 0.08, "abs_diff": 0.0},
               eps=EPS, steps=steps, n=50, params={"attacks": ["autoattack", "autoattack_ref"], "eps": EPS,
                                                   "version": "standard", "steps": steps, "n_queries": queries})
    tidy, board, _ = b.tables()
    board = board.set_index("model", drop=False)
    reduced, full = board.loc["fastnet_T1"], board.loc["fastnet_T5"]
    assert reduced.aa_crosscheck_budget == "reduced budget: version standard, 20 iterations and 500 queries where " \
                                          "AutoAttack standard runs 100 and 5000"
    assert pd.isna(full.aa_crosscheck_budget)
    card = model_card(reduced)
    assert card["autoattack_acc"] is None
    assert ("autoattack_acc left empty: AutoAttack ran at a reduced budget: version standard, 20 iterations and 500 "
            "queries where AutoAttack standard runs 100 and 5000, by the authors' implementation (pyautoattack) in "
            "the cross-check, on 50 images, leaving 8.00% robust") in card["footnote"]
    assert model_card(full)["autoattack_acc"] == "8.00"
    lb = robustbench_leaderboard(board.reset_index(drop=True)).set_index("Method")
    assert pd.isna(lb.loc["fastnet_T1", "AutoAttack robust accuracy"])
    assert lb.loc["fastnet_T5", "AutoAttack robust accuracy"] == 8.0
    cols, rows = leaderboard_rows(board.reset_index(drop=True), tidy)
    cells = {r[0]["text"]: {c[0]: x for c, x in zip(cols, r)}["autoattack_shown"] for r in rows}
    assert cells["fastnet_T1"]["small"] == "n=50, reduced" and "reduced budget: version standard, 20" in \
        cells["fastnet_T1"]["tip"]
    assert cells["fastnet_T5"]["small"] == "n=50" and "reduced" not in cells["fastnet_T5"]["tip"]
    # the suite's own AutoAttack (--attack autoattack --param autoattack.steps=20) is read the same way
    b._put(b.specs["fastnet_T1"], "attack", "autoattack", "raw",
           {"clean_acc": 0.6, "robust_acc": 0.05, "success_rate": 0.9, "max_linf": EPS, "max_l2": 1.5}, eps=EPS,
           steps=20, params={"eps": EPS, "version": "standard", "steps": 20, "n_queries": 5000})
    _, board, _ = b.tables()
    row = board.set_index("model", drop=False).loc["fastnet_T1"]
    assert row.autoattack == 0.05
    assert row.autoattack_budget.startswith("reduced budget: version standard, 20 iterations")
    card = model_card(row)
    assert card["autoattack_acc"] is None and "on the n=200 evaluation images, leaving 5.00% robust" in card["footnote"]


def test_stale_cards_are_removed(tmp_path):
    b = StoreBuilder(tmp_path, n=500)
    b.model("fastnet_T1", 1, 0.6).model("fastnet_T5", 5, 0.6)
    _, board, _ = b.tables()
    write_exports(board, tmp_path)
    write_exports(board[board.model == "fastnet_T1"], tmp_path)
    assert [p.name for p in (tmp_path / "model_cards").glob("*.json")] == ["fastnet_T1.json"]


def test_corruptions_acc_only_for_the_full_benchmark(exported):
    _, board = exported
    row = board.iloc[0].copy()
    row["c_corruptions"], row["c_severities"], row["c_n"], row["c_source"] = 15, "1,2,3,4,5", 10000, "cifar10c"
    card = model_card(row)
    assert card["corruptions_acc"] == pct(row.mCA)
    assert "15 CIFAR-10-C benchmark corruptions x severities 1,2,3,4,5 on 10000 images" in card["footnote"]
    row["c_corruptions"] = 14  # one corruption missing: not RobustBench's figure either
    assert "corruptions_acc" not in model_card(row)
    # nor generated here from the evaluation images (another set of images and noise)
    row["c_corruptions"], row["c_source"] = 15, "cifar10c-generated"
    assert "corruptions_acc" not in model_card(row)
    assert "not the real CIFAR-10-C's" in model_card(row)["footnote"]


def test_a_row_measured_by_two_commits_on_two_machines_names_both(tmp_path, monkeypatch):
    """A row's measurements made by two commits on two machines (a store resumed elsewhere, an
    attack of an older revision measured again): the leaderboard, the page and the model card
    name both, in the order they measured it, and the first and latest time. The leaderboard once
    took one record's commit and device, whichever came last in the table, beside the latest time:
    results/quick's cards said "tempbench 19e3b071cd85 on cpu AMD EPYC (AVX2, 2 threads), measured
    2026-12-07", where that commit and machine measured it on 2026-12-05 and another pair on the 7th."""
    from bench.report.html import leaderboard_rows
    from bench.report.tables import provenance
    from tests import builders
    from tests.builders import EPS
    store = StoreBuilder(tmp_path / "store", n=100)
    store.model("fastnet_T1", 1, 0.6, pgd_raw=0.1, pgd_scaled=0.1)
    first = builders.PROV["code_version"], builders.PROV["device"]
    monkeypatch.setitem(builders.PROV, "code_version", "fedcba987654")
    monkeypatch.setitem(builders.PROV, "device", "cpu Other CPU (AVX2, 2 threads)")
    # a day later: PGD at another budget, by another commit on another machine
    store._put(store.specs["fastnet_T1"], "attack", "pgd", "raw",
               {"clean_acc": 0.6, "robust_acc": 0.05, "success_rate": 0.9, "max_linf": EPS, "max_l2": 1.5},
               eps=EPS, steps=50, params={"eps": EPS, "alpha": 2 / 255, "steps": 50, "random_start": True},
               timestamp="2026-01-02T09:00:00+00:00")
    tidy, board, _ = store.tables()
    row = board.set_index("model").loc["fastnet_T1"]
    assert row.code_version == f"{first[0]}, fedcba987654"
    assert row.device == f"{first[1]}; cpu Other CPU (AVX2, 2 threads)"
    assert row.first_timestamp.startswith("2026-01-01T10:01") and row.timestamp == "2026-01-02T09:00:00+00:00"
    card = model_card(board.iloc[0])
    assert card["footnote"].startswith(f"tempbench {first[0]}, fedcba987654 on {first[1]} and cpu Other CPU (AVX2, 2 "
                                       "threads), measured 2026-01-01 to 2026-01-02;")
    cols, rows = leaderboard_rows(board, tidy)
    cell = {c[0]: x for c, x in zip(cols, rows[0])}
    assert cell["code_version"]["text"] == "fedcba987654 (+1)" and cell["code_version"]["tip"] == row.code_version
    assert cell["device"]["text"] == "cpu Other CPU (AVX2, 2 threads) (+1)" and cell["device"]["tip"] == row.device
    assert cell["date"]["text"] == "2026-01-02" and cell["date"]["tip"] == f"{row.first_timestamp} to {row.timestamp}"
    # one commit and machine: named alone, as before
    alone = provenance(tidy[tidy.code_version == first[0]]).loc["fastnet_T1"]
    assert alone.code_version == first[0] and alone.device == first[1]


def test_a_stronger_autoattack_budget_is_not_called_reduced():
    """version plus, or 200 iterations: not AutoAttack standard's number (left out of its column),
    but not a weaker attack either: it read "reduced"."""
    from bench.report.columns import aa_budget
    assert aa_budget({"version": "standard", "steps": 100, "n_queries": 5000}) is None
    assert aa_budget({"version": "standard", "steps": 20}).startswith("reduced budget: version standard, 20 iterations")
    assert aa_budget({"version": "plus"}).startswith("non-standard budget: version plus, 100 iterations")
    assert aa_budget({"version": "standard", "steps": 200}).startswith("non-standard budget:")
