"""The README's table of a profile's results, printed from its leaderboard: the rows of
"Results of the quick profile" come from this command, not from a hand.

    python scripts/readme_table.py results/quick
"""
import math
import sys
from pathlib import Path

import pandas as pd

from bench.command import Parser
from bench.errors import stdout_closed

COLUMNS = [  # (header, leaderboard column, how to print it)
    ("model", "model", str), ("T", "T", "{:g}"), ("clean", "clean", "{:.1f}"),
    ("PGD raw", "pgd_raw@8/255", "{:.1f}"), ("PGD z/T", "pgd_scaled@8/255", "{:.1f}"),
    ("margin", "pgd_margin@8/255", "{:.1f}"), ("APGD-T", "apgd_t@8/255", "{:.1f}"),
    ("Square", "square@8/255", "{:.1f}"), ("transfer", "transfer@8/255", "{:.1f}"),
    ("**robust_min**", "robust_min", "**{:.1f}**"), ("by", "robust_min_by", str), ("masking", "masking", str),
    ("sat. raw", "saturated_raw", "{:.1f}"), ("zero grad", "zero_grad_raw", "{:.1f}"),
    ("fp64 gap", "fp64_gap", "{:.1f}"),
    ("AA (cross-check)", "aa_torchattacks", "{:.1f}"), ("ECE raw", "ece_raw", "{:.1f}"), ("ECE z/T", "ece_scaled", "{:.1f}"),
    ("post-hoc T", "posthoc_T", "{:.2f}"), ("mCA", "mCA", "{:.1f}"), ("mCE", "mCE", "{:.1f}"),
    ("worst grid", "nat_worst_grid", "{:.1f}"),
]


SORTED_BY = ("regime", "lr_scale", "head", "T", "model")  # the columns the rows are ordered by

NOT_PERCENT = {"model", "T", "robust_min_by", "masking", "posthoc_T"}  # the leaderboard's other columns are fractions


def cell(value, column, fmt) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column not in NOT_PERCENT:
        value = 100 * value
    return fmt(value) if callable(fmt) else fmt.format(value)


def main(folder: str) -> int:
    if not (Path(folder) / "leaderboard.csv").is_file():  # as compare_runs says it, not a FileNotFoundError
        print(f"error: {folder} has no leaderboard.csv: give a results folder (python -m bench.report --results "
              f"{folder} builds one)", file=sys.stderr)
        return 2
    path = Path(folder) / "leaderboard.csv"
    rebuild = f"python -m bench.report --results {folder} rebuilds it"
    try:
        board = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        print(f"error: {path} is empty: {rebuild}", file=sys.stderr)
        return 2
    missing = [c for c in SORTED_BY if c not in board.columns]
    if missing:
        print(f"error: {path} has no column {', '.join(missing)}: not a leaderboard of this harness; {rebuild}",
              file=sys.stderr)
        return 2
    if board.empty:
        print(f"error: {path} has a header and no rows: {rebuild}", file=sys.stderr)
        return 2
    # board["head"], not board.head: that is DataFrame.head, and comparing it gave False for every row
    board = board.assign(_at=board["regime"] != "std", _bn=board["head"] == "bn")
    board = board.sort_values(["_at", "lr_scale", "_bn", "T", "model"])  # the plain arm first, by T
    cols = [c for c in COLUMNS if c[1] in board.columns]
    print("| " + " | ".join(h for h, _, _ in cols) + " |")
    print("|" + "---|" * len(cols))
    for _, row in board.iterrows():
        print("| " + " | ".join(cell(row[c], c, f) for _, c, f in cols) + " |")
    return 0


if __name__ == "__main__":
    # a second folder or a flag was ignored, the table printed from the first alone
    parser = Parser(prog="python scripts/readme_table.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default="results/quick", help="a results folder (default: results/quick)")
    try:
        sys.exit(main(parser.parse_args().folder))
    except BrokenPipeError:  # readme_table.py | head: what the reader took is all it wanted
        sys.exit(stdout_closed())
