"""Re-run stored attack measurements on their saved checkpoints with today's code, and compare
image by image: did a change to an attack change any result, and what does it cost now?

    python -m bench.tools.recheck --results results/cpu --attack apgd_t [--model NAME ...] [--profile P]

Each stored record of the attack (or the AutoAttack cross-check's record, for ``autoattack`` and
``autoattack_ref``) is run again exactly as the grid ran it (its images, view, seed,
parameters and the profile's batch size) on the checkpoint it names, verified by sha256. Printed
per record: robust accuracy then and now, the images whose verdict changed, the backward passes
per image and the wall time then and now. Records of the same weights (an @last copied from
@best) are run once. Nothing is written: the store keeps the measurements as they were made.
Exit status 1 when a verdict changed, 2 on bad input (one line), 3 on an unexpected error (its
traceback): a crash must not read as a changed verdict.
"""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import torch

from attacks import ATTACKS, format_eps, make_attack
from bench.atomic import user_path
from bench.command import Parser, finish
from bench.checkpoints import CheckpointStore
from bench.data import default_data_root, load_dataset, stratified_indices
from bench.errors import BenchError
from bench.measure.adversarial import evaluate
from bench.profiles import load_profile
from bench.provenance import device_name
from bench.store import ResultStore, part_of, unpack_bits
from models import parse_name


# the AutoAttack cross-check's record holds each implementation's result under its tag
CROSSCHECK_TAGS = {"autoattack": "torchattacks", "autoattack_ref": "pyautoattack"}


def stored(results: Path, attack: str) -> list:
    def holds(r):
        return r.get("threat") == attack or (r.get("threat") == "autoattack_crosscheck"
                                             and attack in r["params"].get("attacks", []))
    recs = [r for r in ResultStore(results).records() if holds(r)]
    return sorted(recs, key=lambda r: (r["model"], r["eps"], r["view"]))


def result_of(r: dict, attack: str):
    """(per-image bits, robust accuracy, backward passes per image, parameters) the record holds
    for ``attack``; the passes None where the record has none (made before they were counted)."""
    if r["threat"] == attack:
        m = r["metrics"]
        return r["bits"], m["robust_acc"], m.get("backward_per_image"), r["params"]
    tag = CROSSCHECK_TAGS[attack]
    m = r["metrics"]
    params = {k: v for k, v in r["params"].items() if k != "attacks"}
    return r[f"bits_{tag}"], m[f"robust_acc_{tag}"], m.get(f"backward_per_image_{tag}"), params


def _num(value, fmt: str) -> str:
    """A number the record may lack (null or left out): '-' then."""
    return "-" if value is None else format(value, fmt)


def main(argv=None) -> int:
    try:
        # nothing is written (the store keeps what was measured): an interrupted recheck leaves its lines
        return finish(lambda: recheck(argv), "the records printed above were run again, and nothing was written; "
                                             "rerun the same command for the rest")
    except Exception:  # noqa: BLE001 - Python's own exit status for it, 1, says "a verdict changed"
        traceback.print_exc()
        print("error: the recheck stopped on the unexpected error above (exit 3: no verdict was compared "
              "in full)", file=sys.stderr)
        return 3


