"""Command line: ``python -m bench.run --model resnet18_T5 --attack pgd``.

This module only parses: torch and the harness load after the arguments are read, so --help
answers at once. The wiring (profile, plan, executor) is bench/cli.py; a BenchError becomes one
line on stderr and exit code 2, before anything is written.
"""
from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sys
import threading
from pathlib import Path
from typing import List

from bench.atomic import user_path
from bench.command import Parser, finish

# the shipped profiles, listed without importing bench.profiles (which loads torch)
PROFILE_DIR = Path(__file__).parent / "profiles"


def available_profiles():
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


EXAMPLES = """examples:
  python -m bench.run                                   # the quick profile's whole grid
  python -m bench.run --model resnet18_T5 --attack pgd  # one model, one attack
  python -m bench.run --model fastnet_T1,fastnet_T50 --attack fgsm,pgd --eps 4/255 --steps 20
  python -m bench.run --model fastnet_T5 --attack corruptions --corruptions gaussian_noise,fog --severities 3,5
  python -m bench.run --model fastnet_T5 --attack natural,cifar10.1
  python -m bench.run --profile smoke --results /tmp/smoke
  python -m bench.run --list-models
  python -m bench.run --model file:my_net.safetensors --arch resnet18 --attack suite   # your own weights
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m bench.run", description="Train models at a softmax temperature T and attack them.",
               epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", type=user_path, default="quick",
                   help=f"profile name ({', '.join(available_profiles())}) or a TOML path (default: quick)")
    p.add_argument("--model", default="all", help="comma list of model names, or 'all' (the profile's grid)")
    p.add_argument("--arch", default=None, help="for --model file:PATH: the architecture its weights fit: a registry "
                   "one (fastnet, resnet18, ...), timm:NAME or torchvision:NAME (built without pretrained weights)")
    p.add_argument("--temperature", type=float, default=None, help="for --model file:PATH: its training T "
                   "(default: estimated by post-hoc temperature scaling on held-out test images)")
    p.add_argument("--mean", default=None, help="for --model file:PATH: per-channel mean it expects, e.g. "
                   "0.4914,0.4822,0.4465 (with --std)")
    p.add_argument("--std", default=None, help="for --model file:PATH: per-channel std it expects (with --mean)")
    p.add_argument("--attack", default=None, help="comma list of attacks and shifts (corruptions, a corruption, "
                   "natural, a transform, cifar10.1), 'all', or 'none' for clean accuracy and calibration alone "
                   "(default: the profile's); see --list-attacks")
    p.add_argument("--corruptions", default=None, help="comma list of CIFAR-10-C corruptions (default: the profile's; all 19 if it names none)")
    p.add_argument("--severities", default=None, help="comma list of corruption severities, e.g. 3,5 (default: the profile's; 1..5 if it sets none)")
    p.add_argument("--corruption-source", default=None, choices=["auto", "generated", "real"],
                   help="real CIFAR-10-C files, generated on the fly, or auto (real when found; default)")
    p.add_argument("--view", default=None, help="comma list of views: raw, scaled (default: the profile's)")
    p.add_argument("--eps", default=None, help="Linf radius for every Linf attack, e.g. 8/255 or 0.031")
    p.add_argument("--alpha", default=None, help="step size of the Linf PGD attacks, e.g. 2/255")
    p.add_argument("--steps", default=None, help="iterations for iterative attacks")
    p.add_argument("--param", action="append", default=[], metavar="ATTACK.KEY=VALUE",
                   help="one attack parameter, e.g. square.n_queries=1000 (repeatable; see --list-attacks)")
    p.add_argument("--eps-sweep", default=None, help="radii of the eps sweep, e.g. 1/255,8/255,64/255 "
                   "(switches the sweep on)")
    p.add_argument("--n-test", type=int, default=None, help="evaluate on a stratified subset of this size")
    p.add_argument("--shift-n", type=int, default=None,
                   help="corruptions and natural transforms on a stratified subset of this size (default: the "
                        "profile's shift_n, at most --n-test)")
    p.add_argument("--data-root", type=user_path, default=None,
                   help="data folder (default: $BENCH_DATA, else the offline copy ../shared/data/cifar10-jpeg75 "
                        "beside the checkout when it is there, else download CIFAR-10)")
    p.add_argument("--dataset", default=None, choices=["cifar10", "cifar100"],
                   help="which torchvision CIFAR folder of the data root (needed when it holds both; "
                        "cifar100 downloads when online)")
    p.add_argument("--results", type=user_path, default=None, help="results folder (default: results/<profile>)")
    p.add_argument("--cache", type=user_path, default=None,
                   help="cache for decoded data and checkpoints (default: $BENCH_CACHE or .cache)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="run the grid's jobs in this process (local, default) or as Ray tasks (ray)")
    p.add_argument("--address", default=None, help="Ray cluster to join: auto, HOST:PORT or ray://HOST:PORT "
                   "(default with --executor ray: a local Ray instance for this run)")
    p.add_argument("--store", type=user_path, default=None,
                   help="a folder every worker can reach (e.g. on a shared file system) for the records, "
                        "reports, checkpoints and job logs")
    p.add_argument("--cpus-per-job", type=float, help="Ray: CPUs each job asks for (default 1)")
    p.add_argument("--gpus-per-job", type=float, default=None, help="Ray: GPUs each job asks for (default: 1 "
                   "when the cluster has GPUs and --device is not cpu, else 0)")
    p.add_argument("--max-retries", type=int, default=None, help="Ray: times a job whose worker died is "
                   "retried (default 3)")
    p.add_argument("--force", action="store_true", help="re-evaluate measurements already in the store")
    p.add_argument("--dry-run", action="store_true", help="print the grid, per model the jobs the stores do not "
                   "hold yet, and their time at the pace of the stores' own records; run and write nothing (but "
                   "the decoded data, if the cache lacks it)")
    p.add_argument("--pace-from", default=None, metavar="DIRS", help="comma list of results folders (their "
                   "records and checkpoints/ sidecars) whose wall times also price --dry-run's estimate and the "
                   "ETA, e.g. --pace-from results/cpu before a fresh run of that profile")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they are off when not a TTY)")
    p.add_argument("--tables-only", action="store_true", help="write results.csv and leaderboard.csv, not the "
                   "plots and index.html (most of a small run's time); `python -m bench.report.publish "
                   "--results DIR` builds them later")
    p.add_argument("--list-models", action="store_true", help="explain model names and list the profile's grid")
    p.add_argument("--list-attacks", action="store_true", help="list attacks, their parameters and defaults")
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a batch scheduler's time limit), raised where a Ctrl-C is: the run stops
    the same way, its writes' cleanup runs, and it exits with 143 rather than dying mid-write."""


