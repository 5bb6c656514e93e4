"""Where a results folder's compute went, from the wall times its checkpoint sidecars and records
carry: training and evaluation hours by day and machine, and evaluation by family and threat. The cost
figures of the cpu profile (README.md, results/cpu/README.md) come from this command, not from a hand.

    python scripts/grid_cost.py results/cpu

A record copied from a twin with the same weights (`same_weights_as`: fast AT's @last where the
best epoch was the last) keeps its source's wall_s, although the copy took a second: counted
apart, not as compute. Checkpoints and records made under another profile and copied in (runs of the
same recipe that one profile's grid shares with another) are compute this folder's grid used:
counted, and split out by the profile they name when there is more than one. A record or sidecar
without a wall time (left out, or a record's null, which the store accepts) is counted apart and
said, not added as 0 h.
"""
import json
import sys
from collections import defaultdict
from pathlib import Path

from bench.errors import stdout_closed
from bench.fields import field_problem, is_number, is_text

# bench.grid.estimate.STANDARD_REGIMES (not imported: it pulls in torch; tests/test_grid_cost.py
# holds the two equal); any other regime is adversarial training, whose attacks cost far more
STANDARD_REGIMES = ("std", "zoo", "file", "python")


# what this script reads of a sidecar and of a record: the fields it indexes, and the type of
# every field it reads
SIDECAR = ("timestamp",), ((("timestamp",), is_text, "text"), (("wall_s",), is_number, "a number"),
                           (("device", "profile"), is_text, "text"))
# a record's wall_s may be null, which the store accepts; a sidecar's may not (bench/checkpoints.py)
RECORD = ("timestamp", "family", "threat"), ((("timestamp",), is_text, "text"),
                                             (("wall_s",), lambda v: v is None or is_number(v), "a number or null"),
                                             (("device", "profile", "family", "threat", "regime"), is_text, "text"))


class Unreadable(Exception):
    pass


def read(path: Path, kind) -> dict:
    """A sidecar or record (``kind``: SIDECAR or RECORD) as a dict, or Unreadable naming the file
    and what is wrong with it."""
    needed, types = kind
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise Unreadable(f"{path} is not a readable JSON file ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise Unreadable(f"{path} holds a JSON {type(obj).__name__}, not an object")
    need = [k for k in needed if k not in obj]
    problem = f"it has no {', '.join(need)}" if need else field_problem(obj, types)
    if problem:
        raise Unreadable(f"{path}: {problem}")
    return obj


def main(folder: str) -> None:
    root = Path(folder)
    train, runs = defaultdict(float), defaultdict(int)
    by_profile = defaultdict(lambda: [0.0, 0, 0.0, 0])  # training h, runs, evaluation h, records
    untimed = {"checkpoints": 0, "records": 0}  # no wall_s to add: counted, not taken for 0 h
    for sidecar in (root / "checkpoints").glob("*.json"):
        meta = read(sidecar, SIDECAR)
        if meta.get("wall_s") is None:
            untimed["checkpoints"] += 1
            continue
        where = (meta["timestamp"][:10], meta.get("device", "?"))
        train[where] += meta.get("wall_s", 0.0)
        runs[where] += 1
        by_profile[meta.get("profile", "?")][0] += meta.get("wall_s", 0.0) / 3600
        by_profile[meta.get("profile", "?")][1] += 1
    evaluation, records = defaultdict(float), defaultdict(int)
    measure, adversarial = defaultdict(float), defaultdict(float)  # by family/threat; AT models' part
    copied, n_copied = 0.0, 0
    for path in (root / "records").glob("*.json"):
        rec = read(path, RECORD)
        if rec.get("same_weights_as"):
            copied += rec.get("wall_s") or 0.0
            n_copied += 1
            continue
        if rec.get("wall_s") is None:
            untimed["records"] += 1
            continue
        where = (rec["timestamp"][:10], rec.get("device", "?"))
        evaluation[where] += rec.get("wall_s", 0.0)
        records[where] += 1
        by_profile[rec.get("profile", "?")][2] += rec.get("wall_s", 0.0) / 3600
        by_profile[rec.get("profile", "?")][3] += 1
        what = f"{rec['family']}/{rec['threat']}"
        measure[what] += rec.get("wall_s", 0.0)
        if rec.get("regime", "std") not in STANDARD_REGIMES:
            adversarial[what] += rec.get("wall_s", 0.0)
    print(f"{root}: hours of wall time by day and machine (the device each sidecar and record names)")
    print(f"  {'day':<11} {'machine':<52} {'training':>9} {'runs':>5} {'evaluation':>11} {'records':>8}")
    for where in sorted(set(train) | set(evaluation)):
        print(f"  {where[0]:<11} {where[1]:<52} {train[where] / 3600:9.2f} {runs[where]:5d} "
              f"{evaluation[where] / 3600:11.2f} {records[where]:8d}")
    total_t, total_e = sum(train.values()) / 3600, sum(evaluation.values()) / 3600
    print(f"  {'total':<64} {total_t:9.2f} {sum(runs.values()):5d} {total_e:11.2f} {sum(records.values()):8d}"
          f"   all: {total_t + total_e:.2f} h")
    if len(by_profile) > 1:
        for name, (t, n_runs, e, n_recs) in sorted(by_profile.items(), key=lambda kv: -kv[1][0] - kv[1][2]):
            print(f"    made under profile {name:<43} {t:9.2f} {n_runs:5d} {e:11.2f} {n_recs:8d}")
    print(f"  not counted: {n_copied} records copied from a twin with the same weights "
          f"(their source's wall_s: {copied / 3600:.2f} h)")
    for what, n in untimed.items():
        if n:
            print(f"  not counted: {n} {what} without wall_s (no time recorded)")
    print("  evaluation by family/threat, hours (of them on adversarially trained models):")
    for what, seconds in sorted(measure.items(), key=lambda kv: -kv[1]):
        if seconds >= 180:
            print(f"    {what:<36} {seconds / 3600:6.2f} ({adversarial[what] / 3600:.2f})")
    rest = [s for s in measure.values() if s < 180]
    print(f"    {f'{len(rest)} more, each under 0.05 h':<36} {sum(rest) / 3600:6.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "records").is_dir():
        print("usage: python scripts/grid_cost.py RESULTS_FOLDER (one with records/ and checkpoints/)", file=sys.stderr)
        sys.exit(2)
    try:
        main(sys.argv[1])
    except BrokenPipeError:
        sys.exit(stdout_closed())
    except Unreadable as e:  # a hand-edited or truncated file: named, and nothing printed of the tally
        print(f"error: {e}: fix or delete it (git checkout restores a committed one)", file=sys.stderr)
        sys.exit(2)
