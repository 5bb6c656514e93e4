"""Fit claim B's analytical temperature, T* = alpha*sqrt(M) + beta [+ gamma*ln(CSG) + delta*ln(K)],
to the best training temperatures that the harness's own sweeps found.

    python -m bench.tools.fit_temperature --results results/tstar [--results DIR ...] [--plot PATH]
        [--head bn|plain|all] [--csg NAME=VALUE ...] [--csg-json FILE] [--interpolate] [--json OUT]

From the tidy table of each results store: clean accuracy (threat "clean", metric "accuracy") of
standard-training (regime "std"), fixed-lr (no loss x T) models; per group (arch, M, dataset,
head), the mean over seeds at each T; the best T is the T of the highest mean. A group needs at
least 3 temperatures. With ``--interpolate`` the best T is refined by a parabola in ln T through
the best grid point and its two neighbours (a coarse grid such as 1, 2, 5, 10 otherwise limits the
answer to grid points).

A model trained at claim B's own T* (<arch>_Tauto) is a point of its group's sweep like any
other, but where it is the best, "the best T follows the formula" rests on the formula's own
point: such a group says so (best_is_tauto) and gives the best T of the sweep without the T*
models beside it (best_T_without_tauto); ``--without-tauto`` fits without them.

The least-squares fit reports each coefficient with a 95% interval from the OLS standard errors
(Student t; the residual variance at least the grid cells' spread, since a best T read off a grid
says only that the optimum lies in its cell: three points on a line by chance are no exact fit),
and, when there are few points (``BOOTSTRAP_MIN_POINTS`` to ``BOOTSTRAP_MAX_POINTS``, with at
least ``BOOTSTRAP_MIN_DOF`` residual degrees of freedom), also a percentile bootstrap over the
points. Below that a resample of the points is mostly an exact fit through as many distinct widths
as there are terms, whose spread is no interval (3 points gave one excluding the fit itself).
gamma and delta enter only where the data can identify them: CSG values for every dataset (given
by the user, never computed here: see ``python -m bench.csg``) and at least two distinct values,
the same for the class counts; a term collinear with the others is left out, with a note.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from bench.atomic import check_output_file, user_path, write_atomic, write_json_atomic
from bench.command import Parser, finish
from bench.report.columns import is_tauto, latest_runs
from bench.errors import BenchError
from bench.store import ResultStore
from models.registry import TAUTO_MIN

PUBLISHED = {"alpha": 0.7239, "beta": -4.706}  # Hasegawa & Sakai 2025; gamma, delta unpublished
MIN_TEMPERATURES = 3  # per group: fewer cannot show an interior maximum
BOOTSTRAP_MAX_POINTS = 30
BOOTSTRAP_MIN_POINTS, BOOTSTRAP_MIN_DOF = 10, 5
# what bench.csg records beside a value, besides its embedding, that changes it: the split it drew
# the neighbour pool from, the points per class, the neighbours, the Parzen division
CSG_SETTINGS = ("split", "m_per_class", "k", "parzen")
GROUP = ["arch", "feature_dim", "dataset", "head"]
TERMS = {  # name -> (column of the design matrix, how it prints)
    "alpha": ("sqrt_M", "sqrt(M)"),
    "beta": ("const", "1"),
    "gamma": ("ln_csg", "ln(CSG)"),
    "delta": ("ln_classes", "ln(num_classes)"),
}
SWEEP_HINT = ("a T sweep of BN-head models at 2 or more feature dimensions with at least 3 temperatures "
              "each, e.g. a profile [[grid]] with "
              "arch = [\"fastnetw8\", \"fastnetw16\", \"fastnetw32\", \"fastnetw64\"] (M = 32, 64, 128, 256), "
              "bn_head = true, T = [0.5, 1, 2, 5, 10, 20, 50] (see python -m bench.run --list-models)")


# --- the best temperature per group -------------------------------------------------------------

def read_tables(results_dirs: Sequence[str]) -> pd.DataFrame:
    """The tidy tables of several results stores, concatenated."""
    frames = []
    for d in results_dirs:
        path = Path(d)
        if path.exists() and not path.is_dir():
            raise BenchError(f"--results {path} is a file, not a results folder: give the folder a run wrote (with "
                             f"records/ in it)")
        if not path.is_dir():
            raise BenchError(f"results folder {path} does not exist")
        frames.append(ResultStore(path).table())
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _as_bool(s: pd.Series) -> pd.Series:
    # the store holds JSON booleans; a CSV round trip turns them into strings
    return s.map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))


def clean_accuracy(tidy: pd.DataFrame, head: Optional[str] = "bn", without_tauto: bool = False) -> pd.DataFrame:
    """Per (group, T): mean clean accuracy over seeds, of standard, fixed-lr models; ``tauto``:
    the temperature is there only as T* models' (``without_tauto``: those are left out)."""
    if tidy.empty:
        return pd.DataFrame(columns=GROUP + ["num_classes", "T", "accuracy", "n_seeds", "tauto"])
    df = latest_runs(tidy)
    regime = df["regime"].fillna("std")
    # a record may leave feature_dim null (a model whose width is not known): no M, no place in the fit
    keep = (df.threat == "clean") & (df.metric == "accuracy") & (regime == "std") & ~_as_bool(df.lr_scale) \
        & df.feature_dim.notna()
    if head is not None:
        keep &= df["head"] == head
    df = df[keep].astype({"T": float, "feature_dim": int, "value": float})
    df = df.assign(tauto=df.model.map(is_tauto))
    if without_tauto:
        df = df[~df.tauto]
    if df.empty:
        return pd.DataFrame(columns=GROUP + ["num_classes", "T", "accuracy", "n_seeds", "tauto"])
    per_model = df.groupby(GROUP + ["num_classes", "T", "seed"], as_index=False).agg(
        value=("value", "mean"), tauto=("tauto", "all"))
    out = per_model.groupby(GROUP + ["num_classes", "T"], as_index=False).agg(
        accuracy=("value", "mean"), n_seeds=("seed", "nunique"), tauto=("tauto", "all"))
    return out.sort_values(GROUP + ["T"]).reset_index(drop=True)


