"""What the figures say they show: each built from copies of results/quick's records (the store's
own tidy table, latest_runs and leaderboard, as bench.report.publish builds them), the figure's
text read back from the matplotlib figure the plot function drew. A second dataset is the same
models' records written again as measured on cifar10 (another --data-root into one store)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.report import plots
from bench.report.columns import latest_runs
from bench.report.html import PLOT_GROUPS, full_table
from bench.report.tables import leaderboard
from bench.store import ResultStore, record_id

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "results" / "quick"
MODELS = {"fastnet_T1", "fastnet_T5", "fastnet_T1_fat@best", "fastnet_T5_fat@best"}


def _copy_records(dst: Path, models=MODELS, second_dataset: bool = False) -> ResultStore:
    """The quick profile's records of ``models``; with ``second_dataset``, each again as measured
    on cifar10 at half the accuracy (a dataset whose numbers differ, as cifar10 and its JPEG copy do)."""
    (dst / "records").mkdir(parents=True)
    for path in sorted((QUICK / "records").glob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("model") not in models:
            continue
        shutil.copyfile(path, dst / "records" / path.name)
        if second_dataset:
            rec["dataset"] = "cifar10"
            rec["source"] = str(rec.get("source", "")).replace("cifar10-jpeg75", "cifar10")
            rec["metrics"] = {k: (v / 2 if k in ("accuracy", "robust_acc") and v is not None else v)
                              for k, v in rec["metrics"].items()}
            rec["id"] = record_id(rec)
            (dst / "records" / f"{rec['id']}.json").write_text(json.dumps(rec))
    return ResultStore(dst)


@pytest.fixture
def figures(monkeypatch):
    """Every figure the plot functions save, kept (closed, still readable) to read its text back."""
    drawn = {}
    save = plots._save

    def keep(fig, path, *a, **k):
        drawn[Path(path).name] = fig
        return save(fig, path, *a, **k)
    monkeypatch.setattr(plots, "_save", keep)
    return drawn


@pytest.fixture
def panels(monkeypatch):
    """Every reliability figure's panels: (title, images in its bins) by file name."""
    seen = {}
    draw = plots.plot_bins

    def keep(order, path):
        seen[Path(path).name] = [(title, int(np.nansum(bins.count))) for title, bins, _ in order]
        return draw(order, path)
    monkeypatch.setattr(plots, "plot_bins", keep)
    return seen


def _axis(fig, title_start: str):
    found = [ax for ax in fig.axes if ax.get_title().startswith(title_start)]
    assert found, [ax.get_title() for ax in fig.axes]
    return found[0]


def _suptitle(fig) -> str:
    return fig._suptitle.get_text() if fig._suptitle is not None else ""


def test_families_are_split_by_dataset(tmp_path, figures):
    """One architecture on two datasets is two lines, each the mean of its own dataset's models,
    not one line averaging both with the datasets' gap drawn as its error bar."""
    tidy = _copy_records(tmp_path / "store", second_dataset=True).table()
    latest = latest_runs(tidy)
    board = leaderboard(tidy, None, latest)
    assert set(board.dataset) == {"cifar10", "cifar10-jpeg75"}
    plots.plot_accuracy_vs_T(board, tmp_path / "plots", latest)
    ax = _axis(figures["acc_vs_T.png"], "clean")
    lines = {c.get_label(): c for c in ax.containers}
    for ds in ("cifar10", "cifar10-jpeg75"):
        line = lines[f"fastnet [{ds}]"]
        x, y = line.lines[0].get_data()
        want = board[(board.dataset == ds) & (board.regime == "std")].set_index("T")["clean"]
        assert dict(zip(x, y)) == pytest.approx({t: 100 * v for t, v in want.items()})
    # and the per-family figures are per dataset too
    plots.plot_attacks_vs_T(latest, board, tmp_path / "plots")
    assert {"attacks_vs_T_fastnet_cifar10.png", "attacks_vs_T_fastnet_cifar10_jpeg75.png"} <= set(figures)


