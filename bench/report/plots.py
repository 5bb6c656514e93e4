"""Figures built from the leaderboard and the tidy table; one style for all of them: log-T axes,
one colour per model family (or per T, on a log colour scale, where T is not the x axis),
accuracy in percent, the dataset and n in the title. Nothing here measures anything."""
from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import pandas as pd

from attacks import format_eps
from attacks.corruptions import BENCHMARK, EXTRA
from attacks.natural import NATURAL, identity_magnitude
from bench.atomic import write_atomic, write_json_atomic
from bench.calibration import N_BINS, ReliabilityBins, plot_bins
from bench.report.columns import HEADLINE_EPS, ModelFamily, threat_column, threat_norm


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# models from outside the grid: each its own family (two that share an architecture's name are
# not seeds of one recipe, and have no checkpoint suffix of the grid's)
OUTSIDE_REGIMES = ("zoo", "external")

# the masking audit's verdicts a figure marks (bench/report/audit.py): a point resting on such a
# model is an upper bound no attack here confirmed, not robustness
MASKED = {"likely": dict(marker="x", ms=9, mew=2, color="red", ls="none"),
          "suspected": dict(marker="o", ms=10, mfc="none", mew=1.5, color="darkorange", ls="none")}


def family(row, with_dataset: bool = False) -> str:
    if row.get("regime") in OUTSIDE_REGIMES:
        return str(row["model"]) + (f" [{row.get('dataset', '')}]" if with_dataset else "")
    return ModelFamily.of(row).label(with_dataset)


def _masking_at(board: pd.DataFrame, fam: str) -> dict:
    """{T: the worst masking verdict among the family's models at T} ('likely' over 'suspected')."""
    if "masking" not in board:
        return {}
    out = {}
    for T, verdicts in board[board.family == fam].groupby("T")["masking"]:
        found = [v for v in MASKED if v in set(verdicts.dropna())]
        if found:
            out[T] = found[0]
    return out


def _mark_masked(ax, xs, ys, verdicts: dict) -> None:
    """Overlay each point whose T has a masking verdict, labelled once per axis (the legend)."""
    said = {h.get_label() for h in ax.get_lines()}
    for T, y in zip(xs, ys):
        v = verdicts.get(T)
        if v is None or not np.isfinite(y):
            continue
        label = f"masking {v} (a model of the point)"
        ax.plot([T], [y], **MASKED[v], label=label if label not in said else "_nolegend_", zorder=5)
        said.add(label)


def _several_datasets(*tables: pd.DataFrame) -> bool:
    """Whether the families must be told apart by dataset: one architecture and regime on two
    datasets is two families (not one line averaging both, its error bar the datasets' gap)."""
    return len({str(d) for t in tables if "dataset" in t for d in t["dataset"].dropna()}) > 1


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text.replace("loss x T", "lrT")).strip("_")


def _save(fig, path: Path, dpi: int = 110) -> Path:
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:  # a figure left open by a failed save stays in pyplot's registry for the process's life
        _plt().close(fig)
    return path


def _margins(fig, left=0.75, right=0.25, top=0.6, bottom=0.6, wspace=0.0, hspace=0.0, title=None, fontsize=10):
    """Fixed margins and gaps in inches, and the figure's title 0.1 in from its top edge, in
    place of tight_layout, which lays a figure out by drawing it once more: half of a report's
    time, for a layout these fixed sizes give."""
    w, h = fig.get_size_inches()
    if title:
        fig.suptitle(title, y=1 - 0.1 / h, va="top", fontsize=fontsize)
    rows, cols = fig.axes[0].get_subplotspec().get_gridspec().get_geometry()
    cell_w = (w - left - right - wspace * (cols - 1)) / cols
    cell_h = (h - top - bottom - hspace * (rows - 1)) / rows
    fig.subplots_adjust(left=left / w, right=1 - right / w, top=1 - top / h, bottom=bottom / h,
                        wspace=wspace / cell_w, hspace=hspace / cell_h)
    for ax in fig.axes:
        if getattr(ax, "_temperature_ticks", None):
            ax.set_xticklabels(_spaced_labels(ax._temperature_ticks, ax.get_position().width * w, fontsize=8))