def _parabola_peak(t: np.ndarray, acc: np.ndarray, i: int) -> float:
    """The vertex, in ln T, of the parabola through the best point and its neighbours; the grid
    point itself where the best is at an edge or the three points are not concave."""
    if i == 0 or i == len(t) - 1:
        return float(t[i])
    x = np.log(t[i - 1:i + 2])
    a, b, _ = np.polyfit(x, acc[i - 1:i + 2], 2)
    if a >= 0:
        return float(t[i])
    return float(np.exp(np.clip(-b / (2 * a), x[0], x[2])))


def grid_resolution_sd(t: np.ndarray, i: int) -> float:
    """The sd of where the optimum lies, in T, given only that grid point ``i`` of the sorted grid
    ``t`` has the best mean: anywhere in its cell, from the geometric midpoint with the point
    below to the one with the point above (an edge's cell mirrored), uniformly: width / sqrt(12)."""
    lo = math.sqrt(t[i - 1] * t[i]) if i > 0 else t[i] ** 2 / math.sqrt(t[i] * t[i + 1])
    hi = math.sqrt(t[i] * t[i + 1]) if i < len(t) - 1 else t[i] ** 2 / math.sqrt(t[i - 1] * t[i])
    return float((hi - lo) / math.sqrt(12))


def best_temperatures(acc: pd.DataFrame, interpolate: bool = False) -> Tuple[pd.DataFrame, List[str]]:
    """One row per group: its best T, the accuracy there, the grid, and whether the best is at
    the grid's edge (then the true optimum may lie outside it); whether the best is a T* model's
    (best_is_tauto) and, where it is, the best T without the T* models (best_T_without_tauto,
    else None). Also the groups skipped."""
    rows, skipped = [], []
    tauto = acc["tauto"] if "tauto" in acc else pd.Series(False, index=acc.index)
    for key, g in acc.assign(tauto=tauto.astype(bool)).groupby(GROUP, sort=True):
        g = g.sort_values("T")
        t, a = g["T"].to_numpy(float), g["accuracy"].to_numpy(float)
        name = "/".join(str(k) for k in key)
        if len(t) < MIN_TEMPERATURES:
            skipped.append(f"{name} ({len(t)} temperature{'s' if len(t) != 1 else ''})")
            continue
        i = int(np.argmax(a))  # ties: the lowest T
        star = g["tauto"].to_numpy(bool)
        without, edge_without = None, None
        if star[i] and (~star).any():  # the formula's own point wins: what the sweep says without it
            ts, acs = t[~star], a[~star]
            j = int(np.argmax(acs))
            without = _parabola_peak(ts, acs, j) if interpolate else float(ts[j])
            edge_without = bool(j in (0, len(ts) - 1))
        seeds = g["n_seeds"].to_numpy(int)
        rows.append(dict(zip(GROUP, key), num_classes=int(g["num_classes"].iloc[0]),
                         best_T=_parabola_peak(t, a, i) if interpolate else float(t[i]), grid_best_T=float(t[i]),
                         best_acc=float(a[i]), n_T=len(t), n_seeds=int(g["n_seeds"].min()),
                         edge=bool(i in (0, len(t) - 1)),
                         # a grid point says only that the optimum lies in its cell; a parabola's vertex is
                         # a value (its own error is the curve's, not counted here)
                         resolution_sd=0.0 if interpolate else grid_resolution_sd(t, i),
                         # the argmax favours a mean of fewer seeds (a noisier one): said where it won
                         best_seeds=int(seeds[i]), fewer_seeds_won=bool(seeds[i] < seeds.max()),
                         grid=" ".join(f"{v:.4g}" for v in t),
                         # n_seeds is the fewest; a sweep with seeds at some T has them here
                         seeds_per_T=" ".join(f"{v:.4g}:{k}" for v, k in zip(t, g["n_seeds"])),
                         tauto_T=" ".join(f"{v:.4g}" for v in t[star]), best_is_tauto=bool(star[i]),
                         best_T_without_tauto=without, edge_without_tauto=edge_without))
    cols = GROUP + ["num_classes", "best_T", "grid_best_T", "best_acc", "n_T", "n_seeds", "edge", "resolution_sd",
                    "best_seeds", "fewer_seeds_won", "grid", "seeds_per_T", "tauto_T", "best_is_tauto",
                    "best_T_without_tauto", "edge_without_tauto"]
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["dataset", "head", "feature_dim", "arch"]).reset_index(drop=True), skipped


