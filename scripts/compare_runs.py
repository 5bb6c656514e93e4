"""Two results folders' models compared seed by seed: the paired difference of a leaderboard
column, with a Student t interval over the seeds.

    python scripts/compare_runs.py results/cpu results/cpu_fat15 --T 1 --regime fat
    python scripts/compare_runs.py results/cpu_fat15 results/cpu_at2 --T 1 --regime fat --cand-regime at

Rows pair by (seed, checkpoint): the same seed trained two ways (more epochs, another inner
attack) on the same data and evaluated on the same test images. The interval is over seeds only,
which is what a rerun would vary; the binomial error of each row (about 1 pp on 2,000 images) is
inside the seed spread and not added again. Exit 2 with one line when nothing pairs.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import List

import pandas as pd
from pandas.api.types import is_numeric_dtype


def rows(folder: Path, T: float, regime: str) -> pd.DataFrame:
    board = pd.read_csv(folder / "leaderboard.csv")
    keep = board[(board["T"].sub(T).abs() < 1e-9) & (board["regime"] == regime)]
    return keep.assign(checkpoint=keep["checkpoint"].fillna("")).set_index(["seed", "checkpoint"])


def compare(base: pd.DataFrame, cand: pd.DataFrame, metric: str) -> List[dict]:
    """One dict per checkpoint: the per-seed pairs and the mean difference (cand - base) with its
    95% t interval (None with one pair)."""
    from scipy.stats import t  # scipy comes with torchattacks

    both = base[metric].rename("base").to_frame().join(cand[metric].rename("cand"), how="inner").dropna()
    out = []
    for checkpoint, part in both.sort_index().groupby(level="checkpoint", sort=True):
        diff = part["cand"] - part["base"]
        n, mean = len(diff), float(diff.mean())
        half = float(t.ppf(0.975, n - 1) * diff.std(ddof=1) / math.sqrt(n)) if n > 1 else None
        out.append(dict(checkpoint=checkpoint, seeds=[int(s) for s in part.index.get_level_values("seed")],
                        base=part["base"].tolist(), cand=part["cand"].tolist(),
                        mean=mean, half=half))
    return out


def pp(x: float) -> str:
    return f"{100 * x:+.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("cand", type=Path)
    ap.add_argument("--T", type=float, default=1.0)
    ap.add_argument("--regime", default="std", help="the base folder's regime (std, fat, at, ...)")
    ap.add_argument("--cand-regime", help="the candidate folder's regime (default: --regime)")
    ap.add_argument("--metric", default="robust_min,clean", help="comma list of leaderboard columns")
    args = ap.parse_args(argv)
    for folder in (args.base, args.cand):
        if not (folder / "leaderboard.csv").is_file():
            print(f"error: {folder} has no leaderboard.csv: give a results folder (python -m bench.report "
                  f"--results {folder} builds one)", file=sys.stderr)
            return 2
    base, cand = rows(args.base, args.T, args.regime), rows(args.cand, args.T, args.cand_regime or args.regime)
    metrics = [m.strip() for m in args.metric.split(",") if m.strip()]
    missing = [m for m in metrics if m not in base.columns or m not in cand.columns]
    if missing or not metrics:
        print(f"error: no column {', '.join(missing) or repr(args.metric)} in both leaderboards", file=sys.stderr)
        return 2
    # a difference of two verdicts or names is no number (pandas raised a TypeError on them)
    not_numbers = [m for m in metrics if not all(is_numeric_dtype(board[m]) for board in (base, cand))]
    if not_numbers:
        print(f"error: --metric {', '.join(not_numbers)}: not a column of numbers; give numeric leaderboard "
              f"columns, e.g. clean,robust_min", file=sys.stderr)
        return 2
    if base.index.intersection(cand.index).empty:
        print(f"error: no (seed, checkpoint) in both at T={args.T:g}: {args.base} has {len(base)} such rows, "
              f"{args.cand} {len(cand)}; check --T, --regime and --cand-regime", file=sys.stderr)
        return 2
    print(f"{args.cand} - {args.base} at T={args.T:g}, paired by seed; pp, 95% Student t interval over the seeds")
    width = max(len(m) for m in metrics)
    for metric in metrics:
        for c in compare(base, cand, metric):
            pairs = "  ".join(f"s{s} {100 * b:.2f}->{100 * a:.2f}" for s, b, a in zip(c["seeds"], c["base"], c["cand"]))
            ci = f"[{pp(c['mean'] - c['half'])}, {pp(c['mean'] + c['half'])}]" if c["half"] is not None else "(one seed)"
            print(f"  {metric:{width}s} @{c['checkpoint'] or '-':5s} {pp(c['mean'])} {ci}  df {len(c['seeds']) - 1}  {pairs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