def _log_T_axis(ax, temps):
    """A log T axis with one tick, labelled plainly, at each T measured (labels that would overlap
    are thinned once the figure is laid out, _margins). Matplotlib's own log
    ticks label minor ticks in mathtext where few decades show; laying those labels out was most
    of a report's time."""
    from matplotlib.ticker import NullLocator
    ts = sorted({float(t) for t in temps})
    ax.set_xscale("log")
    ax.set_xticks(ts, [f"{t:g}" for t in ts], fontsize=8)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("training temperature T")
    ax._temperature_ticks = ts  # thinned by _margins, once the axis has its width


def _spaced_labels(ts: List[float], width_in: float, fontsize: float) -> List[str]:
    """Each tick's label, or "" where it would overlap one kept before it: a fitted T beside a
    grid T (1.0852 beside 1) printed as one run of digits. Short labels (the grid's round T) are
    kept first; the positions assume matplotlib's 5% axis margins on a log axis."""
    labels = [f"{t:g}" for t in ts]
    lo, hi = math.log10(ts[0]), math.log10(ts[-1])
    span = max(hi - lo, 1e-9)
    pos = [(math.log10(t) - lo) / span * width_in / 1.1 for t in ts]
    half = [len(s) * 0.6 * fontsize / 72 / 2 for s in labels]  # about 0.6 em a digit
    kept: List[int] = []
    for i in sorted(range(len(ts)), key=lambda i: (len(labels[i]), i)):
        if all(abs(pos[i] - pos[j]) >= half[i] + half[j] + 0.05 for j in kept):
            kept.append(i)
    return [s if i in kept else "" for i, s in enumerate(labels)]


def _subtitle(df: pd.DataFrame) -> str:
    dataset = ", ".join(sorted(df["dataset"].astype(str).unique()))
    n = ", ".join(str(int(v)) for v in sorted(df["n"].unique()))
    return f"{dataset} (n={n})"


def _t_colours(temps) -> Callable[[float], tuple]:
    """T on a log colour scale (plasma, dark = low T, without its pale yellow end), so a family
    of curves reads as a sweep."""
    plt = _plt()
    logs = np.log10(np.asarray(sorted(temps), float))
    lo, span = logs.min(), max(logs.max() - logs.min(), 1e-9)
    return lambda t: plt.cm.plasma(0.85 * (np.log10(t) - lo) / span)


def _panel_n(board: pd.DataFrame, latest: Optional[pd.DataFrame], col: str) -> str:
    """' (n=200)' for a panel measured on other images than the board's n (corruptions and
    natural shifts on shift_n, Square on [eval] attack_n), '' where it is the board's: the figure's
    title named one n for every panel (n=400 over panels of 200). A shifted test set's panel
    (cifar10.1) always names its set and n: it is not on the figure's dataset at all."""
    ns: set = set()
    if latest is not None and len(latest) and "family" in latest:
        shift = latest[(latest.family == "shift") & (latest.threat == col)]
        if len(shift):
            sources = sorted({str(v) for v in shift["source"].dropna()}) if "source" in shift else []
            n = ", ".join(str(v) for v in sorted(set(shift["n"].dropna().astype(int))))
            return f" ({', '.join(sources) or col}, n={n})"
    if col in ("mCA", "extra4", "mCE", "rel_mCE") and "c_n" in board:
        ns = set(board["c_n"].dropna().astype(int))
    elif col == "robust_min" and "robust_min_n" in board:  # from an attack on part of the images
        ns = set(board["robust_min_n"].dropna().astype(int))
    elif latest is not None and len(latest):
        if col.startswith("nat_"):
            rows = latest[latest.family == "natural"]
        elif col.endswith("@8/255"):  # the column's own attack and view (pgd_raw is not pgd_scaled)
            rows = latest[(latest.family == "attack") &
                          np.isclose(pd.to_numeric(latest.eps, errors="coerce"), HEADLINE_EPS)]
            rows = rows[[threat_column(t, v, HEADLINE_EPS) == col for t, v in zip(rows.threat, rows.view)]]
        else:
            rows = latest.iloc[:0]
        ns = set(rows["n"].dropna().astype(int))
    return "" if not ns or ns <= set(board["n"].dropna().astype(int)) else \
        f" (n={', '.join(str(n) for n in sorted(ns))})"


