"""The report's vocabulary, shared by every table, plot and verdict: the headline radius, the
columns that identify a model, which run of a model counts, and how a threat is named."""
from __future__ import annotations

import json
import re
from typing import NamedTuple, Optional

import pandas as pd

from attacks import ATTACKS, HEADLINE_EPS, format_eps  # noqa: F401 - HEADLINE_EPS: the reports' vocabulary
from bench.store import unpack_bits

ID_COLS = ["model", "arch", "T", "head", "regime", "lr_scale", "seed", "checkpoint", "feature_dim", "dataset", "split",
           "n"]


def is_tauto(model: str) -> bool:
    """A model trained at claim B's own T* (<arch>_Tauto, a seed or checkpoint after it)."""
    return re.search(r"_Tauto(_|@|$)", str(model)) is not None


# what makes two rows one measurement, but for the number of images it ran on
_MEASUREMENT = ["family", "threat", "view", "eps", "params", "metric", "corruption", "severity", "magnitude"]


def latest_runs(tidy: pd.DataFrame, one_budget: bool = True) -> pd.DataFrame:
    """The rows the reports count: of each thing measured on a model, one measurement
    (results.csv keeps every row). Per model and dataset its most recently measured run key (a
    changed recipe gives a new key); of that, one subset of the test images (_one_subset), one
    evaluation (_one_evaluation), each attack at one budget (_strongest_budget;
    ``one_budget=False`` keeps every budget, as the per-image worst
    case must: an image is robust only if no attack the harness ran broke it), the corruptions of
    one source (_one_corruption_source), and a model name on two datasets as two models
    (_one_name_a_dataset). Each of these was an average of two under one name in the leaderboard
    before. A run key's weights are its latest ones: a retraining under the same key that gave other
    weights (another CPU or thread count) leaves the earlier weights' rows out, rather than one
    row mixing two networks under the newer one's hash. Takes the store's tidy table or its bits
    table (both carry eval_n, weights_sha256 and subset_seed)."""
    if tidy.empty:
        return tidy
    run = ["model", "dataset", "run_key", "weights_sha256"]
    weights = tidy.weights_sha256.fillna("")  # a record without a hash is its run key's
    last = tidy.assign(weights_sha256=weights).groupby(run)["timestamp"].max().reset_index()
    last = last.sort_values("timestamp").groupby(["model", "dataset"]).tail(1)
    out = tidy[pd.MultiIndex.from_frame(tidy[run[:3]].assign(weights_sha256=weights)).isin(
        pd.MultiIndex.from_frame(last[run]))]
    out = _one_evaluation(_one_subset(out))
    if one_budget:
        out = _strongest_budget(out)
    return _one_name_a_dataset(_one_corruption_source(out)).reset_index(drop=True)


def _one_subset(df: pd.DataFrame) -> pd.DataFrame:
    """One image subset a model (the store keys records by subset_seed, so a model evaluated again
    on other images keeps both): the subset of its largest clean evaluation, of two on as many
    images the later. Two subsets' accuracies averaged, or a robust_min taken over both, is a
    number of no set of images."""
    if "subset_seed" not in df.columns or df.subset_seed.nunique() <= 1:
        return df
    clean = df.threat == "clean"
    if "metric" in df.columns:
        clean &= df.metric == "accuracy"
    # a model without a clean measurement keeps its largest, latest subset all the same
    ranked = df.assign(_clean=clean).sort_values(["_clean", "n", "timestamp"], kind="stable")
    pick = ranked.groupby(["model", "dataset"])["subset_seed"].last()
    want = pd.Series(list(zip(df.model, df.dataset)), index=df.index).map(pick)
    return df[(df.subset_seed == want) | want.isna()]


def _one_evaluation(df: pd.DataFrame) -> pd.DataFrame:
    """The evaluation on the largest n a model's clean accuracy was measured on (a model evaluated
    again with another --n-test keeps both in the store). Kept: what ran on those n images, the
    parts of it on fewer (Square on attack_n of them, the AutoAttack cross-check: their eval_n
    says so), shifts and checks on their own n (shift_n, which may be
    more; fp64_n), and of a measurement on several n the one on the most (the stratified subsets
    are nested). Left out: attacks on fewer images that are not part of it (robust_min is a
    minimum over one set of images and parts of it), and whatever says it is part of another."""
    clean = df[df.threat == "clean"]
    if "metric" in clean.columns:
        clean = clean[clean.metric == "accuracy"]
    if clean.empty:
        return df
    at = pd.Series(list(zip(df.model, df.dataset)), index=df.index).map(clean.groupby(["model", "dataset"])["n"].max())
    part = pd.to_numeric(df["eval_n"], errors="coerce")  # bench.store.part_of, in both tables
    other = (part.notna() & (part != at)) | ((df.n < at) & (df.family == "attack") & part.isna())
    df = df[~other.fillna(False)]
    key = _key(df, ["model", "dataset"] + [c for c in _MEASUREMENT if c in df.columns])
    return df[df.n == df.n.groupby(key).transform("max")]


def _one_corruption_source(df: pd.DataFrame) -> pd.DataFrame:
    """A model's corruptions from one source: the real CIFAR-10-C where the store has it and the
    generated ones too (a later run with --corruption-source real), rather than an mCA averaged
    over both under the one c_source it names; the generated stay in results.csv."""
    if "source" not in df.columns or "family" not in df.columns:
        return df
    corr = df.family == "corruption"
    real = corr & (df.source == "cifar10c")
    if not real.any():
        return df
    has_real = real.groupby([df.model, df.dataset]).transform("any")
    return df[~(corr & has_real & ~real)]


