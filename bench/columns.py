"""The report's vocabulary, shared by every table, plot and verdict: the headline radius, the
columns that identify a model, which run of a model counts, and how a threat is named."""
from __future__ import annotations

import pandas as pd

from attacks import ATTACKS, format_eps

HEADLINE_EPS = 8 / 255  # the standard CIFAR Linf radius: the eps of the leaderboard's robust_min
ID_COLS = ["model", "arch", "T", "head", "regime", "lr_scale", "seed", "checkpoint", "feature_dim", "dataset", "split",
           "n"]


def latest_runs(tidy: pd.DataFrame) -> pd.DataFrame:
    """Keep, per model and dataset, the rows of its most recently measured run key (a changed
    recipe gives a new key; the older run stays in results.csv but not in the leaderboard)."""
    if tidy.empty:
        return tidy
    last = tidy.groupby(["model", "dataset", "run_key"])["timestamp"].max().reset_index()
    last = last.sort_values("timestamp").groupby(["model", "dataset"]).tail(1)
    return tidy.merge(last[["model", "dataset", "run_key"]], on=["model", "dataset", "run_key"])


def threat_norm(threat: str) -> str:
    return ATTACKS[threat].norm if threat in ATTACKS else "linf"  # transfer: PGD-Linf crafted elsewhere


def threat_column(threat: str, view: str, eps: float) -> str:
    """pgd_raw@8/255; a view-invariant attack has one column (apgd_dlr@8/255)."""
    return f"{threat}@{format_eps(eps)}" if view == "any" else f"{threat}_{view}@{format_eps(eps)}"
