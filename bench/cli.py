"""The CLI's wiring: a parsed command line -> a checked profile, plan and executor.

Every input is checked here before anything is written (bench/run.py parses; bench/grid/runner.py runs).
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional, Tuple

import torch

from attacks import ATTACKS, VIEWS, make_attack
from attacks.corruptions import BENCHMARK, EXTRA
from attacks.natural import NATURAL, WORST_GRID_ROTATIONS, WORST_GRID_SHIFTS
from attacks.registry import check_attack_name, check_overrides
from bench import threats
from bench.accel import Accel
from bench.atomic import can_write_in, existing_ancestor
from bench.data import default_cache_dir, default_data_root
from bench.errors import BenchError
from bench.grid.executor import LocalExecutor, RayExecutor
from bench.grid.plan import Plan
from bench.measure import families
from bench.profiles import MIN_EVAL_N, check_radius, load_profile
from bench.report.publish import check_report_paths
from bench.store import ResultStore
from models import ARCHS, REGIMES, parse_name
from models.external import file_spec, is_file_name
from models.zoo import ZooSpec, is_zoo_name


def list_models(profile) -> str:
    lines = ["Model names: <arch>[w<width>][_bn]_T<temperature>[_<regime>][_lrT][_s<seed>][@best|@last]",
             "  _bn      BatchNorm1d on the M-dim features before the classifier (the 'BN head' of claim B)",
             "  _T<t>    training temperature: loss CE(z/t, y); _Tauto = 0.7239*sqrt(M) - 4.706 (claim B)",
             "  _lrT     multiply the loss by T (logit-space step of T=1; the step-size control arm)",
             "  _s<n>    seed (default 0)",
             "  @best    an adversarially trained run's checkpoint best on held-out PGD accuracy; @last its",
             "           final one (without @, both are evaluated)",
             "  robustbench:<Name>  a RobustBench zoo model, loaded (not trained), e.g. robustbench:Standard",
             "", "Architectures (M = feature dimension):"]
    for a in ARCHS.values():
        m = a.feature_dim(a.default_width or 0)
        lines.append(f"  {a.name:<16} M={m:<5} {a.description}")
    lines += ["", "Regimes: " + ", ".join(f"{k} ({v})" for k, v in REGIMES.items()), "",
              f"Profile {profile.name!r} grid ({len(profile.models)} models; '--model all'):"]
    lines += [f"  {n}" for n in profile.models]
    return "\n".join(lines)


def list_attacks() -> str:
    lines = ["Attacks (torchattacks; inputs in [0,1], eps in pixel units; each runs on every view, once if invariant):"]
    for a in ATTACKS.values():
        params = ", ".join(f"{k}={v.default}" for k, v in a.params.items())
        flags = [f"loss {a.loss}"] + ["view-invariant"] * a.view_invariant + \
            [f"targeted ({a.targeted})"] * bool(a.targeted) + ["black box"] * a.black_box
        lines.append(f"  {a.name:<18} {a.norm:<5} {a.description}\n{'':21}[{', '.join(flags)}] {params}")
    lines += ["", "Views: " + "; ".join(f"{k}: {v}" for k, v in VIEWS.items()) +
              "; a view-invariant attack runs once (view 'any')", "",
              "The audit (also by name; 'suite' = every attack but autoattack_ref, and these four):",
              "  transfer     PGD crafted on a surrogate ([eval] surrogate; default: the same arch at T=1)",
              "  eps_sweep    the sweep attacks at eps 1/255 .. 128/255 (--eps-sweep, [eval] eps_sweep)",
              "  fp64         CE-PGD recomputed in float64 ([eval] fp64_n images; default 100)",
              "  crosscheck   autoattack vs autoattack_ref on the same images ([eval] crosscheck_n; default 100)",
              "",
              "Shifts (accuracy only; --attack takes these names too):",
              "  corruptions  CIFAR-10-C, real files or generated on the fly; --corruptions, --severities 1..5",
              "    benchmark 15: " + ", ".join(BENCHMARK), "    extra 4: " + ", ".join(EXTRA),
              "  natural      every transform below and worst_grid"]
    for t in NATURAL.values():
        lines.append(f"    {t.name:<11} {t.unit}: {', '.join(f'{m:g}' for m in t.magnitudes)}")
    lines += [f"    worst_grid  worst case over rotations {list(WORST_GRID_ROTATIONS)} x shifts "
              f"{list(WORST_GRID_SHIFTS)} px (x and y)",
              "  cifar10.1    the CIFAR-10.1 v6 test set (Recht et al. 2019) and its gap to the test split"]
    extra = families.by_name()
    if extra:
        lines += ["", "Other measurement families (by name; [eval] measure):"]
        lines += [f"  {name:<12} {F.describe}" for name, F in extra.items()]
    lines += ["", "none: clean accuracy and calibration alone (every run measures those two)"]
    return "\n".join(lines)


def _split_list(text: str, flag: str):
    """A comma list; an empty one (``--attack ,``) would quietly run nothing but the defaults."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise BenchError(f"{flag} {text!r} names nothing: give one or more comma-separated names, or leave {flag} out")
    return items