# --- the fit ------------------------------------------------------------------------------------

@dataclass
class Fit:
    terms: List[str]  # among alpha, beta, gamma, delta
    coef: Dict[str, float]
    se: Dict[str, float]
    ci: Dict[str, Tuple[float, float]]  # 95%, OLS t
    n_points: int
    residual_sd: float
    r2: float
    bootstrap_ci: Dict[str, Tuple[float, float]] = field(default_factory=dict)
    n_bootstrap: int = 0  # resamples used (rank-deficient ones are dropped)
    notes: List[str] = field(default_factory=list)

    def predict(self, sqrt_m, ln_csg=0.0, ln_classes=0.0):
        c = self.coef
        return (c["alpha"] * np.asarray(sqrt_m, float) + c["beta"] + c.get("gamma", 0.0) * ln_csg
                + c.get("delta", 0.0) * ln_classes)

    def to_dict(self) -> dict:
        return {"terms": self.terms, "coef": self.coef, "se": self.se, "ci95": self.ci, "n_points": self.n_points,
                "residual_sd": self.residual_sd, "r2": self.r2, "bootstrap_ci95": self.bootstrap_ci,
                "n_bootstrap": self.n_bootstrap, "notes": self.notes, "published": PUBLISHED}


def design(points: pd.DataFrame, csg: Optional[Dict[str, float]] = None) -> Tuple[np.ndarray, List[str], List[str]]:
    """The design matrix, the terms it holds, and notes on the terms left out."""
    cols = {"alpha": np.sqrt(points["feature_dim"].to_numpy(float)), "beta": np.ones(len(points))}
    notes = []
    if csg:
        missing = sorted(set(points["dataset"]) - set(csg))
        if missing:
            raise BenchError(f"no CSG value for dataset(s) {', '.join(missing)}: add --csg NAME=VALUE "
                             f"(python -m bench.csg computes it)")
        values = points["dataset"].map(csg).to_numpy(float)
        if not np.all(values > 0):
            raise BenchError("CSG values must be positive (their logarithm enters the fit)")
        if len(np.unique(values)) > 1:
            cols["gamma"] = np.log(values)
        else:
            notes.append("gamma not fitted: every point has the same CSG")
    classes = points["num_classes"].to_numpy(float)
    if len(np.unique(classes)) > 1:
        cols["delta"] = np.log(classes)
    terms, kept = [], []
    for name, col in cols.items():
        trial = np.column_stack(kept + [col])
        if np.linalg.matrix_rank(trial) == trial.shape[1]:
            terms.append(name)
            kept.append(col)
        else:
            notes.append(f"{name} not fitted: {TERMS[name][1]} is collinear with the other terms on these points")
    return np.column_stack(kept), terms, notes