# Set by the SIGTERM handler as it raises: a library may catch the KeyboardInterrupt on its way up
# and raise a plain one of its own (Ray's ray.wait does), and the run must still say which it was
_sigterm_received = threading.Event()


def _terminate(signum, frame):
    _sigterm_received.set()
    raise Terminated


@contextlib.contextmanager
def stop_signals():
    """SIGTERM raised as Terminated for the whole run; the handler before it is put back after."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live there alone
        yield
        return
    _sigterm_received.clear()
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_held():
    """Hold a Ctrl-C (or `timeout --signal=INT`) or a SIGTERM that arrives inside the block and
    raise it (KeyboardInterrupt, Terminated) when the block ends. Raised in the middle of torch's
    and the libraries' imports, an interrupt was once swallowed there (the grid then ran to its end
    under a time limit) and once came out as a RecursionError; after the imports it stops the run
    like any other."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live there alone
        yield
        return
    held = []

    def hold(signum, frame):
        held.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is hold:  # unless the block installed its own
                signal.signal(sig, handler)
    if signal.SIGTERM in held:
        raise Terminated
    if held:
        raise KeyboardInterrupt


# The flags that take a radius as a fraction: argparse reads "-8/255" after them as an option and
# says only "expected one argument"; joined as --eps=-8/255, the value gets the range check's line
_FRACTION_FLAGS = ("--eps", "--alpha", "--eps-sweep")


def _joined_fractions(argv: List[str]) -> List[str]:
    out, i = [], 0
    while i < len(argv):
        if argv[i] in _FRACTION_FLAGS and i + 1 < len(argv) and re.fullmatch(r"-\.?\d.*", argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(_joined_fractions(sys.argv[1:] if argv is None else list(argv)))
    _check_listing(parser, args)
    with stop_signals():
        return _main(args)


def _check_listing(parser: argparse.ArgumentParser, args) -> None:
    """--list-models and --list-attacks print a list and run nothing: a run's flags beside them
    were ignored (``--list-attacks --model bogus_T1`` printed the list and exited 0), and an
    ignored flag is refused, as --view without attacks is."""
    listing = [flag for flag, on in (("--list-models", args.list_models), ("--list-attacks", args.list_attacks))
               if on]
    if not listing:
        return
    used = {"help", "list_models", "list_attacks", *(["profile"] if args.list_models else [])}  # its grid is listed
    ignored = [a.option_strings[0] for a in parser._actions
               if a.option_strings and a.dest not in used and getattr(args, a.dest) != a.default]
    if ignored:
        parser.error(f"{' and '.join(listing)} only {'list' if len(listing) > 1 else 'lists'} and runs nothing, "
                     f"so {', '.join(ignored)} would be ignored: leave {'it' if len(ignored) == 1 else 'them'} out, "
                     f"or leave out {' and '.join(listing)} to run")


def _main(args) -> int:
    return finish(lambda: _run(args), "finished measurements are kept; rerun the same command to resume",
                  terminated=lambda e: isinstance(e, Terminated) or _sigterm_received.is_set())


def _run(args) -> int:
    with signals_held():
        # imported after parsing, on purpose: it loads torch (seconds), which --help never needs
        from bench.cli import list_attacks, list_models, load_profile, make_executor, make_plan
        if args.list_models or args.list_attacks:  # both flags: both lists
            lists = ([list_models(load_profile(args.profile))] if args.list_models else []) + \
                ([list_attacks()] if args.list_attacks else [])
            print("\n\n".join(lists))
            return 0
        executor = make_executor(args)
        plan = make_plan(args)
    if args.dry_run:
        from bench.grid.runner import preview
        preview(plan)
        return 0
    from bench.report.tables import summary
    from bench.grid.runner import run
    board = run(plan, executor=executor, pages=not args.tables_only)
    print(summary(board))
    return 0


if __name__ == "__main__":
    sys.exit(main())