def _takes_flag(info, key: str) -> bool:
    """Whether --eps, --alpha or --steps (``key``) applies to an attack: steps to any that has
    them, a radius or step size to the Linf ones only (an L2 radius is another unit)."""
    return key in info.params and (key == "steps" or info.norm == "linf")


def _check_flag_used(key: str, value: str, built: list):
    """A flag that no attack of the run takes would be ignored, the run made at the defaults."""
    if any(_takes_flag(ATTACKS[a], key) for a in built):
        return
    what = "the attacks with steps" if key == "steps" else "the Linf attacks"
    other = [a for a in built if key in ATTACKS[a].params]  # an L2 radius or step: another unit, by name only
    fix = ("use " + " ".join(f"--param {a}.{key}={value}" for a in other)) if other else \
        f"leave --{key} out, or choose one of them with --attack (see --list-attacks)"
    raise BenchError(f"--{key} applies to {what}, none of which is chosen: {fix}")


def _parsed(attack: str, key: str, value):
    return make_attack(attack, {key: value}).kwargs[key]


def _attack_params(profile, args) -> dict:
    """The profile's [attack.*] tables with the command line on top: --eps and --alpha for every
    Linf attack (an L2 radius is another unit: --param pgd_l2.eps=0.5), --steps for every attack
    that has steps, then each --param ATTACK.KEY=VALUE."""
    merged = {a: dict(profile.attack_params.get(a, {})) for a in ATTACKS}
    shared = {k: v for k, v in (("eps", args.eps), ("alpha", args.alpha), ("steps", args.steps)) if v is not None}
    for a, info in ATTACKS.items():
        merged[a].update({k: v for k, v in shared.items() if _takes_flag(info, k)})
    given: dict = {}
    for item in args.param:
        target, _, value = item.partition("=")
        attack, _, key = target.partition(".")
        if not (attack and key and value):
            raise BenchError(f"--param takes ATTACK.KEY=VALUE, e.g. square.n_queries=1000; got {item!r}")
        check_attack_name(attack, "--param: ")
        check_overrides(attack, {key: value})
        if given.setdefault(target, value) != value:
            raise BenchError(f"--param {target} is given twice ({given[target]}, {value}): give it once")
        if key in shared and _takes_flag(ATTACKS[attack], key) and _parsed(attack, key, shared[key]) != \
                _parsed(attack, key, value):  # the --param won, unsaid (8/255 and 0.0313... are one value)
            raise BenchError(f"--param {item} and --{key} {shared[key]} give {target} two values: leave one out, or "
                             f"give each attack its own {key} with --param")
        merged[attack][key] = value
    return {a: p for a, p in merged.items() if p}


