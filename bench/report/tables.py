"""Reports built from the results store: the tidy table, the leaderboard, the plots, a summary.

Nothing here measures anything: every number comes out of the store.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from attacks import format_eps
from attacks.corruptions import BENCHMARK, EXTRA
from bench.provenance import DEVICE_SEP
from bench.report import audit
from bench.report.columns import HEADLINE_EPS, ID_COLS, aa_budget, latest_runs, threat_column, threat_norm
from bench.report.worst_case import blackbox_gap_on_its_images, suite_min_on_crosscheck, worst_case_bits


def _min_over(rows: pd.DataFrame):
    """Per model: the smallest robust accuracy, which threat/view gave it, and on how many images."""
    idx = rows.groupby("model")["value"].idxmin()
    best = rows.loc[idx].set_index("model")
    return best["value"], best["threat"] + "/" + best["view"], best["n"]


def _on_part(n: pd.Series, board: pd.DataFrame) -> pd.Series | None:
    """The image counts of the models whose figure came from a measurement on part of their
    evaluation's images (NaN for the rest), or None where every one is on all of them: a figure
    from Square on 500 of 2,000 images is not one on the row's n."""
    n = n.reindex(board.index)
    part = n < board["n"]
    return n.where(part).astype(float) if part.any() else None


def worst_case(bits: pd.DataFrame, n_of: pd.Series) -> pd.DataFrame:
    """Per model: robust_worst, the fraction of images that no attack at 8/255 (Linf) broke, image
    by image, over every attack and view and, on the images it covered, the AutoAttack cross-check
    (both AutoAttacks): at most robust_min, but for an attack on part of the images, which
    robust_min takes on its own images and this counts where it ran. With it, for the audit, the
    suite's robust_min on the cross-check's images (suite_min_on_aa_images, _by), the black-box gap
    on the black-box attack's images (blackbox_gap_paired, _by, _n) and the authors' AutoAttack
    warnings."""
    cols = ["robust_worst", "suite_min_on_aa_images", "suite_min_on_aa_images_by", "aa_warning_texts",
            "blackbox_gap_paired", "blackbox_gap_paired_by", "blackbox_gap_paired_n"]
    out = {}
    for model, rows in bits.groupby("model"):
        n = n_of.get(model)
        if n is None or not np.isfinite(n):
            continue
        worst = worst_case_bits(rows, int(n), HEADLINE_EPS)
        on_cc = suite_min_on_crosscheck(rows, int(n), HEADLINE_EPS)
        bb = blackbox_gap_on_its_images(rows, int(n), HEADLINE_EPS)
        texts = [t for w in rows[rows.threat == "autoattack_crosscheck"].get("autoattack_warnings", [])
                 if isinstance(w, list) for t in w]
        out[model] = {"robust_worst": np.nan if worst is None else float(worst.mean()),
                      "suite_min_on_aa_images": on_cc[0] if on_cc else np.nan,
                      "suite_min_on_aa_images_by": on_cc[1] if on_cc else np.nan,
                      "aa_warning_texts": " | ".join(dict.fromkeys(texts)) if texts else np.nan,
                      "blackbox_gap_paired": round(bb[0], 9) if bb else np.nan,
                      "blackbox_gap_paired_by": bb[1] if bb else np.nan,
                      "blackbox_gap_paired_n": bb[2] if bb else np.nan}
    return pd.DataFrame.from_dict(out, orient="index", columns=cols).astype(
        {"robust_worst": float, "suite_min_on_aa_images": float, "blackbox_gap_paired": float,
         "blackbox_gap_paired_n": float})


