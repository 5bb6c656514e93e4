"""One-off migrations of a store's records after a fix, checked record by record, never guessed.

fp64-positions: a float64 check made before it said which images it ran on (threat pgd_fp64, no
``positions``) has the id of a whole evaluation on as many images, so it was taken for one
(--n-test 200 beside results/cpu's 2,000-image evaluation found its 200-image check "done", and
measuring that evaluation's overwrote it). The check is a fixed draw from its evaluation's images
(bench/measure/fp64.py Fp64Check.draw), so its positions can be written
after the fact: the evaluation is the model's clean one on more images (one only, or the record is
left and named). The record moves to the id its positions give it.

calibration-v2: the post-hoc calibration record's version went to 2 when a cross-fit half with no
error began to take the other half's T (bench/measure/calibration.py). A version-1 record whose two
halves both hold an error (by the same model's clean record's per-image bits and the record's
cross-fit seed) has the numbers version 2 computes: it is marked 2. Any other stays 1 and is
measured again by the next run of its profile.

    python scripts/migrate_records.py fp64-positions results/cpu results/quick [--data-root DIR]
    python scripts/migrate_records.py calibration-v2 results/cpu results/quick
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.atomic import write_json_atomic  # noqa: E402
from bench.data import load_dataset, stratified_indices  # noqa: E402
from bench.measure.calibration import Calibration, cross_fit_half  # noqa: E402
from bench.measure.fp64 import Fp64Check  # noqa: E402
from bench.store import ResultStore, part_positions, record_id, unpack_bits  # noqa: E402

def _evaluation(r: dict) -> tuple:
    return r["run_key"], r["dataset"], r["split"], r["subset_seed"]


def fp64_positions(store: ResultStore, records: list, data_root, dry_run: bool) -> str:
    evals = defaultdict(set)  # an evaluation -> the n's its clean accuracy was measured on
    for r in records:
        if r["threat"] == "clean":
            evals[_evaluation(r)].add(int(r["n"]))
    todo = [r for r in records if r["threat"] == "pgd_fp64" and r.get("positions") is None]
    labels, moved = {}, 0
    for r in todo:
        larger = sorted(n for n in evals[_evaluation(r)] if n > r["n"])
        same = r["n"] in evals[_evaluation(r)]  # the whole check of an evaluation on as many images?
        if same and not larger:
            continue  # all of its evaluation's images: no part, and its id is already its own
        if same or len(larger) != 1:  # a whole check or a part of one of them: not told apart by its record
            print(f"{store.root}: {r['model']} {r['id']}: evaluations on {sorted(evals[_evaluation(r)])} images "
                  f"could each be its own; left as is")
            continue
        at = (r["dataset"], r["split"], r["subset_seed"], larger[0])
        if at not in labels:
            data = load_dataset(data_root, progress=False)
            if data.name != r["dataset"]:
                raise SystemExit(f"--data-root holds {data.name}, the records {r['dataset']}")
            split = data.split(r["split"])
            labels[at] = split.labels[stratified_indices(split.labels, larger[0], r["subset_seed"])]
        new = dict(r, positions=part_positions(Fp64Check.draw(labels[at], r["n"]), larger[0]))
        new["id"] = record_id(new)
        dest = store.path(new["id"])
        if dest.exists() and json.loads(dest.read_bytes()) != new:
            # measured again since under its new name (resume no longer takes the old one): that one
            # is the newer, and which of the two a person keeps is theirs to say. (The same record
            # there is this script's, cut off before it removed the old file: finished below.)
            print(f"{store.root}: {r['model']} {r['id']}: {new['id']}.json, its new name, holds another "
                  f"measurement already; left as is")
            continue
        if not dry_run:  # the new file first: a cut-off run leaves both files, and running it again moves the rest
            write_json_atomic(dest, new)
            store.path(r["id"]).unlink()
        moved += 1
    rest = " (the rest are a whole evaluation's or named above)" if moved < len(todo) else ""
    return f"{moved} of {len(todo)} float64 checks without positions {'would move' if dry_run else 'moved'}{rest}"


def calibration_v2(store: ResultStore, records: list, data_root, dry_run: bool) -> str:
    version = Calibration.version_of((None, "calibration", "posthoc", None))
    clean = {(_evaluation(r), r["n"], r["weights_sha256"]): r for r in records if r["threat"] == "clean"}
    todo = [r for r in records if r["threat"] == "calibration" and r["view"] == "posthoc"
            and r.get("measure_version", 1) < version]
    marked = 0
    for r in todo:
        c = clean.get((_evaluation(r), r["n"], r["weights_sha256"]))
        if c is None or not c.get("bits"):
            continue
        n = int(r["n"])
        right = torch.from_numpy(unpack_bits(c["bits"], n))
        if abs(float(right.double().mean()) - r["metrics"]["accuracy"]) > 1e-9:
            continue  # the clean record scored other predictions than the calibration's: cannot tell
        half = cross_fit_half(n, r["params"]["cross_fit_seed"])
        if bool(right[half].all()) or bool(right[~half].all()):
            continue
        if not dry_run:
            write_json_atomic(store.path(r["id"]), dict(r, measure_version=version))
        marked += 1
    return (f"{marked} of {len(todo)} post-hoc calibration records {'would be ' if dry_run else ''}marked version "
            f"{version} (both halves with errors); the rest are measured again by the next run")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("migration", choices=("fp64-positions", "calibration-v2"))
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("--data-root", default=None, help="the records' dataset (default: $BENCH_DATA)")
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    step = fp64_positions if a.migration == "fp64-positions" else calibration_v2
    for results in a.results:
        store = ResultStore(results)
        print(f"{results}: {step(store, list(store.records()), a.data_root, a.dry_run)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