def _check_writable(path: Path, flag: str = "--results", name: Optional[str] = None, env: Optional[str] = None):
    """``name``: a folder inside the one ``flag`` gives (which is checked first); ``env``: the
    variable that gave ``path`` when the flag did not."""
    probe = existing_ancestor(path)
    if not can_write_in(probe):
        fix = f"pass {flag} DIR" + (f" or set {env} to a writable folder" if env else "")
        if name is not None and probe.exists() and not probe.is_dir():
            fix = f"move the file {probe} away, or {fix}"
        raise BenchError(f"{name or flag[2:] + ' folder'} {path}{f' (from ${env})' if env else ''} cannot be written "
                         f"({probe} is not a writable folder): {fix}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise BenchError(f"unknown device {name!r}: use auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError("--device cuda asked for, but torch sees no GPU: use --device cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # cuda:abc, cuda:-1: torch's "Invalid device string", a traceback
        raise BenchError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N (N a GPU's index)") from None
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:  # else it failed at the first tensor moved there
        known = ", ".join(f"cuda:{i}" for i in range(count)) or "none"
        raise BenchError(f"--device {name}: torch sees {count} GPU{'' if count == 1 else 's'} ({known}): give one "
                         f"of them, or --device cuda")
    return device


def _floats(text: Optional[str], flag: str):
    return None if text is None else check_normalisation(text.split(","), flag, text)


_EXAMPLE = {"mean": "0.4914,0.4822,0.4465", "std": "0.2470,0.2435,0.2616"}


def check_normalisation(values, flag: str, given=None) -> list:
    """A per-channel mean or std (``flag``: --mean/--std, or audit()'s mean/std) as 3 finite
    floats, std's > 0. ``given``: what the user typed, to quote."""
    example, given = _EXAMPLE[flag.lstrip("-")], values if given is None else given
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise BenchError(f"{flag} takes 3 numbers like {example}, got {given!r}") from None
    if len(values) != 3:
        raise BenchError(f"{flag} takes 3 numbers (one per channel), got {given!r}")
    if not all(math.isfinite(v) for v in values):
        raise BenchError(f"{flag} takes finite numbers like {example}, got {given!r}")
    # the model divides by std: 0 makes every logit inf or NaN, found only after the data is decoded
    if flag.lstrip("-") == "std" and not all(v > 0 for v in values):
        raise BenchError(f"{flag} values must be > 0 (one per channel, e.g. {example}), got {given!r}")
    return values


def _spec(name: str, args):
    if is_file_name(name):
        mean, std = _floats(args.mean, "--mean"), _floats(args.std, "--std")
        if (mean is None) != (std is None):
            raise BenchError("give --mean and --std together, or neither")
        if args.temperature is not None and not (math.isfinite(args.temperature) and args.temperature > 0):
            raise BenchError(f"--temperature must be a finite number > 0, got {args.temperature}: give the T the "
                             f"weights were trained at, or leave --temperature out to estimate it")
        return file_spec(name, args.arch, args.temperature, mean, std)
    # they describe every file: model of the list; a zoo or registry model was run without them, unsaid
    given = [f"--{k}" for k in ("arch", "temperature", "mean", "std") if getattr(args, k) is not None]
    if given:
        flags = ", ".join(given)
        raise BenchError(f"{flags} {'is' if len(given) == 1 else 'are'} for --model file:PATH, and every model it "
                         f"lists must then be a file: model; {name} is not: run it in a separate command without "
                         f"{flags}")
    if is_zoo_name(name):
        return ZooSpec(name)
    return parse_name(name)


def _model_specs(args, profile) -> list:
    """--model's specs: the profile's grid for 'all'."""
    names = _split_list(args.model, "--model")
    if names == ["all"]:
        names = profile.models
    elif "all" in names:
        raise BenchError(f"--model {args.model!r}: 'all' (the profile's grid) cannot be combined with model "
                         f"names: give --model all alone, or list the names")
    if not names:
        raise BenchError(f"profile {profile.name!r} has no [[grid]] models: give --model NAME[,NAME...]")
    # an adversarial run without @best/@last stands for both of its checkpoints; robustbench:<Name>
    # is a zoo model, loaded, not trained
    specs: dict = {}
    for s in (s for n in names for s in _spec(n, args).checkpoints()):
        first = specs.setdefault(s.name, s)
        if getattr(first, "weights_sha256", None) != getattr(s, "weights_sha256", None):
            # a file's model is named by its stem: the last of two such files was measured, the first not at all
            raise BenchError(f"--model names two networks {s.name}: {first.source} and {s.source} (other weights); a "
                             f"file's model is named by its stem: rename one")
    return list(specs.values())


def _evaluation(args, ev):
    """The profile's [eval] with the command line's choice of threats, sizes and sweep on top."""
    ev = threats.select(ev, None if args.attack is None else _split_list(args.attack, "--attack"),
                        None if args.corruptions is None else _split_list(args.corruptions, "--corruptions"),
                        None if args.severities is None else threats.parse_severities(args.severities))
    if args.corruption_source is not None:
        if ev.corruptions == "none":
            raise BenchError("--corruption-source needs corruptions to measure: add --attack corruptions")
        ev = replace(ev, corruptions=args.corruption_source)
    if args.shift_n is not None:
        ev = replace(ev, shift_n=args.shift_n)
    elif args.n_test is not None and ev.shift_n is not None:
        ev = replace(ev, shift_n=min(ev.shift_n, args.n_test))
    if args.eps_sweep is not None:
        ev = replace(ev, eps_sweep=tuple(_split_list(args.eps_sweep, "--eps-sweep")))
    return ev


def _check_attacks(profile, args) -> None:
    """Every attack the run may build, with its parameters, checked now rather than mid-run."""
    ev = profile.eval
    # the attacks asked for first, so that an error names one of them rather than the registry's first
    order = [*ev.attacks, *(a for a in ATTACKS if a not in ev.attacks)]
    built = families.built_attacks(ev)
    for key, value in (("eps", args.eps), ("alpha", args.alpha), ("steps", args.steps)):
        # a bad --eps/--alpha/--steps is the flag's mistake, whichever attack would have met it first
        takes = [a for a in order if _takes_flag(ATTACKS[a], key)]
        if value is not None and takes:
            try:
                check_radius(make_attack(takes[0], {key: value}))
            except BenchError as e:
                raise BenchError(f"--{key}: {str(e).removeprefix(f'{takes[0]}: ')}") from None
        if value is not None:
            _check_flag_used(key, value, built)
    for name in order:
        try:
            check_radius(profile.attack(name))
        except BenchError as e:
            raise BenchError(f"{e} (--eps, --alpha, --param or the profile's [attack.{name}])") from None
    if args.view is not None and not built:  # a flag this run would ignore, as _check_flag_used says
        raise BenchError("--view picks the views the attacks see, and this run has no attack: leave --view out, or "
                         "choose attacks with --attack")
    for item in args.param:  # its form and names checked by _attack_params, its values above
        attack = item.partition(".")[0]
        if attack not in built:
            raise BenchError(f"--param {item}: {attack} is not among this run's attacks "
                             f"({', '.join(built) or 'none'}): add it with --attack, or leave the --param out")
    for family in families.FAMILIES:
        family.check(profile)


def make_plan(args, specs=None):
    """The run's Plan from the parsed command line; ``specs`` (the Python API's models) stand in
    for --model."""
    profile = load_profile(args.profile)
    if args.n_test is not None:
        if args.n_test < MIN_EVAL_N:
            raise BenchError(f"--n-test must be >= {MIN_EVAL_N} (the post-hoc temperature is cross-fitted on two "
                             f"halves), got {args.n_test}")
        profile = replace(profile, eval=replace(profile.eval, n=args.n_test))
    if args.shift_n is not None and args.shift_n < 1:
        raise BenchError(f"--shift-n must be >= 1, got {args.shift_n}")
    if specs is None:
        specs = _model_specs(args, profile)
    profile = replace(profile, eval=_evaluation(args, profile.eval), attack_params=_attack_params(profile, args))
    _check_attacks(profile, args)
    ev = profile.eval
    # a flag this run would ignore, as _check_flag_used says of --eps, --alpha and --steps
    if args.shift_n is not None and ev.corruptions == "none" and not ev.natural:
        raise BenchError("--shift-n sizes the corruptions and natural transforms, which this run does not measure: "
                         "add --attack corruptions or natural, or leave --shift-n out")
    attacks = [profile.attack(a) for a in ev.attacks]
    # once each: --view raw,raw ran every attack twice for one record
    views = list(dict.fromkeys(ev.views if args.view is None else _split_list(args.view, "--view")))
    for v in views:
        if v not in VIEWS:
            raise BenchError(f"unknown view {v!r}; known: {', '.join(VIEWS)}")
    store = None
    if args.store is not None:
        if "://" in args.store:
            raise BenchError(f"--store takes a folder, not {args.store!r}: mount the bucket (e.g. with s3fs or "
                             f"gcsfuse) and pass the mount point")
        store = Path(args.store)
        _check_writable(store, "--store")
        if args.results is not None and args.executor == "ray":
            # a worker would write its records into --results, which a node of its own may not see (the run's
            # check that a node sees the driver's folders looks in the store alone)
            raise BenchError("--results with --store under --executor ray: give --store alone on a cluster (a folder "
                             "every node mounts; the records and reports go there too)")
    # `is not None`: an empty --results read as not given wrote into results/<profile> (user_path refuses it too)
    results = Path(args.results) if args.results is not None else store or Path("results") / profile.name
    _check_writable(results)
    pace_dirs = _pace_dirs(args.pace_from, results)
    cache = Path(args.cache) if args.cache is not None else default_cache_dir()
    # decoded data, checkpoints (without --store) and downloads go there
    _check_writable(cache, "--cache",
                    env=None if args.cache is not None or not os.environ.get("BENCH_CACHE") else "BENCH_CACHE")
    # a Ray driver only plans: the workers run on the devices Ray gives them
    device = resolve_device("cpu" if args.executor == "ray" and args.device in ("auto", "cuda") else args.device)
    # a bad BENCH_BF16 / BENCH_COMPILE value stops here, before a file is written
    if Accel.for_device(device).attack_bf16:  # attacks/precision.py exists, the evaluator does not call it
        raise BenchError("BENCH_ATTACK_BF16=1: the evaluator does not run attacks in bf16 (its early stops would be "
                         "decided on bf16 logits, up to 1.6 pp weaker; its records would not say so): unset it")
    data_root = args.data_root if args.data_root is not None else default_data_root(args.dataset)
    plan = Plan(profile=profile, models=specs, attacks=attacks, views=views, results_dir=results,
                cache_dir=cache, data_root=data_root, device=device, force=args.force,
                accel_device=_ray_accel_device(args) if args.executor == "ray" else None,
                fetch_shift_sets=args.attack is not None, dataset=args.dataset, store_dir=store, pace_dirs=pace_dirs,
                require_shift_sets=args.attack is not None and bool(
                    set(threats.SHIFT_SETS) & set(_split_list(args.attack, "--attack"))),
                progress=sys.stderr.isatty() and not args.no_progress and args.executor == "local")
    # the folders a run writes into, as well: a blocked one was found only after a model had trained
    own = "--store" if store is not None else "--results"
    _check_writable(ResultStore(results).records_dir, "--results", "records folder")
    _check_writable(plan.log_dir, own, "job log folder")
    _check_writable(plan.checkpoint_dir, own if store is not None or profile.keep_checkpoints else "--cache",
                    "checkpoint folder")
    # and the files a job writes there: a folder named as a record or a job log failed its job with a
    # traceback (IsADirectoryError), after other jobs had written theirs
    _check_files_in(ResultStore(results).records_dir, "*.json", "result record",
                    "--results" if args.results is not None or store is None else "--store")
    _check_files_in(plan.log_dir, "*.log", "job log", own)
    # else found only when the run's reports move in, after every job
    check_report_paths(results, pages=not args.tables_only)
    return plan


def _ray_accel_device(args) -> torch.device:
    """The device whose precision defaults (bf16, compile) a Ray run's jobs take, decided here for
    every worker (Plan.accel_device): cuda where the jobs are known to get a GPU, as make_executor
    asks for one. --device auto joining a cluster cannot know: its jobs take the CPU's defaults,
    on a GPU too (executor.on_worker)."""
    if args.device == "cpu":
        gpu = False
    elif args.gpus_per_job is not None:
        gpu = args.gpus_per_job > 0
    else:
        gpu = args.device == "cuda" or (args.address is None and torch.cuda.is_available())
    return torch.device("cuda" if gpu else "cpu")


def _check_files_in(folder: Path, pattern: str, what: str, flag: str) -> None:
    """Every name in ``folder`` of the kind a job writes (``pattern``) is a file. A record's name
    is a digest of its measurement, so which names this run will write is known only per job:
    a folder, say, under any of them is refused (the readers skip such a record with a warning
    anyway), as the checkpoint store refuses weights that are not a file."""
    if not folder.is_dir():
        return
    with os.scandir(folder) as entries:  # no stat per file: the cpu profile's store holds 10,000 records
        for entry in entries:
            if Path(entry.name).match(pattern) and not entry.is_file():
                kind = "a folder" if entry.is_dir() else "not a file"
                raise BenchError(f"{what} {folder / entry.name} is {kind}, where the run writes its {what}s: move it "
                                 f"away, or give another {flag} folder")


def _pace_dirs(value: Optional[str], results: Path) -> Tuple[Path, ...]:
    """--pace-from's folders, each one holding records (read only: nothing there is written)."""
    if value is None:
        return ()
    dirs = []
    for name in _split_list(value, "--pace-from"):
        d = Path(name).expanduser()  # a comma list: the shell expands a ~ at its start alone
        if not ResultStore(d).has_records():
            raise BenchError(f"--pace-from {name}: no records in {d / 'records'}: give a results folder that has "
                             f"some, e.g. results/cpu")
        if d.resolve() != results.resolve() and d.resolve() not in (x.resolve() for x in dirs):
            dirs.append(d)  # the run's own store prices it already
    return tuple(dirs)


def make_executor(args):
    if args.executor == "local":
        for flag, value in (("--address", args.address), ("--cpus-per-job", args.cpus_per_job),
                            ("--gpus-per-job", args.gpus_per_job), ("--max-retries", args.max_retries)):
            if value is not None:
                raise BenchError(f"{flag} is for --executor ray")
        return LocalExecutor()
    import importlib.util
    if importlib.util.find_spec("ray") is None:
        raise BenchError("--executor ray needs Ray: pip install -e '.[ray]'")
    cpus = 1 if args.cpus_per_job is None else args.cpus_per_job
    if not cpus > 0:
        raise BenchError(f"--cpus-per-job must be > 0, got {cpus:g}")
    gpus = args.gpus_per_job
    if gpus is not None and not gpus >= 0:
        raise BenchError(f"--gpus-per-job must be >= 0, got {gpus}")
    if args.device == "cpu":
        if gpus:  # the jobs run on the CPU: the GPUs asked for were dropped, unsaid
            raise BenchError(f"--gpus-per-job {gpus:g} with --device cpu: the jobs run on the CPU; leave "
                             f"--gpus-per-job out, or give --device cuda")
        gpus = 0
    elif args.device == "cuda" and gpus is None:
        gpus = 1
    elif args.device not in ("auto", "cuda"):
        raise BenchError(f"--executor ray takes --device auto, cpu or cuda, not {args.device!r}")
    retries = 3 if args.max_retries is None else args.max_retries
    if retries < 0:
        raise BenchError(f"--max-retries must be >= 0, got {retries}")
    executor = RayExecutor(address=args.address, cpus_per_job=cpus, gpus_per_job=gpus,
                           max_retries=retries)
    executor.check()
    return executor