def _ols(x: np.ndarray, y: np.ndarray):
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return coef


def fit_tstar(points: pd.DataFrame, csg: Optional[Dict[str, float]] = None, *, n_boot: int = 2000,
              seed: int = 0, bootstrap: Optional[bool] = None) -> Fit:
    """Least squares of best_T on sqrt(M) (+ ln CSG, ln num_classes where identifiable)."""
    from scipy import stats
    x, terms, notes = design(points, csg)
    y = points["best_T"].to_numpy(float)
    n, p = x.shape
    if "alpha" not in terms or "beta" not in terms or n <= p:
        raise BenchError(f"too few groups to fit T* = alpha*sqrt(M) + beta: {n} point(s) with "
                         f"{points['feature_dim'].nunique()} distinct M; need at least {p + 1} points and "
                         f"2 distinct M. Run {SWEEP_HINT}")
    coef = _ols(x, y)
    resid = y - x @ coef
    dof = n - p
    s2 = float(resid @ resid) / dof
    scatter_sd = math.sqrt(s2)
    # each best T is a grid point: the optimum is somewhere in its cell, so the points scatter about
    # the line by at least the cells' spread, however well they happen to line up (results/cpu
    # without T*: 2, 2, 2 at three widths, a residual of 1e-16 and an interval of zero width that
    # called the published coefficients "outside")
    floor = float(np.mean(np.square(points["resolution_sd"]))) if "resolution_sd" in points else 0.0
    if floor > s2:
        notes.append(f"residual variance taken at the grid's resolution, {floor:.3g} (the best T's are grid points, "
                     f"each somewhere in its cell), not the points' own scatter about the line, {s2:.3g}")
        s2 = floor
    cov = s2 * np.linalg.inv(x.T @ x)
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    tq = stats.t.ppf(0.975, dof)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    fit = Fit(terms, dict(zip(terms, map(float, coef))), dict(zip(terms, map(float, se))),
              {t: (float(c - tq * s), float(c + tq * s)) for t, c, s in zip(terms, coef, se)},
              n, scatter_sd, 1 - float(resid @ resid) / ss_tot if ss_tot > 0 else float("nan"), notes=notes)
    if bootstrap is None:
        bootstrap = n <= BOOTSTRAP_MAX_POINTS
    if bootstrap and (n < BOOTSTRAP_MIN_POINTS or dof < BOOTSTRAP_MIN_DOF):
        bootstrap = False
        fit.notes.append(f"no bootstrap interval: {n} points for {p} terms (it needs {BOOTSTRAP_MIN_POINTS} points "
                         f"and {BOOTSTRAP_MIN_DOF} to spare)")
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(n_boot):
            idx = rng.integers(0, n, n)
            if np.linalg.matrix_rank(x[idx]) == p:  # a resample may repeat one M only
                draws.append(_ols(x[idx], y[idx]))
        if len(draws) >= 100:
            d = np.array(draws)
            fit.bootstrap_ci = {t: (float(np.percentile(d[:, j], 2.5)), float(np.percentile(d[:, j], 97.5)))
                                for j, t in enumerate(terms)}
            fit.n_bootstrap = len(draws)
    return fit


# --- the plot -----------------------------------------------------------------------------------

