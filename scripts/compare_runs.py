"""Two results folders' models compared seed by seed: the paired difference of a leaderboard
column, with a Student t interval over the seeds.

    python scripts/compare_runs.py results/cpu results/cpu_fat15 --T 1 --regime fat
    python scripts/compare_runs.py results/cpu_fat15 results/cpu_at2 --T 1 --regime fat --cand-regime at

Rows pair by model (arch, head, lr_scale), seed and checkpoint: the same seed of the same model
trained two ways (more epochs, another inner attack) on the same data and evaluated on the same
test images. A folder's other models at that T and regime (other widths, the BN head, loss x T)
pair each with its own counterpart, never with one another, and are printed apart. The interval is
over seeds only, which is what a rerun would vary; the binomial error of each row (about 1 pp on
2,000 images) is inside the seed spread and not added again. Exit 2 with one line when nothing
pairs, or when a leaderboard is unreadable or holds one model twice.
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import List

import pandas as pd
from pandas.api.types import is_numeric_dtype

from bench.command import Parser


# what tells a folder's models apart at one T and regime, besides the seed and checkpoint
IDENTITY = ("arch", "head", "lr_scale")
KEY = (*IDENTITY, "seed", "checkpoint")
NEEDED = ("model", "T", "regime", *KEY)


class Refused(Exception):
    """One line for stderr: what is wrong and what to do."""


def read_board(folder: Path) -> pd.DataFrame:
    path = folder / "leaderboard.csv"
    rebuild = f"python -m bench.report --results {folder} rebuilds it"
    if not path.is_file():
        raise Refused(f"{folder} has no leaderboard.csv: give a results folder (python -m bench.report "
                      f"--results {folder} builds one)")
    try:
        board = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise Refused(f"{path} is empty: {rebuild}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise Refused(f"{path} is not a readable CSV ({type(e).__name__}): {rebuild}") from None
    missing = [c for c in NEEDED if c not in board.columns]
    if missing:
        raise Refused(f"{path} has no column {', '.join(missing)}: not a leaderboard of this harness; {rebuild}")
    if board.empty:  # else "no model in both ... 0 such rows" sent the reader to --T and --regime
        raise Refused(f"{path} has a header and no rows: {rebuild}")
    return board


def rows(board: pd.DataFrame, folder: Path, T: float, regime: str) -> pd.DataFrame:
    at_T = pd.to_numeric(board["T"], errors="coerce").sub(T).abs() < 1e-9
    keep = board[at_T & (board["regime"] == regime)]
    # a missing head or lr_scale (a zoo or caller's model) is one identity, not NaN != NaN
    keep = keep.assign(checkpoint=keep["checkpoint"].fillna(""),
                       **{c: keep[c].fillna("").astype(str) for c in IDENTITY})
    twice = keep[keep.duplicated(list(KEY), keep=False)]
    if not twice.empty:
        raise Refused(f"{folder / 'leaderboard.csv'} holds one model twice at T={T:g}, regime {regime} "
                      f"({', '.join(twice['model'].astype(str))}: the same arch, head, lr_scale, seed and "
                      f"checkpoint): rebuild it (python -m bench.report --results {folder})")
    return keep.set_index(list(KEY))


def stem(model: str) -> str:
    """The model's name without its seed and checkpoint: what its rows of every seed share."""
    return re.sub(r"(_s\d+)?(@\w+)?$", "", model)


def compare(base: pd.DataFrame, cand: pd.DataFrame, metric: str) -> List[dict]:
    """One dict per model and checkpoint: the per-seed pairs and the mean difference (cand - base)
    with its 95% t interval (None with one pair)."""
    from scipy.stats import t  # scipy comes with torchattacks

    both = base[metric].rename("base").to_frame().join(cand[metric].rename("cand"), how="inner").dropna()
    out = []
    for (*identity, checkpoint), part in both.sort_index().groupby(level=[*IDENTITY, "checkpoint"], sort=True):
        diff = part["cand"] - part["base"]
        n, mean = len(diff), float(diff.mean())
        half = float(t.ppf(0.975, n - 1) * diff.std(ddof=1) / math.sqrt(n)) if n > 1 else None
        model = stem(str(base.loc[part.index[0], "model"]))
        out.append(dict(model=model, identity=tuple(identity), checkpoint=checkpoint,
                        seeds=[int(s) for s in part.index.get_level_values("seed")],
                        base=part["base"].tolist(), cand=part["cand"].tolist(), mean=mean, half=half))
    return out


def pp(x: float) -> str:
    return f"{100 * x:+.1f}"


def main(argv=None) -> int:
    # a usage error in one line, as every command of the harness (argparse's own is a usage dump)
    ap = Parser(prog="python scripts/compare_runs.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("cand", type=Path)
    ap.add_argument("--T", type=float, default=1.0)
    ap.add_argument("--regime", default="std", help="the base folder's regime (std, fat, at, ...)")
    ap.add_argument("--cand-regime", help="the candidate folder's regime (default: --regime)")
    ap.add_argument("--metric", default="robust_min,clean", help="comma list of leaderboard columns")
    args = ap.parse_args(argv)
    try:
        return report(args)
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def report(args) -> int:
    boards = [read_board(folder) for folder in (args.base, args.cand)]
    base = rows(boards[0], args.base, args.T, args.regime)
    cand = rows(boards[1], args.cand, args.T, args.cand_regime or args.regime)
    metrics = [m.strip() for m in args.metric.split(",") if m.strip()]
    missing = [m for m in metrics if m not in base.columns or m not in cand.columns]
    if missing or not metrics:
        raise Refused(f"no column {', '.join(missing) or repr(args.metric)} in both leaderboards")
    # a difference of two verdicts or names is no number (pandas raised a TypeError on them)
    not_numbers = [m for m in metrics if not all(is_numeric_dtype(board[m]) for board in (base, cand))]
    if not_numbers:
        raise Refused(f"--metric {', '.join(not_numbers)}: not a column of numbers; give numeric leaderboard "
                      f"columns, e.g. clean,robust_min")
    if base.index.intersection(cand.index).empty:
        raise Refused(f"no model (arch, head, lr_scale), seed and checkpoint in both at T={args.T:g}: {args.base} "
                      f"has {len(base)} such rows, {args.cand} {len(cand)}; check --T, --regime and --cand-regime")
    print(f"{args.cand} - {args.base} at T={args.T:g}, paired by seed; pp, 95% Student t interval over the seeds")
    width = max(len(m) for m in metrics)
    results = {metric: compare(base, cand, metric) for metric in metrics}
    # one model pairs as before; with several, each line names its model (base folder's name, no seed)
    models = {c["identity"] for found in results.values() for c in found}
    label_width = max((len(c["model"]) for found in results.values() for c in found), default=0)
    for metric, found in results.items():
        for c in found:
            pairs = "  ".join(f"s{s} {100 * b:.2f}->{100 * a:.2f}"
                              for s, b, a in zip(c["seeds"], c["base"], c["cand"]))
            ci = f"[{pp(c['mean'] - c['half'])}, {pp(c['mean'] + c['half'])}]" if c["half"] is not None else "(one seed)"
            label = f"{c['model']:{label_width}s} " if len(models) > 1 else ""
            print(f"  {metric:{width}s} {label}@{c['checkpoint'] or '-':5s} {pp(c['mean'])} {ci}  "
                  f"df {len(c['seeds']) - 1}  {pairs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