def plot_accuracy_vs_T(board: pd.DataFrame, plots_dir: Path, latest: Optional[pd.DataFrame] = None) -> List[Path]:
    """Accuracy against T (log axis), one line per model family, one panel per column: clean,
    robust_min, each attack/view/eps and the shift summaries. Seeds are averaged, with their std
    as error bars. ``latest`` (the tidy rows that count): to title a panel on fewer images with its n."""
    plt = _plt()
    if board.empty:
        return []
    board = board.copy()
    board["family"] = board.apply(family, axis=1, with_dataset=_several_datasets(board))
    # the attacks at the headline radius (other radii: plots/eps_sweep_*), then shifts, calibration
    panels = ["clean", "robust_min"] + [c for c in board.columns if c.endswith("@8/255")
                                        and not c.startswith("robust_min")]
    panels += [c for c in ("mCA", "extra4", "mCE", "rel_mCE", "nat_worst_grid", "nat_rotate", "nat_translate",
                           "cifar10.1", "ece_raw", "ece_scaled", "ece_posthoc") if c in board.columns]
    panels = [p for p in panels if board[p].notna().any()]
    if not panels:  # a store of shifts or audits alone (no clean records): nothing to draw against T
        return []
    families = sorted(board["family"].unique())
    colors = _family_colours(families)
    masking = {fam: _masking_at(board, fam) for fam in families}
    attacks = [c for c in panels if c.endswith("@8/255")]
    # what the minimum is over: a store of CE-PGD alone has a "robust_min" of one weak attack
    over = (f": min over {', '.join(a.split('@')[0] for a in attacks)}" if 0 < len(attacks) <= 3 else
            f": min over {len(attacks)} attacks/views" if attacks else "")
    written = []

    def draw(ax, col):
        for fam in families:
            sub = board[board.family == fam].groupby("T")[col].agg(["mean", "std", "count"]).reset_index()
            sub = sub.dropna(subset=["mean"])
            if sub.empty:
                continue
            # NaN draws no bar: a point of one seed has no spread to show (a bar of 0 read as none measured)
            err = sub["std"].where(sub["count"] > 1)
            ax.errorbar(sub["T"], 100 * sub["mean"], yerr=100 * err, marker="o", ms=4, capsize=3,
                        color=colors[fam], label=fam, lw=2.5 if col == "robust_min" else 1.5)
            if col == "robust_min" or col.endswith("@8/255"):
                _mark_masked(ax, sub["T"], 100 * sub["mean"], masking[fam])
        _log_T_axis(ax, board["T"].dropna())
        ax.set_ylabel("corruption error (% of the T=1 baseline's)" if "mCE" in col else
                      "expected calibration error (%)" if col.startswith("ece") else "accuracy (%)")
        ax.set_title(col + (over if col == "robust_min" else "") + _panel_n(board, latest, col),
                     fontsize=10 if col == "robust_min" and over else None)
        ax.grid(True, alpha=0.3)

    sub = _subtitle(board)
    plots_dir.mkdir(parents=True, exist_ok=True)
    # one figure of every panel (a file per panel drew each twice: a third of the report's time)
    cols = min(3, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, col in zip(axes.flat, panels):
        draw(ax, col)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    flagged = any(masking.values())
    if flagged and "robust_min" in panels:  # the markers' key, on the panel where they matter most
        ax = axes.flat[panels.index("robust_min")]
        ax.legend(handles=[h for h in ax.get_lines() if h.get_label().startswith("masking")], fontsize=7)
    _margins(fig, top=0.75, wspace=0.8, hspace=0.9,
             title=f"Accuracy vs training temperature, {sub}; a panel on other images names its n\n"
                   f"a point: the mean over its seeds ({_seed_counts(board)}); error bar: their std, none at one seed"
                   + ("; x / o: the masking audit says likely / suspected for a model of the point (an attack's "
                      "number there is an upper bound)" if flagged else ""))
    written.append(_save(fig, plots_dir / "acc_vs_T.png", dpi=100))
    return written


def _family_colours(families) -> dict:
    """One colour a family: tab10's, or tab20's past ten families (tab10 gave the 11th the 1st's)."""
    cmap, k = (_plt().cm.tab10, 10) if len(families) <= 10 else (_plt().cm.tab20, 20)
    return {f: cmap(i % k) for i, f in enumerate(families)}


def _sources(rows: pd.DataFrame) -> str:
    """The corruption sources of a family's rows: one a model (_one_corruption_source), so a family
    can hold real CIFAR-10-C at one T and generated corruptions at another."""
    return " + ".join(sorted(rows.source.dropna().astype(str).unique()))


def _seed_counts(board: pd.DataFrame) -> str:
    """How many models (seeds) the figure's points average: '1' or '1 to 3'."""
    return _span(board.groupby(["family", "T"]).size())


def _span(counts: pd.Series, each: str = "") -> str:
    """'3' where every count is 3, else '1 to 3' (and ``each``, what one count belongs to)."""
    lo, hi = (int(counts.min()), int(counts.max())) if len(counts) else (0, 0)
    return f"{lo}" if lo == hi else f"{lo} to {hi}{each}"


def _with_family(df: pd.DataFrame, with_dataset: bool = False) -> pd.DataFrame:
    df = df.copy()
    df["family"] = df.apply(family, axis=1, with_dataset=with_dataset) if len(df) else pd.Series(dtype=str)
    return df


def plot_corruption_heatmaps(tidy: pd.DataFrame, plots_dir: Path) -> List[Path]:
    """Per model family: corruption x T, the accuracy averaged over the measured severities (and
    seeds), the benchmark corruptions measured above the extra ones, the clean accuracy of the same
    images on top. One file per family; plus accuracy vs severity, one line per T."""
    plt = _plt()
    c = tidy[(tidy.threat == "corruption") & (tidy.metric == "accuracy")]
    if c.empty:
        return []
    c = _with_family(c, _several_datasets(tidy))
    written = []
    plots_dir.mkdir(parents=True, exist_ok=True)
    for fam, sub in c.groupby("family"):
        # per (model, corruption): mean over severities; then mean over the seeds of each T
        per_model = sub[sub.corruption != "none"].groupby(["T", "model", "corruption"])["value"].mean()
        mat = per_model.groupby(["corruption", "T"]).mean().unstack("T")
        rows = [r for r in [*BENCHMARK, *EXTRA] if r in mat.index]
        clean = sub[sub.corruption == "none"].groupby("T")["value"].mean()
        mat = pd.concat([clean.to_frame("clean (same images)").T, mat.loc[rows]])
        temps = list(mat.columns)
        fig, ax = plt.subplots(figsize=(max(6.5, 2.8 + 0.55 * len(temps)), 1.4 + 0.3 * len(mat)))
        im = ax.imshow(100 * mat.values, aspect="auto", cmap="viridis", vmin=0, vmax=100)
        for (i, j), v in np.ndenumerate(mat.values):
            if np.isfinite(v):
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if v < 0.6 else "black")
        ax.set_xticks(range(len(temps)), [f"{t:g}" for t in temps])
        ax.set_yticks(range(len(mat)), mat.index)
        for sep in (0.5, 0.5 + sum(r in BENCHMARK for r in rows)):
            ax.axhline(sep, color="white", lw=2)
        ax.set_xlabel("training temperature T")
        sevs = ", ".join(f"{s:g}" for s in sorted(sub[sub.corruption != "none"].severity.unique()))
        ax.set_title(f"{fam}: accuracy (%), mean over severities {sevs}\n"
                     f"{_subtitle(sub)}, {_sources(sub)}", fontsize=9)
        _margins(fig, left=1.9, right=1.0, top=0.6, bottom=0.6)
        fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
        written.append(_save(fig, plots_dir / f"corruptions_heatmap_{_slug(fam)}.png"))

        bench = sub[sub.corruption.isin(["none", *BENCHMARK])]
        curve = bench.groupby(["T", "model", "severity"])["value"].mean().groupby(["T", "severity"]).mean()
        if curve.empty:  # the family's extra corruptions alone (a store copied in part)
            continue
        # a profile or --corruptions may measure a few of the 15: the title counts those the curves average
        measured = _span(bench[bench.corruption != "none"].groupby("model")["corruption"].nunique(), " (a model)")
        colour = _t_colours(curve.index.get_level_values("T"))
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for t, line in curve.groupby(level="T"):
            ax.plot(line.index.get_level_values("severity"), 100 * line.values, marker="o", ms=4, color=colour(t),
                    label=f"T={t:g}")
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{fam}: mean over the {measured} benchmark corruptions measured", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        _margins(fig, left=0.7, right=0.2, top=0.65, bottom=0.55, title=f"{_subtitle(sub)}, {_sources(sub)}",
                 fontsize=8)
        written.append(_save(fig, plots_dir / f"corruptions_vs_severity_{_slug(fam)}.png"))
    return written