def plot_fit(points: pd.DataFrame, fit: Fit, path: Path, csg: Optional[Dict[str, float]] = None) -> Path:
    """Best T against sqrt(M), one marker per (head, dataset); the fitted line (one per dataset
    where CSG or the class count enters) and the published one. Linear axes. Written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    sm = np.sqrt(points["feature_dim"].to_numpy(float))
    xs = np.linspace(0, sm.max() * 1.1, 200)
    markers = "osD^vP*X"
    colours = plt.cm.tab10.colors
    keys = sorted({(h, d) for h, d in zip(points["head"], points["dataset"])})
    datasets = sorted(set(points["dataset"]))
    for i, (h, d) in enumerate(keys):
        sel = (points["head"] == h) & (points["dataset"] == d)
        colour = colours[datasets.index(d) % 10]
        edge = sel & points["edge"]
        ax.scatter(sm[sel & ~points["edge"]], points.loc[sel & ~points["edge"], "best_T"], marker=markers[i % 8],
                   color=colour, s=42, label=f"{d}, {h} head", zorder=3)
        if edge.any():  # the optimum may lie beyond the grid: hollow
            ax.scatter(sm[edge], points.loc[edge, "best_T"], marker=markers[i % 8], facecolors="none",
                       edgecolors=colour, s=42, zorder=3)
    starred = points["best_is_tauto"].astype(bool) if "best_is_tauto" in points else pd.Series(False, points.index)
    if starred.any():  # a best T that is the formula's own point, and what the sweep says without it
        other = points.loc[starred, "best_T_without_tauto"].astype(float)
        ax.scatter(sm[starred], points.loc[starred, "best_T"], marker="o", facecolors="none", edgecolors="k",
                   s=130, linewidths=0.8, zorder=2, label="best T is the T* (_Tauto) model's own")
        ax.scatter(sm[starred], other, marker="x", color="0.4", s=42, zorder=3,
                   label="best T of the sweep without the T* model")
        at_edge = starred & points.get("edge_without_tauto", pd.Series(False, points.index)).fillna(False).astype(bool)
        if at_edge.any():  # hollow, as the grid's-edge points above: a bound, not a value
            ax.scatter(sm[at_edge], points.loc[at_edge, "best_T_without_tauto"].astype(float), marker="s",
                       facecolors="none", edgecolors="0.4", s=70, zorder=3,
                       label="... at the edge of that grid")
    extra = [t for t in ("gamma", "delta") if t in fit.terms]
    for d in datasets if extra else [None]:
        ln_csg = math.log(csg[d]) if "gamma" in fit.terms else 0.0
        k = points.loc[points["dataset"] == d, "num_classes"].iloc[0] if d else 1
        ln_k = math.log(k) if "delta" in fit.terms else 0.0
        colour = colours[datasets.index(d) % 10] if d else "C3"
        a, b = fit.coef["alpha"], fit.coef["beta"]
        where = ""
        if d:
            where = " (" + ", ".join([d] + (["CSG %.3g" % csg[d]] if "gamma" in fit.terms else [])
                                     + ([f"K {k}"] if "delta" in fit.terms else [])) + ")"
        ax.plot(xs, fit.predict(xs, ln_csg, ln_k), color=colour, linewidth=1.6,
                label=f"fit{where}: {a:.3f} sqrt(M) {'+' if b >= 0 else '-'} {abs(b):.3f}"
                      f"{' + ' + ' + '.join(extra) + ' terms' if extra else ''}")
    pub = np.maximum(TAUTO_MIN, PUBLISHED["alpha"] * xs + PUBLISHED["beta"])
    ax.plot(xs, pub, "k--", linewidth=1.2,
            label=f"published: {PUBLISHED['alpha']} sqrt(M) - {abs(PUBLISHED['beta'])} (clipped at {TAUTO_MIN})")
    ax.set_xlabel("sqrt(M), M = feature dimension")
    ax.set_ylabel("best training temperature T (clean accuracy)")
    ax.set_xlim(0, xs.max())
    ax.set_ylim(bottom=0)
    ax.set_title(f"T* vs feature dimension: {fit.n_points} groups (hollow: best T at the grid's edge)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        write_atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)
    return Path(path)


# --- the command line ---------------------------------------------------------------------------

def parse_csg(pairs: Sequence[str], json_path: Optional[str]) -> Dict[str, float]:
    """CSG per dataset from NAME=VALUE pairs and/or a JSON file ({name: value} or the
    {name: {"value": ..., "embedding": ...}} that python -m bench.csg writes). One embedding only."""
    out: Dict[str, float] = {}
    embeddings: Dict[str, str] = {}
    made: Dict[str, dict] = {}
    if json_path:
        path = Path(json_path)
        if not path.is_file():
            raise BenchError(f"CSG file {path} does not exist")
        try:
            table = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise BenchError(f"CSG file {path} is not valid JSON ({e})") from None
        if not isinstance(table, dict):
            raise BenchError(f"CSG file {path} must hold an object {{dataset: value}}")
        for name, v in table.items():
            if isinstance(v, dict):
                if "embedding" in v:
                    embeddings[name] = str(v["embedding"])
                # the neighbour pool and graph make the value too (bench/csg.py: 4.1 on CIFAR-10's test
                # split, 3.5 on its train): values made otherwise are not comparable either
                made[name] = {k: v[k] for k in CSG_SETTINGS if k in v}
                v = v.get("value")
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise BenchError(f"CSG file {path}: the value for {name!r} is not a number")
            out[name] = float(v)
    if len(set(embeddings.values())) > 1:
        listed = ", ".join(f"{n}: {e}" for n, e in sorted(embeddings.items()))
        raise BenchError(f"CSG values from different embeddings are not comparable ({listed})")
    for setting in CSG_SETTINGS:
        values = {n: m[setting] for n, m in made.items() if setting in m}
        if len({json.dumps(v) for v in values.values()}) > 1:
            listed = ", ".join(f"{n}: {json.dumps(v)}" for n, v in sorted(values.items()))
            raise BenchError(f"CSG values made with different {setting} are not comparable ({listed}): compute "
                             f"them alike (python -m bench.csg)")
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise BenchError(f"--csg expects NAME=VALUE (e.g. cifar10=3.54), got {pair!r}") from None
    bad = [n for n, v in out.items() if not (math.isfinite(v) and v > 0)]
    if bad:
        raise BenchError(f"CSG must be a positive number (its logarithm enters the fit); check {', '.join(bad)}")
    return out


def _against_published(term: str, ci) -> str:
    """' (inside the CI)' or ' (outside the CI)' for a published coefficient, '' for another."""
    if term not in PUBLISHED:
        return ""
    return " (inside the CI)" if ci[0] <= PUBLISHED[term] <= ci[1] else " (outside the CI)"


def _fmt_ci(ci) -> str:
    return f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "-"


def report(points: pd.DataFrame, fit: Fit, skipped: List[str], head: Optional[str],
           without_tauto: bool = False) -> str:
    lines = [f"best T per group ({'all heads' if head is None else head + ' head'}, regime std, fixed lr; "
             f"clean accuracy, mean over seeds{'; without the T* (_Tauto) models' if without_tauto else ''}):"]
    # the seeds behind the best T and its grid's edge without T* are said in the notes below
    shown = points.drop(columns=["best_seeds", "fewer_seeds_won", "edge_without_tauto"]).assign(
        best_acc=(100 * points.best_acc).round(2), best_T=points.best_T.round(4),
        grid_best_T=points.grid_best_T.round(4), resolution_sd=points.resolution_sd.round(3))
    if not points.resolution_sd.any():  # --interpolate: values, not cells
        shown = shown.drop(columns="resolution_sd")
    if not (points.best_T != points.grid_best_T).any():
        shown = shown.drop(columns="grid_best_T")
    starred = points["best_is_tauto"].astype(bool)
    if starred.any():  # the table itself says which best T is the formula's own point
        shown = shown.assign(best_is_tauto=starred.map({True: "T*", False: ""}),
                             best_T_without_tauto=[f"{v:.4g}" if pd.notna(v) else "-"
                                                   for v in points.best_T_without_tauto]).rename(
            columns={"best_is_tauto": "best_is", "best_T_without_tauto": "best_T_without_T*", "tauto_T": "T*"})
    else:
        shown = shown.drop(columns=["best_is_tauto", "best_T_without_tauto"] +
                           (["tauto_T"] if not points["tauto_T"].astype(bool).any() else []))
    lines.append(shown.to_string(index=False))
    for _, p in points[starred].iterrows():
        other, edge = p["best_T_without_tauto"], p.get("edge_without_tauto")
        lines.append(f"note: M={p['feature_dim']} ({p['arch']}): the best T, {p['best_T']:.4g}, is the T* model's, the "
                     f"formula's own point" + (f"; the sweep without it: {other:.4g}" if pd.notna(other) else "")
                     + (", at that grid's edge" if pd.notna(edge) and bool(edge) else "")
                     + " (--without-tauto fits without the T* models)")
    for _, p in points[points["fewer_seeds_won"].astype(bool)].iterrows():
        lines.append(f"note: M={p['feature_dim']} ({p['arch']}): the best T, {p['best_T']:.4g}, is a mean of "
                     f"{p['best_seeds']} seed(s) where other temperatures have more: a noisier mean, which an argmax "
                     f"favours (seeds per T: {p['seeds_per_T']})")
    if points["edge"].any():
        lines.append(f"note: {int(points['edge'].sum())} group(s) have their best T at the edge of the grid; "
                     f"the optimum may lie outside it")
    if skipped:
        lines.append(f"skipped (fewer than {MIN_TEMPERATURES} temperatures): {', '.join(skipped)}")
    formula = "T* = alpha*sqrt(M) + beta" + "".join(f" + {t}*{TERMS[t][1]}" for t in fit.terms[2:])
    lines.append("")
    lines.append(f"{formula}: least squares on {fit.n_points} points ({fit.n_points - len(fit.terms)} dof), "
                 f"residual sd {fit.residual_sd:.4g}, R^2 {fit.r2:.4f}")
    boot = f"bootstrap 95% CI ({fit.n_bootstrap})" if fit.bootstrap_ci else ""
    lines.append(f"{'coef':<6} {'fitted':>10} {'se':>9}  {'95% CI (OLS t)':<24} {boot:<26} published")
    for t in fit.terms:
        pub = f"{PUBLISHED[t]:g}" if t in PUBLISHED else "not published"
        inside = _against_published(t, fit.ci[t])
        lines.append(f"{t:<6} {fit.coef[t]:>10.4g} {fit.se[t]:>9.3g}  {_fmt_ci(fit.ci[t]):<24} "
                     f"{_fmt_ci(fit.bootstrap_ci.get(t)) if fit.bootstrap_ci else '':<26} {pub}{inside}")
    lines += [f"note: {n}" for n in fit.notes]
    return "\n".join(lines)


def _caveats(points: pd.DataFrame, csg: Optional[Dict[str, float]], head: Optional[str]) -> List[str]:
    """What the published-coefficient comparison rests on. A best T at the grid's edge is a bound
    (the optimum may lie beyond), fitted as a value: the fit without those groups, where one is
    possible, says whether the verdict survives. Pooled heads: the published formula is the BN
    head's (claim B), and the pooled line has no head term."""
    lines = []
    if head is None:
        lines.append("note: --head all pools BN-head and plain-head groups in one line with no head term; the "
                     "published coefficients are for the BN head (--head bn)")
    edge = points["edge"].astype(bool)
    if edge.any():
        inner = points[~edge]
        try:
            if len(inner) < 3 or inner["feature_dim"].nunique() < 2:
                raise BenchError("too few")
            fit = fit_tstar(inner, csg, bootstrap=False)
        except BenchError:
            lines.append(f"note: without the {int(edge.sum())} edge group(s), {len(inner)} remain: too few to fit, "
                         f"so the comparison with the published coefficients rests on best T values that are bounds")
            return lines
        said = [f"{t} {fit.coef[t]:.4g} {_fmt_ci(fit.ci[t])}{_against_published(t, fit.ci[t])}" for t in fit.terms]
        lines.append(f"note: without the {int(edge.sum())} edge group(s) (their best T a bound, not a value), "
                     f"{fit.n_points} points: " + ", ".join(said))
    return lines