def leaderboard(tidy: pd.DataFrame, bits: pd.DataFrame | None = None,
                latest: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per model: clean accuracy, robust_min (the minimum robust accuracy over every
    Linf attack and view at 8/255, the only number that counts as robustness), the per-image
    worst case, AutoAttack, the masking verdict and its evidence, one column per
    attack/view/eps, the corruption, natural-shift and shifted-test-set columns, provenance.
    ``latest``: latest_runs(tidy) where the caller has it already (0.6 s a call on results/cpu)."""
    df = latest_runs(tidy) if latest is None else latest
    if df.empty:
        return pd.DataFrame(columns=ID_COLS + ["clean", "robust_min"])
    ids = df.groupby("model")[ID_COLS + ["model_source", "T_source"]].first().rename(
        columns={"model_source": "source"})
    board = ids.copy()
    clean_rows = df[(df.threat == "clean") & (df.metric == "accuracy")]
    # the row's n is its evaluation's (latest_runs), not whichever measurement came first
    board["n"] = clean_rows.groupby("model")["n"].max().reindex(board.index).fillna(board["n"]).astype(int)
    clean = clean_rows.groupby("model")["value"].mean()
    board["clean"] = clean
    attacked = df[(df.family == "attack") & (df.metric == "robust_acc")].copy()
    if not attacked.empty:
        attacked["norm"] = attacked.threat.map(threat_norm)
        attacked["col"] = [threat_column(t, v, e) for t, v, e in zip(attacked.threat, attacked.view, attacked.eps)]
        wide = attacked.pivot_table(index="model", columns="col", values="value", aggfunc="min")
        linf = attacked[attacked.norm == "linf"]
        head = linf[np.isclose(linf.eps, HEADLINE_EPS)]
        if not head.empty:
            board["robust_min"], board["robust_min_by"], min_n = _min_over(head)
            if (part := _on_part(min_n, board)) is not None:
                board["robust_min_n"] = part
        if bits is not None:
            board = board.join(worst_case(latest_runs(bits, one_budget=False), board["n"]))
        aa = head[head.threat == "autoattack"]
        if not aa.empty:
            strongest = aa.loc[aa.groupby("model")["value"].idxmin()].set_index("model")
            board["autoattack"] = strongest["value"]
            if (part := _on_part(strongest["n"], board)) is not None:
                board["autoattack_n"] = part
            budget = strongest["params"].map(aa_budget)
            if budget.notna().any():  # a reduced budget is a weaker attack than AutoAttack: said beside it
                board["autoattack_budget"] = budget
        for (norm, eps), rows in attacked.groupby(["norm", "eps"]):
            if norm == "linf" and np.isclose(eps, HEADLINE_EPS):
                continue
            col = f"robust_min{'_l2' if norm == 'l2' else ''}@{format_eps(eps)}"
            board[col] = rows.groupby("model")["value"].min()
        board = board.join(wide[sorted(wide.columns)])
        for metric, short in (("zero_grad_frac", "zero_grad"), ("saturated_frac", "saturated")):
            diag = df[df.metric == metric].pivot_table(index="model", columns="view", values="value", aggfunc="max")
            for view in diag.columns:
                board[f"{short}_{view}"] = diag[view]
    if "robust_min" not in board:
        board["robust_min"] = np.nan
    board = audit.add_audit_columns(df, board, HEADLINE_EPS)
    board = add_calibration_columns(df, board)
    board = add_corruption_columns(df, board)
    board = add_natural_and_shift_columns(df, board)
    board = add_cost_columns(df, board)
    board = board.join(provenance(df))
    front = ID_COLS + [c for c in ["source", "T_source", "clean", "robust_min", "robust_min_by", "robust_min_n",
                                   "robust_worst", "autoattack", "autoattack_n", "masking", "masking_reasons",
                                   "masking_unchecked"]
                       if c in board.columns]
    board = board[front + [c for c in board.columns if c not in front]]
    return board.sort_values(["robust_min", "clean"], ascending=False, na_position="last").reset_index(drop=True)


# how provenance() joins a row's several commits and devices
SEPARATORS = {"code_version": ", ", "device": DEVICE_SEP}


def provenance(df: pd.DataFrame) -> pd.DataFrame:
    """Per model, how its row was measured: every commit and device its measurements name, in the
    order they first measured it (a resumed or re-measured row has several, and one of them alone
    would name a commit and machine that made only part of it), the first and the latest time."""
    def distinct(sep):
        return lambda values: sep.join(dict.fromkeys(values.dropna().astype(str)))
    timed = df.sort_values("timestamp", kind="stable")
    return timed.groupby("model").agg(code_version=("code_version", distinct(SEPARATORS["code_version"])),
                                      device=("device", distinct(SEPARATORS["device"])),
                                      first_timestamp=("timestamp", "min"), timestamp=("timestamp", "max"),
                                      weights_sha256=("weights_sha256", "last"))


def time_span(first, last) -> str:
    """"first to last", or last alone where the row was measured once (or its first is unknown)."""
    first, last = str(first), str(last)
    return last if first in ("", "nan", last) else f"{first} to {last}"


def _baseline(board: pd.DataFrame, row) -> str | None:
    """The mCE baseline of a model: the T=1 model of the same dataset, architecture, head, regime
    and seed (fixed lr); else any T=1 model of that dataset and architecture. No AlexNet reference
    exists for CIFAR. Another dataset's T=1 model errs on other images: no baseline at all."""
    same = board[(board.arch == row.arch) & (board.dataset == row.dataset) & np.isclose(board["T"], 1.0) &
                 ~board.lr_scale.astype(bool)]
    exact = same[(same["head"] == row["head"]) & (same.regime == row.regime) & (same.seed == row.seed) &
                 (same.checkpoint == row.checkpoint)]
    pick = exact if len(exact) else same
    return pick.index[0] if len(pick) else None


def add_corruption_columns(df: pd.DataFrame, board: pd.DataFrame) -> pd.DataFrame:
    """mCA (mean accuracy over the 15 benchmark corruptions x severities, RobustBench's CIFAR-10-C
    figure), per-severity means, the extra-4 mean, the relative drop from clean, and the mean
    corruption error (Hendrycks & Dietterich 2019) plain and relative (clean error subtracted),
    normalised by each model's T=1 baseline from the same grid, over the (corruption, severity)
    cells the two share (none shared: no mCE)."""
    c = df[(df.threat == "corruption") & (df.metric == "accuracy")]
    if c.empty:
        return board
    bench = c[c.corruption.isin(BENCHMARK)]
    board["c_source"] = c.groupby("model")["source"].first()
    # what the mean is over, so that an export never calls a partial mean RobustBench's figure
    board["c_n"] = bench.groupby("model")["n"].max()
    board["c_corruptions"] = bench.groupby("model")["corruption"].nunique()
    board["c_severities"] = bench.groupby("model")["severity"].apply(
        lambda s: ",".join(f"{v:g}" for v in sorted(s.dropna().unique())))
    # clean accuracy on the corruption subset itself (it may be smaller than the attack subset)
    c_clean = c[c.corruption == "none"].groupby("model")["value"].mean().reindex(board.index).fillna(board["clean"])
    board["c_clean"] = c_clean
    board["mCA"] = bench.groupby("model")["value"].mean()
    for sev in sorted(bench.severity.dropna().unique()):
        board[f"mCA_s{int(sev)}"] = bench[bench.severity == sev].groupby("model")["value"].mean()
    board["extra4"] = c[c.corruption.isin(EXTRA)].groupby("model")["value"].mean()
    board["c_rel_drop"] = (c_clean - board["mCA"]) / c_clean
    # a ratio of sums over severities is Hendrycks' CE only where both models sum over the same
    # (corruption, severity) cells: a model corrupted at severity 3 alone, against a baseline's five,
    # had an mCE near 45% for errors like the baseline's
    rows_of = {m: rows.assign(err=1 - rows.value, cell=list(zip(rows.corruption, rows.severity)))
               for m, rows in bench.groupby("model")}
    mce, rmce, base_of = {}, {}, {}
    for model in board.index:
        base = _baseline(board, board.loc[model])
        if base is None or base not in rows_of or model not in rows_of:
            continue
        shared = set(rows_of[model].cell) & set(rows_of[base].cell)
        if not shared:  # no cell in common: no ratio means anything
            continue
        e, eb = (rows_of[m][rows_of[m].cell.isin(shared)].groupby("corruption")["err"] for m in (model, base))
        base_of[model] = base
        mce[model] = (e.sum() / eb.sum()).mean()
        # the clean error subtracted once per severity summed; a baseline whose corrupted error is its
        # clean error has no relative CE on that corruption
        rel_base = eb.sum() - eb.count() * (1 - c_clean[base])
        rel = (e.sum() - e.count() * (1 - c_clean[model])) / rel_base.where(rel_base.abs() > 1e-12)
        rmce[model] = rel.mean()
    board["mCE"] = pd.Series(mce, dtype=float)
    board["rel_mCE"] = pd.Series(rmce, dtype=float)
    board["mCE_baseline"] = pd.Series(base_of, dtype=object)
    return board


def add_calibration_columns(df: pd.DataFrame, board: pd.DataFrame) -> pd.DataFrame:
    """ece_<view>, nll_<view> for raw, scaled and posthoc, and the cross-fitted posthoc_T."""
    cal = df[df.threat == "calibration"]
    for view in ("raw", "scaled", "posthoc"):
        for metric in ("ece", "nll"):
            rows = cal[(cal.view == view) & (cal.metric == metric)]
            if len(rows):
                board[f"{metric}_{view}"] = rows.groupby("model")["value"].mean()
    t = cal[cal.metric == "posthoc_T"]
    if len(t):
        board["posthoc_T"] = t.groupby("model")["value"].mean()
    return board


def add_cost_columns(df: pd.DataFrame, board: pd.DataFrame) -> pd.DataFrame:
    """What the attack suite cost (bench/measure/adversarial.py counts it per measurement): cost_fwd_per_img,
    cost_bwd_per_img and cost_wall_s summed over the clean pass and every attack measurement
    (views, eps sweep, transfer), and the forward/backward passes per image of the attack that
    gave robust_min, so that a stronger number can be weighed against its price."""
    suite = df[df.family.isin(["clean", "attack"])]
    per_img = suite[suite.metric.isin(["forward_per_image", "backward_per_image"])]
    if per_img.empty:  # records written before the harness counted passes
        return board
    wide = per_img.pivot_table(index=["model", "threat", "view", "eps", "params"], columns="metric", values="value",
                               aggfunc="mean").reset_index()
    walls = per_img[per_img.metric == "forward_per_image"]
    board["cost_fwd_per_img"] = wide.groupby("model")["forward_per_image"].sum()
    board["cost_bwd_per_img"] = wide.groupby("model")["backward_per_image"].sum()
    board["cost_wall_s"] = walls.groupby("model")["wall_s"].sum()
    if "robust_min_by" in board:
        head = wide[np.isclose(wide.eps.astype(float), HEADLINE_EPS)]
        for metric, col in (("forward_per_image", "robust_min_fwd_per_img"),
                            ("backward_per_image", "robust_min_bwd_per_img")):
            cost = {}
            for model, by in board["robust_min_by"].dropna().items():
                threat, view = by.split("/", 1)
                rows = head[(head.model == model) & (head.threat == threat) & (head.view == view)]
                if len(rows):
                    cost[model] = rows[metric].min()
            board[col] = pd.Series(cost, dtype=float)
    return board


def add_natural_and_shift_columns(df: pd.DataFrame, board: pd.DataFrame) -> pd.DataFrame:
    """nat_<transform>: mean accuracy over its magnitude sweep; nat_worst_grid; cifar10.1 and its
    gap to the clean test accuracy."""
    nat = df[(df.family == "natural") & (df.metric == "accuracy")]
    for t in nat.threat.unique():
        board[f"nat_{t}"] = nat[nat.threat == t].groupby("model")["value"].mean()
    shift = df[(df.family == "shift") & (df.metric == "accuracy")]
    for t in shift.threat.unique():
        board[t] = shift[shift.threat == t].groupby("model")["value"].mean()
        board[f"{t}_gap"] = board["clean"] - board[t]
    return board


def summary(board: pd.DataFrame) -> str:
    """The table printed at the end of a run: accuracies in percent, the main columns only."""
    if board.empty:
        return "(no results)"
    cols = ["model", "T", "dataset", "n", "clean", "robust_min", "robust_min_by", "robust_min_n", "robust_worst",
            "autoattack", "autoattack_n", "masking"]
    # CE-PGD on each view (the number claim A reports, and the one masking inflates), the masking
    # signals, the shift summaries; every other column is in leaderboard.csv
    cols += ["pgd_raw@8/255", "pgd_scaled@8/255", "zero_grad_raw", "saturated_raw", "mCA", "mCE", "nat_worst_grid",
             "cifar10.1"]
    if len([c for c in cols if c in board.columns]) <= 12:  # a small run: show every attack
        cols += [c for c in board.columns if "@" in c and not c.startswith("robust_min") and c not in cols]
    # and, whatever the run's size, the column of each attack robust_min_by names: the table says
    # "mifgsm/raw" set the minimum, so it shows mifgsm_raw@8/255 beside it
    by = board["robust_min_by"].dropna().unique() if "robust_min_by" in board.columns else []
    cols += [c for c in dict.fromkeys(threat_column(*b.split("/", 1), HEADLINE_EPS) for b in by) if c not in cols]
    note = ""
    other = [c for c in board.columns if c.startswith("robust_min@")]
    # e.g. --eps 4/255: rows attacked, but not at the headline radius. A row attacked nowhere (a
    # clean-only arm) or one beside an eps sweep has nothing to point to
    elsewhere = board["robust_min"].isna() & board[other].notna().any(axis=1)
    if elsewhere.any():
        other = [c for c in other if board.loc[elsewhere, c].notna().any()]
        cols[cols.index("robust_min") + 1:cols.index("robust_min") + 1] = other
        some = "" if elsewhere.all() else f" for {int(elsewhere.sum())} of these models"
        note = (f"\nrobust_min is defined at {format_eps(HEADLINE_EPS)}; this run measured "
                f"{', '.join(c.split('@', 1)[1] for c in other)}{some}: see {', '.join(other)}")
    if "masking_unchecked" in board.columns:
        cleared = board[(board["masking"] == "none") & board["masking_unchecked"].fillna("").astype(bool)]
        if len(cleared):
            names = [n for n in audit.CHECKS if any(n in u.split(", ") for u in cleared["masking_unchecked"])]
            some = "" if len(cleared) == len(board) else f" for {len(cleared)} of these models"
            note += (f"\nmasking none: no signal fired among the checks with evidence; not checked{some} "
                     f"(each needs a measurement this run lacks): {', '.join(names)} "
                     f"(masking_unchecked in leaderboard.csv; --attack suite measures them)")
    show = board[[c for c in cols if c in board.columns]].copy()
    for c in show.columns:
        if c not in ("model", "T", "dataset", "n", "robust_min_by", "robust_min_n", "autoattack_n", "mCE_baseline",
                     "c_source", "masking"):
            # Python's rounding of the float, as the job log, the HTML page and the README tables
            # print it: numpy's .round(1) turns 607/2000 into 30.4 where they say 30.3
            show[c] = [float(f"{100 * v:.1f}") for v in show[c]]
    return show.to_string(index=False) + note