def plot_natural_sweeps(tidy: pd.DataFrame, plots_dir: Path) -> List[Path]:
    """Per model family: one panel per natural transform, accuracy against its magnitude, one line
    per T; the identity (0 degrees, 0 px, factor 1, hue 0) carries the clean accuracy of the same
    images when the corruption run measured it."""
    plt = _plt()
    nat = tidy[(tidy.family == "natural") & (tidy.metric == "accuracy") & tidy.magnitude.notna()]
    if nat.empty:
        return []
    several = _several_datasets(tidy)
    nat = _with_family(nat, several)
    clean = _with_family(tidy[(tidy.threat == "corruption") & (tidy.corruption == "none") &
                              (tidy.metric == "accuracy")], several)
    written = []
    plots_dir.mkdir(parents=True, exist_ok=True)
    for fam, sub in nat.groupby("family"):
        transforms = [t for t in NATURAL if t in set(sub.threat)]
        colour = _t_colours(sub["T"].unique())
        cols = min(4, len(transforms))
        rows = int(np.ceil(len(transforms) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
        base = clean[clean.family == fam].groupby("T")["value"].mean()
        for ax, t in zip(axes.flat, transforms):
            curve = sub[sub.threat == t].groupby(["T", "model", "magnitude"])["value"].mean().groupby(
                ["T", "magnitude"]).mean()
            for temp, line in curve.groupby(level="T"):
                line = line.droplevel("T")
                if temp in base.index:
                    line = pd.concat([line, pd.Series({identity_magnitude(t): base[temp]})]).sort_index()
                ax.plot(line.index, 100 * line.values, marker="o", ms=3, color=colour(temp), label=f"T={temp:g}")
            ax.set_title(t, fontsize=10)
            ax.set_xlabel(NATURAL[t].unit, fontsize=8)
            ax.set_ylabel("accuracy (%)", fontsize=8)
            ax.grid(True, alpha=0.3)
        for ax in axes.flat[len(transforms):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=6, ncol=2)
        _margins(fig, left=0.6, right=0.2, top=0.65, bottom=0.5, wspace=0.6, hspace=0.8,
                 title=f"{fam}: accuracy vs transform magnitude, {_subtitle(sub)}")
        written.append(_save(fig, plots_dir / f"natural_vs_magnitude_{_slug(fam)}.png"))
    return written


def plot_attacks_vs_T(tidy: pd.DataFrame, board: pd.DataFrame, plots_dir: Path) -> List[Path]:
    """Per model family: robust accuracy against T at 8/255 (Linf), one line per attack and
    view, robust_min in bold black on top, clean accuracy dashed: where the lines part, the
    weaker attacks are being fooled."""
    plt = _plt()
    robust = tidy[(tidy.family == "attack") & (tidy.metric == "robust_acc") & np.isclose(tidy.eps, HEADLINE_EPS)]
    robust = robust[robust.threat.map(threat_norm) == "linf"]
    if robust.empty or "robust_min" not in board:
        return []
    several = _several_datasets(tidy, board)
    robust = _with_family(robust, several)
    fam_board = _with_family(board, several)
    written = []
    plots_dir.mkdir(parents=True, exist_ok=True)
    for fam, sub in robust.groupby("family"):
        sub = sub.assign(col=[threat_column(t, v, HEADLINE_EPS) for t, v in zip(sub.threat, sub.view)])
        cols = sorted(sub.col.unique())
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        cmap = plt.cm.tab20
        for i, col in enumerate(cols):
            line = sub[sub.col == col].groupby(["T", "model"])["value"].mean().groupby("T").mean()
            ax.plot(line.index, 100 * line.values, marker="o", ms=3, lw=1.2, color=cmap(i % 20),
                    label=col.split("@")[0])
        fb = fam_board[fam_board.family == fam].groupby("T")[["robust_min", "clean"]].mean()
        ax.plot(fb.index, 100 * fb["robust_min"], color="black", lw=3, marker="s", ms=5, label="robust_min")
        # a marker: a family at one T (or a T without neighbours) draws no line, only its points
        ax.plot(fb.index, 100 * fb["clean"], color="grey", lw=1.5, ls="--", marker="x", ms=5, label="clean")
        _mark_masked(ax, fb.index, 100 * fb["robust_min"], _masking_at(fam_board, fam))
        _log_T_axis(ax, sub["T"].dropna())
        ax.set_ylabel("accuracy (%) at Linf 8/255")
        ax.set_title(f"{fam}: every attack and view", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=1, loc="center left", bbox_to_anchor=(1.01, 0.5))
        _margins(fig, left=0.7, right=2.2, top=0.6, bottom=0.55, title=_subtitle(sub), fontsize=8)
        written.append(_save(fig, plots_dir / f"attacks_vs_T_{_slug(fam)}.png"))
    return written


def plot_eps_sweeps(tidy: pd.DataFrame, plots_dir: Path) -> List[Path]:
    """Per model family: robust accuracy against eps (log axis) for each swept attack and view,
    one line per T, chance dotted for scale. A working attack drives every curve to 0 at large
    eps (robust accuracy counts only images classified right, so not to chance): a plateau above
    0 is the masking signature the audit reads (bench/report/audit.py, sweep_plateau)."""
    plt = _plt()
    robust = tidy[(tidy.family == "attack") & (tidy.metric == "robust_acc")]
    robust = robust[robust.threat.map(threat_norm) == "linf"]
    swept = robust.groupby(["threat", "view"])["eps"].nunique()
    curves = [k for k, v in swept.items() if v > 2]
    if not curves:
        return []
    robust = _with_family(robust, _several_datasets(tidy))
    written = []
    plots_dir.mkdir(parents=True, exist_ok=True)
    for fam, sub in robust.groupby("family"):
        mine = [c for c in curves if len(sub[(sub.threat == c[0]) & (sub.view == c[1])])]
        if not mine:
            continue
        # the title's n is the plotted curves': the family's other Linf attacks (Square on attack_n) are not drawn
        sub = sub[pd.Series(list(zip(sub.threat, sub.view)), index=sub.index).isin(mine)]
        panel_ns = {c: sorted(set(sub[(sub.threat == c[0]) & (sub.view == c[1])]["n"].dropna().astype(int)))
                    for c in mine}
        own_n = len({tuple(v) for v in panel_ns.values()}) > 1
        colour = _t_colours(sub["T"].unique())
        fig, axes = plt.subplots(1, len(mine), figsize=(4.2 * len(mine), 3.8), squeeze=False, sharey=True)
        chance = 1.0 / float(sub["num_classes"].dropna().iloc[0]) if sub["num_classes"].notna().any() else 0.1
        for ax, (threat, view) in zip(axes.flat, mine):
            rows = sub[(sub.threat == threat) & (sub.view == view)]
            curve = rows.groupby(["T", "model", "eps"])["value"].mean().groupby(["T", "eps"]).mean()
            for t, line in curve.groupby(level="T"):
                line = line.droplevel("T")
                ax.plot(line.index, 100 * line.values, marker="o", ms=3, color=colour(t), label=f"T={t:g}")
            ax.axhline(100 * chance, color="grey", ls=":", lw=1)
            ax.set_xscale("log", base=2)
            eps = sorted(rows.eps.unique())
            ax.set_xticks(eps, [format_eps(e).replace("/255", "") for e in eps])
            ax.set_xlabel("eps (x/255)")
            ax.set_title(f"{threat}/{view}" + (f" (n={', '.join(map(str, panel_ns[(threat, view)]))})"
                                                 if own_n else ""), fontsize=10)
            ax.grid(True, alpha=0.3)
        axes.flat[0].set_ylabel("robust accuracy (%)")
        axes.flat[0].legend(fontsize=7)
        _margins(fig, left=0.7, right=0.2, top=0.65, bottom=0.55, wspace=0.25,
                 title=f"{fam}: eps sweep, {_subtitle(sub)}", fontsize=9)
        written.append(_save(fig, plots_dir / f"eps_sweep_{_slug(fam)}.png"))
    return written


# Bump with a change to how a reliability figure is drawn (bench.calibration.plot_bins): the
# figures a report finds already drawn from the same bins are otherwise kept, not drawn again.
RELIABILITY_FIGURE_VERSION = 1
DIGESTS = "digests.json"  # figure file -> what it was drawn from (_panels_digest)


def plot_reliability_diagrams(store, latest: pd.DataFrame, out_dir: Path, drawn: Optional[Path] = None) -> List[Path]:
    """One figure per model: reliability diagrams of its raw view, its scaled view (z/T_train)
    and after post-hoc temperature scaling, from the bins stored with its calibration records.
    ``drawn``: the folder of the figures published before; one drawn from the same bins (its
    digest in that folder's DIGESTS file) is copied, not drawn again: a figure took about 0.5 s,
    and these were most of a report's time (results/cpu: 95 of them). A figure is drawn from the
    records whose rows ``latest`` counts (their run, dataset, n, image subset, weights and time),
    named as ``latest`` names the model ("fastnet_T1 [cifar10]" where a name is on two datasets):
    the bins of the evaluation whose ECE the leaderboard prints, not another one's."""
    calib = latest[latest["threat"] == "calibration"] if len(latest) else latest
    counted = {(row["model"], *_calibration_identity(row)) for _, row in calib.iterrows()}
    panels, when = {}, {}
    for rec in store.records():
        if rec.get("threat") != "calibration" or not rec.get("reliability"):
            continue
        # its name in latest: its own, or with its dataset where the name is on two (_one_name_a_dataset)
        ident = _calibration_identity(rec)
        model = next((m for m in (rec.get("model"), f"{rec.get('model')} [{rec.get('dataset')}]")
                      if (m, *ident) in counted), None)
        if model is None:
            continue
        # one evaluation stored twice: the later record, whatever the order of the files
        if str(rec.get("timestamp")) < when.get((model, rec["view"]), ""):
            continue
        when[(model, rec["view"])] = str(rec.get("timestamp"))
        r = rec["reliability"]
        nan = float("nan")
        bins = ReliabilityBins(np.linspace(0, 1, N_BINS + 1),
                               np.array([nan if v is None else v for v in r["confidence"]], float),
                               np.array([nan if v is None else v for v in r["accuracy"]], float),
                               np.array(r["count"], dtype=np.int64))
        t = rec["metrics"].get("posthoc_T", rec["T"] if rec["view"] == "scaled" else 1.0)
        panels.setdefault(model, {})[rec["view"]] = (f"{model}: {rec['view']}", bins, t)
    before = _read_digests(drawn / DIGESTS) if drawn is not None else {}
    written, digests = [], {}
    for model, views in sorted(panels.items()):
        order = [views[v] for v in ("raw", "scaled", "posthoc") if v in views]
        name = f"{_slug(model)}.png"
        digests[name] = _panels_digest(order)
        if before.get(name) == digests[name]:
            try:
                write_atomic(out_dir / name, lambda tmp, src=drawn / name: shutil.copyfile(src, tmp))
                written.append(out_dir / name)
                continue
            except FileNotFoundError:  # gone (removed by hand, or by another report's prune): drawn
                pass
        written.append(plot_bins(order, out_dir / name))
    if digests:
        write_json_atomic(out_dir / DIGESTS, digests)
    return written


# what tells one calibration evaluation from another, in a record and in its tidy rows alike: the
# figure's bins must be the evaluation whose ECE the leaderboard prints (not one on other images,
# another n, older weights)
_CALIBRATION_IDENTITY = ("run_key", "dataset", "view", "n", "subset_seed", "weights_sha256", "timestamp")


def _calibration_identity(row) -> tuple:
    def norm(v):
        if v is None or (isinstance(v, (float, np.floating)) and not math.isfinite(v)):
            return ""
        if isinstance(v, (int, float, np.integer, np.floating)) and float(v) == int(v):
            return str(int(v))
        return str(v)
    return tuple(norm(row.get(c)) for c in _CALIBRATION_IDENTITY)


def _panels_digest(panels) -> str:
    """What a reliability figure is drawn from: its panels' titles, bins and temperatures, the
    drawing code's version and matplotlib's."""
    import matplotlib
    parts = [RELIABILITY_FIGURE_VERSION, matplotlib.__version__]
    for title, bins, t in panels:
        parts.append([title, float(t)] + [np.asarray(a, float).tolist() for a in (bins.edges, bins.confidence,
                                                                                  bins.accuracy, bins.count)])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _read_digests(path: Path) -> dict:
    """The digests a report wrote beside its figures ({} where none or unreadable: all drawn)."""
    try:
        got = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return got if isinstance(got, dict) else {}