def recheck(argv) -> int:
    p = Parser(prog="python -m bench.tools.recheck", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=user_path, required=True, help="a results folder with records/ and checkpoints/")
    p.add_argument("--attack", required=True, help="the registry attack whose records are run again")
    p.add_argument("--model", nargs="*", default=[], help="only these models (default: every one measured)")
    p.add_argument("--profile", type=user_path, default=None,
                   help="the profile the records were made with, a name or a TOML file (default: the records' name)")
    p.add_argument("--data-root", type=user_path, default=None)
    args = p.parse_args(argv)
    results = Path(args.results)
    if args.attack not in ATTACKS:
        raise BenchError(f"--attack {args.attack}: not a registry attack; one of {', '.join(sorted(ATTACKS))}")
    if not (results / "records").is_dir() or not (results / "checkpoints").is_dir():
        raise BenchError(f"--results {results}: needs records/ and checkpoints/ (a profile run with keep_checkpoints)")
    recs = stored(results, args.attack)
    if not recs:
        raise BenchError(f"no {args.attack} records in {results / 'records'}")
    measured = sorted({r["model"] for r in recs})
    missing = [m for m in args.model if m not in measured]
    if missing:  # a typo, or a checkpoint's @best left off, was checked for nothing
        raise BenchError(f"--model {', '.join(missing)}: no {args.attack} records in {results / 'records'}; "
                         f"measured: {', '.join(measured)}")
    recs = [r for r in recs if not args.model or r["model"] in args.model]
    profiles = {name: load_profile(name) for name in {args.profile or r["profile"] for r in recs}}
    data = load_dataset(args.data_root or default_data_root())
    if {r["dataset"] for r in recs} != {data.name}:
        raise BenchError(f"the records are on {sorted({r['dataset'] for r in recs})}, the data is {data.name}: "
                         f"pass --data-root")
    device = torch.device("cpu")
    ckpts = CheckpointStore(results / "checkpoints")
    print(f"recheck {args.attack}: {len(recs)} records of {results} on {device_name(device)}, torch {torch.__version__}")
    print(f"  {'model':<26}{'view':<7}{'eps':>7}{'robust':>8}{'now':>7}{'changed':>9}{'bwd/img':>9}{'now':>7}"
          f"{'s':>8}{'now':>7}")
    done, changed, then_s, now_s = {}, 0, 0.0, 0.0
    here, elsewhere = device_name(device), 0  # records made on another CPU or thread count
    for r in recs:
        label = f"  {r['model']:<26}{r['view']:<7}{format_eps(r['eps']):>7}"
        same = (r["weights_sha256"], r["view"], r["eps"], json.dumps(r["params"], sort_keys=True), r["n"],
                part_of(r))  # a part of an evaluation of another n is other images
        twin = done.get(same)
        if twin is not None:
            print(f"{label}  same weights as {twin}: not run again")
            continue
        ev = profiles[args.profile or r["profile"]].eval
        split, pos = data.split(r["split"]), r.get("positions")  # pos: a subset of the evaluation images
        split = split.subset(stratified_indices(split.labels, pos["eval_n"] if pos else r["n"], r["subset_seed"]))
        if pos:
            split = split.subset(torch.tensor(pos["index"]))
        spec = parse_name(r["model"])
        key = r["run_key"].split("@")[0]  # an adversarial run's record names its checkpoint: key@best
        found = ckpts.load(spec, key, data.num_classes, device)
        if found is None:
            raise BenchError(f"{r['model']}: no checkpoint {key} in {results / 'checkpoints'}")
        model, meta = found
        if meta["weights_sha256"] != r["weights_sha256"]:
            raise BenchError(f"{r['model']}: checkpoint {key} holds other weights than the record measured")
        bits, robust, bwd, params = result_of(r, args.attack)
        cfg = make_attack(args.attack, params)
        m = evaluate(model, r["T"], split, [cfg], ["raw" if r["view"] == "any" else r["view"]],
                     batch_size=r.get("eval_batch_size") or ev.batch_size, seed=r["attack_seed"],
                     n_classes=r["num_classes"])[1]
        wall = m.wall_s
        n = len(split)
        diff = int((unpack_bits(m.bits, n) != unpack_bits(bits, n)).sum())
        changed += diff > 0
        elsewhere += diff > 0 and r.get("device") != here
        # a cross-check's wall time is both implementations' together: not this attack's alone
        then = r.get("wall_s") if r["threat"] == args.attack else None
        if then is not None:
            then_s, now_s = then_s + then, now_s + wall
        done[same] = r["model"]
        bwd_now = m.metrics.get("backward_per_image")
        print(f"{label}{100 * robust:>7.1f}%{100 * m.metrics['robust_acc']:>6.1f}%{diff:>9}{_num(bwd, '.1f'):>9}"
              f"{_num(bwd_now, '.1f'):>7}{_num(then, '.0f'):>8}{wall:>7.1f}", flush=True)
    print(f"  {len(done)} run again: {changed} with a changed verdict"
          + (f"; wall {then_s:.0f} s then, {now_s:.0f} s now (then: as recorded, on the machine in each record)"
             if then_s else ""))
    if elsewhere:  # the same code gives other floats there: an image near the boundary can flip
        print(f"  {elsewhere} of the changed were measured on another machine or thread count than this "
              f"({here}): its arithmetic alone can flip an image near the boundary; rerun there to tell a "
              f"change of code from one of machine")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
