"""The report's vocabulary, shared by every table, plot and verdict: the headline radius, the
columns that identify a model, which run of a model counts, and how a threat is named."""
from __future__ import annotations

from typing import NamedTuple

import pandas as pd

from attacks import ATTACKS, HEADLINE_EPS, format_eps  # noqa: F401 - HEADLINE_EPS: the reports' vocabulary

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