def _one_name_a_dataset(df: pd.DataFrame) -> pd.DataFrame:
    """A model name measured on two datasets (another --data-root into the same store) is two
    models, "fastnet_T1 [cifar10]" and "fastnet_T1 [cifar10-jpeg75]": one row each, where the
    leaderboard had one row averaging both under one dataset's name."""
    datasets = df.groupby("model")["dataset"].nunique()
    shared = df.model.isin(datasets[datasets > 1].index)
    if not shared.any():
        return df
    df = df.copy()
    df.loc[shared, "model"] = df.loc[shared, "model"] + " [" + df.loc[shared, "dataset"].astype(str) + "]"
    return df


def _key(df: pd.DataFrame, cols) -> pd.Series:
    """A hashable row key over ``cols`` (params are dicts or JSON text; NaNs compare as text).
    Zipped from numpy object arrays: element by element, pandas' string arrays took twice as long."""
    return pd.Series(list(zip(*(df[c].map(str).to_numpy(object) for c in cols))), index=df.index)


# an attack on one view, at one radius, on one set of images
_ATTACK = ["model", "dataset", "threat", "view", "eps", "n"]


def _strongest_budget(df: pd.DataFrame) -> pd.DataFrame:
    """Of an attack run at two budgets on the same images (PGD-10 by the profile, then `--steps 50`),
    the one that leaves the fewest images robust; both stay in results.csv. Before, the
    leaderboard's column averaged them into a number no attack gave, and the per-image bits kept
    whichever came last."""
    if "family" not in df.columns or not (df.family == "attack").any():
        return df
    att = df[df.family == "attack"]
    if "metric" in df.columns:  # the tidy table: a measurement is its params, its robust_acc the score
        acc = att[att.metric == "robust_acc"]
        score = pd.Series(acc["value"].to_numpy(float), index=_key(acc, _ATTACK + ["params"]).to_numpy())
        rows = _key(att, _ATTACK + ["params"])
    else:  # the bits table: one row a measurement
        rows = _key(att, _ATTACK + ["timestamp"])
        score = pd.Series([unpack_bits(b, int(n)).sum() for b, n in zip(att.bits, att.n)], index=rows.to_numpy())
    if score.index.has_duplicates:
        score = score.groupby(level=0).min()
    group = ["\x1f".join(k[:len(_ATTACK)]) for k in score.index]
    best = set(score.groupby(group).idxmin())
    scored = rows.isin(score.index)
    keep = ~scored | rows.isin(best)
    return df.drop(att.index[~keep.to_numpy()])


def aa_budget(params) -> Optional[str]:
    """What an AutoAttack record ran where it is not AutoAttack standard's own budget (its params,
    JSON text or a dict), None where it is. Fewer iterations or queries make a weaker attack: its
    robust accuracy bounds AutoAttack's from above and is not AutoAttack's number (the quick
    profile's cross-check runs 20 iterations and 500 queries on a CPU budget)."""
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError:
            params = {}
    params = params if isinstance(params, dict) else {}
    full = {k: ATTACKS["autoattack"].params[k].default for k in ("version", "steps", "n_queries")}
    ran = {k: params.get(k, v) for k, v in full.items()}
    if ran == full:
        return None
    # weaker only at the standard version with fewer iterations or queries; more of either, or
    # another version, is not AutoAttack standard's number either, but not a reduced one
    weaker = ran["version"] == full["version"] and \
        (ran["steps"] < full["steps"] or ran["n_queries"] < full["n_queries"])
    return (f"{'reduced' if weaker else 'non-standard'} budget: version {ran['version']}, {ran['steps']} iterations "
            f"and {ran['n_queries']} queries where AutoAttack {full['version']} runs {full['steps']} and "
            f"{full['n_queries']}")


def budget_kind(budget: str) -> str:
    """'reduced' or 'non-standard': the word an aa_budget text opens with, as a cell or reason says it."""
    return budget.split(" budget")[0]


def threat_norm(threat: str) -> str:
    return ATTACKS[threat].norm if threat in ATTACKS else "linf"  # transfer: PGD-Linf crafted elsewhere


def is_black_box(threat: str) -> bool:
    return threat == "transfer" or (threat in ATTACKS and ATTACKS[threat].black_box)


def is_autoattack(threat: str) -> bool:
    """AutoAttack runs Square among its attacks: beside it no black-box attack can beat the
    white-box side, and the black-box check would be blind."""
    return threat in ATTACKS and ATTACKS[threat].loss == "mixed"


def threat_column(threat: str, view: str, eps: float) -> str:
    """pgd_raw@8/255; a view-invariant attack has one column (apgd_dlr@8/255)."""
    return f"{threat}@{format_eps(eps)}" if view == "any" else f"{threat}_{view}@{format_eps(eps)}"


class ModelFamily(NamedTuple):
    """Models that differ only in temperature and seed. Comparisons never cross a family (nor a
    dataset: models of one dataset and n share their test images)."""
    arch: str
    head: str
    regime: str
    checkpoint: str
    lr_scale: bool
    dataset: str

    @classmethod
    def of(cls, row) -> "ModelFamily":
        ckpt = row.get("checkpoint")
        return cls(row["arch"], row["head"], row["regime"], ckpt if isinstance(ckpt, str) else "",
                   bool(row["lr_scale"]), str(row.get("dataset", "")))

    def label(self, with_dataset: bool = False) -> str:
        text = self.arch + (" +BN head" if self.head == "bn" else "")
        if self.regime != "std":
            text += f" {self.regime}@{self.checkpoint or 'last'}"
        text += " (loss x T)" if self.lr_scale else ""
        return text + (f" [{self.dataset}]" if with_dataset else "")