def run(results: Sequence[str], *, head: Optional[str] = "bn", csg: Optional[Dict[str, float]] = None,
        interpolate: bool = False, plot: Optional[str] = None, json_out: Optional[str] = None,
        without_tauto: bool = False):
    """Read the stores, pick the best T per group, fit, optionally plot and write JSON.
    ``without_tauto``: the T* (_Tauto) models left out of the sweeps. Returns (points, fit, text)."""
    tidy = read_tables(results)
    points, skipped = best_temperatures(clean_accuracy(tidy, head, without_tauto), interpolate)
    if len(points) < 3 or points["feature_dim"].nunique() < 2:
        other = ""
        if head is not None and not tidy.empty:
            n_other = len(best_temperatures(clean_accuracy(tidy, None))[0]) - len(points)
            if n_other:
                others = " or ".join(f"--head {h}" for h in ("all", "bn", "plain") if h != head)
                other = f" ({n_other} group(s) with another head: {others} fits those)"
        raise BenchError(f"too few groups to fit T* = alpha*sqrt(M) + beta: found {len(points)} "
                         f"(arch, M, dataset{', head=' + head if head else ', head'}) group(s) with >= "
                         f"{MIN_TEMPERATURES} temperatures and {points['feature_dim'].nunique()} distinct M in "
                         f"{', '.join(map(str, results))}{other}; need at least 3 groups and 2 distinct M. "
                         f"Run {SWEEP_HINT}")
    fit = fit_tstar(points, csg)
    text = "\n".join([report(points, fit, skipped, head, without_tauto), *_caveats(points, csg, head)])
    if plot:
        plot_fit(points, fit, Path(plot), csg)
    if json_out:
        # null, not NaN, where a group has no best T without T* models (strict JSON readers refuse NaN)
        records = points.astype(object).where(points.notna(), None).to_dict(orient="records")
        write_json_atomic(Path(json_out), {"fit": fit.to_dict(), "points": records,
                                           "skipped": skipped, "head": head, "csg": csg or {},
                                           "interpolate": interpolate, "without_tauto": without_tauto,
                                           "results": [str(r) for r in results]})
    return points, fit, text