def test_reliability_figure_for_a_model_on_two_datasets(tmp_path, panels):
    """latest names a model on two datasets "fastnet_T1 [cifar10]": each still gets its figure,
    from its own dataset's records."""
    store = _copy_records(tmp_path / "store", models={"fastnet_T1"}, second_dataset=True)
    latest = latest_runs(store.table())
    shown = set(latest[latest.threat == "calibration"].model)
    assert shown == {"fastnet_T1 [cifar10]", "fastnet_T1 [cifar10-jpeg75]"}
    plots.plot_reliability_diagrams(store, latest, tmp_path / "reliability")
    titles = {name: [t for t, _ in p] for name, p in panels.items()}
    for model in shown:
        assert any(ts and all(t.startswith(f"{model}: ") for t in ts) for ts in titles.values()), titles


def test_reliability_figure_is_the_leaderboards_evaluation(tmp_path, panels):
    """A second calibration record of the same model on 100 images beside the 400-image one the
    leaderboard's ECE counts (and after it in file order, the order the records are read in): the
    figure's bins are the 400 images'."""
    store = _copy_records(tmp_path / "store", models={"fastnet_T1"})
    raw = [json.loads(p.read_text()) for p in sorted(store.records_dir.glob("*.json"))]
    rec = next(r for r in raw if r["threat"] == "calibration" and r["view"] == "raw")
    other = dict(rec, n=100, timestamp="2026-12-06T00:00:00+00:00",
                 metrics=dict(rec["metrics"], ece=0.30),
                 reliability=dict(rec["reliability"], count=[c // 4 for c in rec["reliability"]["count"]]))
    other["id"] = record_id(other)
    assert other["id"] > rec["id"]  # read last: the record the old choice kept
    (store.records_dir / f"{other['id']}.json").write_text(json.dumps(other))
    latest = latest_runs(store.table())
    ece = latest[(latest.threat == "calibration") & (latest.view == "raw") & (latest.metric == "ece")]
    assert ece.n.tolist() == [400]
    plots.plot_reliability_diagrams(store, latest, tmp_path / "reliability")
    assert dict(panels["fastnet_T1.png"])["fastnet_T1: raw"] == 400


def test_shift_panel_names_its_test_set_and_n(tmp_path, figures):
    """CIFAR-10.1 (all 2000 of its images, bench/measure/cifar101.py's rows) beside a board on 400
    test images: its panel says so, the figure's title does not speak for it."""
    tidy = _copy_records(tmp_path / "store").table()
    shift = tidy[(tidy.threat == "clean") & (tidy.metric == "accuracy")].copy()
    shift = shift.assign(family="shift", threat="cifar10.1", n=2000, source="cifar10.1", view="none",
                         params=json.dumps({"version": "v6"}), value=shift["value"] - 0.05)
    tidy = pd.concat([tidy, shift], ignore_index=True)
    latest = latest_runs(tidy)
    board = leaderboard(tidy, None, latest)
    plots.plot_accuracy_vs_T(board, tmp_path / "plots", latest)
    title = _axis(figures["acc_vs_T.png"], "cifar10.1").get_title()
    assert "n=2000" in title and "cifar10.1," in title, title


def test_severity_title_counts_the_corruptions_measured(tmp_path, figures):
    tidy = _copy_records(tmp_path / "store", models={"fastnet_T1", "fastnet_T5"}).table()
    few = tidy[(tidy.threat != "corruption") | tidy.corruption.isin(["none", "gaussian_noise", "contrast",
                                                                      "jpeg_compression"])]
    plots.plot_corruption_heatmaps(latest_runs(few), tmp_path / "plots")
    title = figures["corruptions_vs_severity_fastnet.png"].axes[0].get_title()
    assert "3 benchmark corruptions" in title and "15" not in title, title
    caption = dict((prefix, text) for prefix, _, text in PLOT_GROUPS)["corruptions_vs_severity_"]
    assert "15" not in caption


def test_eps_sweep_title_n_is_the_plotted_rows(tmp_path, figures):
    """Square on 100 of the 400 images ([eval] attack_n) is not in the eps sweep (PGD alone is
    swept): the title's n is the curves'."""
    tidy = _copy_records(tmp_path / "store", models={"fastnet_T1", "fastnet_T5"}).table()
    latest = latest_runs(tidy)
    latest.loc[latest.threat == "square", "n"] = 100
    plots.plot_eps_sweeps(latest, tmp_path / "plots")
    title = _suptitle(figures["eps_sweep_fastnet.png"])
    assert "(n=400)" in title, title


def test_one_dataset_one_seed(tmp_path, figures):
    """results/quick, one dataset and one seed a model: the families keep their names, no error bar
    is drawn (a bar of length 0 reads as no spread measured) and the figure says what its bars are."""
    tidy = _copy_records(tmp_path / "store").table()
    latest = latest_runs(tidy)
    plots.plot_accuracy_vs_T(leaderboard(tidy, None, latest), tmp_path / "plots", latest)
    fig = figures["acc_vs_T.png"]
    assert {c.get_label() for c in _axis(fig, "clean").containers} == {"fastnet", "fastnet fat@best"}
    for ax in fig.axes:
        for c in ax.containers:
            for bars in c.lines[2]:
                assert all(len(seg) == 0 for seg in bars.get_segments())
    assert "mean over its seeds (1); error bar: their std" in _suptitle(fig)


def test_a_failed_save_closes_its_figure(tmp_path):
    plt = plots._plt()
    fig = plt.figure()
    fig.text(0.5, 0.5, r"$\notacommand$")  # mathtext that cannot be drawn: savefig raises
    with pytest.raises(ValueError):
        plots._save(fig, tmp_path / "x.png")
    assert fig.number not in plt.get_fignums()


def test_full_table_prints_as_leaderboard_csv():
    board = pd.read_csv(QUICK / "leaderboard.csv")
    cols, rows = full_table(board)
    printed = pd.read_csv(QUICK / "leaderboard.csv", dtype=str, keep_default_na=False)
    assert cols == list(printed.columns)
    assert [[c["text"] for c in r] for r in rows] == printed.values.tolist()


def test_masked_models_are_marked_where_the_attacks_are_drawn(tmp_path, figures):
    """fastnet_T50_lrT, which the audit calls likely masked, CE-PGD on its raw logits far above
    its robust_min: each panel that draws an attack marks its point (the figures drew it as any
    other point, the 'high T is robust' picture), and the caption says what the marks are."""
    tidy = _copy_records(tmp_path / "store", models={"fastnet_T1", "fastnet_T20_lrT", "fastnet_T50_lrT"}).table()
    latest = latest_runs(tidy)
    board = leaderboard(tidy, None, latest)
    assert dict(zip(board.model, board.masking))["fastnet_T50_lrT"] == "likely"
    plots.plot_accuracy_vs_T(board, tmp_path / "plots", latest)
    fig = figures["acc_vs_T.png"]
    for title in ("robust_min", "pgd_raw@8/255"):
        marks = [ln for ln in _axis(fig, title).get_lines() if ln.get_marker() == "x" and ln.get_color() == "red"]
        assert [tuple(ln.get_xdata()) for ln in marks] == [(50.0,)], title
    assert not [ln for ln in _axis(fig, "clean").get_lines() if ln.get_color() == "red"]
    assert "x / o: the masking audit says likely / suspected" in _suptitle(fig)
    plots.plot_attacks_vs_T(latest, board, tmp_path / "plots")
    ax = figures["attacks_vs_T_fastnet_lrT.png"].axes[0]
    assert "masking likely (a model of the point)" in [ln.get_label() for ln in ax.get_lines()]


def test_robust_min_panel_says_what_it_is_the_minimum_over(tmp_path, figures):
    """A store where CE-PGD alone ran: its "robust_min" is the minimum of one weak attack's two
    views, which the panel names (it read "robust_min", the minimum over every attack)."""
    tidy = _copy_records(tmp_path / "store", models={"fastnet_T1", "fastnet_T5"}).table()
    tidy = tidy[(tidy.family != "attack") | (tidy.threat == "pgd")]
    latest = latest_runs(tidy)
    plots.plot_accuracy_vs_T(leaderboard(tidy, None, latest), tmp_path / "plots", latest)
    assert _axis(figures["acc_vs_T.png"], "robust_min").get_title() == "robust_min: min over pgd_raw, pgd_scaled"


def test_a_panel_n_is_its_own_attack_and_view(tmp_path, figures):
    """PGD's scaled view on 100 of the 400 images: the scaled panel names n=100, the raw one
    (every row on 400) names none (the raw panel read the scaled rows too: "n=100, 400"); a
    robust_min set by an attack on part of the images names that part."""
    tidy = _copy_records(tmp_path / "store", models={"fastnet_T1", "fastnet_T5"}).table()
    latest = latest_runs(tidy)
    latest.loc[(latest.threat == "pgd") & (latest.view == "scaled"), "n"] = 100
    board = leaderboard(tidy, None, latest)
    board["robust_min_n"] = 100.0
    plots.plot_accuracy_vs_T(board, tmp_path / "plots", latest)
    fig = figures["acc_vs_T.png"]
    assert _axis(fig, "pgd_raw@8/255").get_title() == "pgd_raw@8/255"
    assert _axis(fig, "pgd_scaled@8/255").get_title() == "pgd_scaled@8/255 (n=100)"
    assert _axis(fig, "robust_min").get_title().endswith(" (n=100)")


def test_models_from_outside_the_grid_are_families_of_their_own(tmp_path, figures):
    """Two caller's models that share an architecture's name are two lines, not one line averaging
    them as seeds (one point of 35.9% with an error bar spanning both), nor labelled '@last'."""
    tidy = _copy_records(tmp_path / "store", models={"fastnet_T1", "fastnet_T5"}).table()
    tidy = tidy.assign(regime="external", T=1.0, model=tidy.model.str.replace("fastnet_", "mine_"))
    latest = latest_runs(tidy)
    board = leaderboard(tidy, None, latest)
    plots.plot_accuracy_vs_T(board, tmp_path / "plots", latest)
    labels = {c.get_label() for c in _axis(figures["acc_vs_T.png"], "clean").containers}
    assert labels == {"mine_T1", "mine_T5"}


def test_the_clean_line_shows_at_a_single_temperature(tmp_path, figures):
    """A family at one T (results/cpu_at2): the dashed clean line has no segment to draw, so its
    point needs a marker (the legend listed "clean" beside nothing)."""
    tidy = _copy_records(tmp_path / "store", models={"fastnet_T1"}).table()
    latest = latest_runs(tidy)
    plots.plot_attacks_vs_T(latest, leaderboard(tidy, None, latest), tmp_path / "plots")
    (clean,) = [ln for ln in figures["attacks_vs_T_fastnet.png"].axes[0].get_lines() if ln.get_label() == "clean"]
    assert clean.get_marker() not in (None, "None", "", " ")


def test_a_family_of_two_corruption_sources_names_both(tmp_path, figures):
    tidy = _copy_records(tmp_path / "store", models={"fastnet_T1", "fastnet_T5"}).table()
    latest = latest_runs(tidy)
    latest.loc[(latest.model == "fastnet_T5") & (latest.threat == "corruption"), "source"] = "cifar10c"
    plots.plot_corruption_heatmaps(latest, tmp_path / "plots")
    title = figures["corruptions_heatmap_fastnet.png"].axes[0].get_title()
    assert "cifar10c + cifar10c-generated" in title, title