def main(argv=None) -> int:
    ap = Parser(
        prog="python -m bench.tools.fit_temperature",
        description="Fit T* = alpha*sqrt(M) + beta (claim B) to the best temperatures of T sweeps")
    ap.add_argument("--results", type=user_path, action="append", metavar="DIR",
                    help="a results folder (repeatable; default results/quick)")
    ap.add_argument("--head", default="bn", choices=["bn", "plain", "all"],
                    help="which classifier head's groups to fit (default bn: claim B's setting)")
    ap.add_argument("--csg", action="append", default=[], metavar="NAME=VALUE",
                    help="CSG of a dataset, e.g. cifar10-jpeg75=3.54 (repeatable)")
    ap.add_argument("--csg-json", type=user_path, metavar="FILE",
                    help="CSG per dataset, as written by python -m bench.csg --json")
    ap.add_argument("--interpolate", action="store_true",
                    help="refine each best T by a parabola in ln T through its grid neighbours")
    ap.add_argument("--without-tauto", action="store_true",
                    help="leave the models trained at claim B's own T* (_Tauto) out of the sweeps: a best T that is "
                         "the formula's own point cannot support the formula")
    ap.add_argument("--plot", type=user_path, metavar="PATH", help="write best T vs sqrt(M) with both lines as PNG")
    ap.add_argument("--json", type=user_path, metavar="PATH", help="write the fit and the points as JSON")
    args = ap.parse_args(argv)
    return finish(lambda: _fit(args), "a plot or JSON written before it is whole (each is written atomically); "
                                      "rerun the same command")


def _fit(args) -> int:
    for flag, path in (("--plot", args.plot), ("--json", args.json)):
        if path is not None:
            check_output_file(flag, Path(path), "tstar.png" if flag == "--plot" else "fit.json")
    csg = parse_csg(args.csg, args.csg_json)
    _, _, text = run(args.results or ["results/quick"], head=None if args.head == "all" else args.head,
                     csg=csg or None, interpolate=args.interpolate, plot=args.plot, json_out=args.json,
                     without_tauto=args.without_tauto)
    print(text)
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
