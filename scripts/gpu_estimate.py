"""The time a profile's grid would take on a GPU, from pass counts measured here on the CPU.

Counts every image-pass through a model while the profile's own measurement jobs run, at a
small scale, on proxy models trained here: forward passes, backward passes, and float64 passes
apart (the fp64 check). The counts per evaluated image are then scaled to the profile's image
counts and grid, turned into FLOPs with the real architectures' forward cost (torch's
FlopCounterMode), and divided by a throughput:

    python scripts/gpu_estimate.py --profile gpu --rate 94

A training pass costs 3 forwards (forward, then input and weight gradients); an attack's
backward costs 1 (only the input gradient is asked for, so the weight gradients are skipped).
Corruption generation, data decoding, compilation and the reports are not model passes: the
profile's comments add them by hand.
"""
from __future__ import annotations

import os
import sys
import tempfile
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class PassCounter:
    """Image-passes through every top-level model (models.archs.Classifier), by current label."""

    def __init__(self):
        self.label = "?"
        self.counts = defaultdict(lambda: defaultdict(int))

    def __enter__(self):
        from models.archs import Classifier

        def hook(module, args, out):
            if not isinstance(module, Classifier) or not torch.is_tensor(out):
                return
            kind = "fp64" if out.dtype == torch.float64 else "fwd"
            counts, rows = self.counts[self.label], out.shape[0]
            counts[kind] += rows
            if out.requires_grad:
                out.register_hook(lambda g: counts.__setitem__(kind + "_bwd", counts[kind + "_bwd"] + rows))

        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def forward_gflop(arch_name: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from models import build_model, parse_name
    model = build_model(parse_name(f"{arch_name}_T1")).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    return fc.get_total_flops() / 1e9


def measure(profile_name: str, proxy_arch: str, proxy_T, n: int, data_root: str, cache: Path, families=None):
    """Per-image passes of each measurement family, averaged over proxies at ``proxy_T``."""
    from bench.cli import make_plan
    from bench.grid.jobs import Context
    from bench.profiles import load_profile
    from bench.run import build_parser
    from models import parse_name

    profile = load_profile(profile_name)
    ev = profile.eval
    small = replace(ev, n=n, shift_n=n, fp64_n=min(ev.fp64_n, n // 2), crosscheck_n=min(ev.crosscheck_n, n // 2),
                    shifts=())
    recipe = replace(profile.recipe, epochs=3, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4,
                     train_subset=4000, label_smoothing=0.0)
    specs = [parse_name(f"{proxy_arch}_T{t}") for t in proxy_T]
    profile = replace(profile, eval=small, recipe=recipe, recipe_overrides={})
    attacks = [profile.attack(a) for a in small.attacks]
    plan = make_plan(build_parser().parse_args(["--profile", profile_name, "--device", "cpu", "--cache", str(cache),
                                                "--results", str(cache / "results"), "--no-progress"] +
                                               (["--data-root", data_root] if data_root else [])))
    plan = replace(plan, profile=profile, models=specs, attacks=attacks, views=list(small.views))
    ctx = Context(plan, lambda m: print(m, file=sys.stderr))
    per_image = defaultdict(lambda: defaultdict(float))
    per_attack = defaultdict(lambda: [0.0, 0.0])  # the evaluator's own cost fields, per attack and view
    clean = {}
    with PassCounter() as counter:
        counter.label = "(train)"
        for spec in specs:  # all trained before any is measured: their clean accuracy scales the attacks
            clean[spec.name] = ctx.model(spec, lambda m: print(m, file=sys.stderr))[2].get("test_acc") or 0.0
        if not any(clean.values()):  # nothing to attack, and the scale to the real models' clean is 1/0
            from bench.errors import BenchError
            raise BenchError(f"proxies reached 0% clean ({', '.join(clean)}): raise --n or use another --proxy-T")
        for spec in specs:
            _, model, _, _ = ctx.model(spec, lambda m: print(m, file=sys.stderr))
            for family, fam in ctx.families.items():
                if (families and family not in families) or not fam.planned(spec, ctx):
                    continue
                counter.label = family
                for m in fam.run(model, spec, ctx, lambda m: print(m, file=sys.stderr)):
                    if family == "attacks" and "forward_per_image" in m.metrics:
                        cost = per_attack[f"{m.threat}/{m.view}"]
                        cost[0] += m.metrics["forward_per_image"] / len(specs)
                        cost[1] += m.metrics["backward_per_image"] / len(specs)
                images = {"fp64 check": small.fp64_n, "autoattack crosscheck": small.crosscheck_n}.get(family, n)
                for kind, v in counter.counts.pop(family, {}).items():
                    per_image[family][kind] += v / images / len(specs)
                print(f"  {spec.name} {family}: done", file=sys.stderr)
    return per_image, per_attack, clean


def main(argv=None) -> int:
    from bench.command import Parser  # a usage error in one line, as every command of the harness
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="gpu")
    p.add_argument("--proxy", default="fastnet", help="architecture of the proxy models trained here")
    p.add_argument("--proxy-T", default="1,50", help="temperatures of the proxies (their passes are averaged)")
    p.add_argument("--n", type=int, default=200, help="images each family is measured on here")
    p.add_argument("--rate", type=float, default=94.0, help="effective TFLOP/s assumed on the GPU")
    p.add_argument("--target-clean", type=float, default=0.93,
                   help="clean accuracy of the real models: attack passes scale with the images attacked")
    from bench.atomic import user_path  # an empty path is refused, not read as "not given"
    p.add_argument("--data-root", type=user_path, default=os.environ.get("BENCH_DATA") or None)
    p.add_argument("--cache", type=user_path, default=None,
                   help="keep the proxies' checkpoints here (default: a temporary folder)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--families", default=None, help="comma list: measure only these families (default: all)")
    args = p.parse_args(argv)
    from bench.errors import BenchError
    try:
        return estimate(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def checked(args):
    """(profile, proxy temperatures, families) once every flag is valid: a bad one is a BenchError
    before any proxy trains (a negative rate printed negative seconds; an unknown family, nothing)."""
    from bench.errors import BenchError
    from bench.measure.families import FAMILIES
    from bench.profiles import load_profile
    from models import parse_name
    if not args.rate > 0:  # NaN too
        raise BenchError(f"--rate must be positive, got {args.rate:g}")
    for flag, value, least in (("--threads", args.threads, 1), ("--n", args.n, 2)):
        if value < least:
            raise BenchError(f"{flag} must be >= {least}, got {value}")
    if not 0 < args.target_clean <= 1:
        raise BenchError(f"--target-clean is a clean accuracy in (0, 1], e.g. 0.93; got {args.target_clean:g}")
    try:
        temperatures = [float(t) for t in args.proxy_T.split(",")]
    except ValueError:
        raise BenchError(f"--proxy-T expects a comma list of temperatures, e.g. 1,50; got {args.proxy_T!r}") from None
    for t in temperatures:
        parse_name(f"{args.proxy}_T{t:g}")  # an unknown proxy or a bad T: the registry's own one line
    families = args.families.split(",") if args.families else None
    known = [F.name for F in FAMILIES]
    unknown = [f for f in families or () if f not in known]
    if unknown:
        raise BenchError(f"--families {', '.join(unknown)}: not a measurement family; one of {', '.join(known)}")
    return load_profile(args.profile), temperatures, families


def estimate(args) -> int:
    profile, temperatures, families = checked(args)
    torch.set_num_threads(args.threads)
    from models import parse_name
    with tempfile.TemporaryDirectory() as tmp:
        per_image, per_attack, clean = measure(args.profile, args.proxy, temperatures, args.n,
                                               args.data_root, Path(args.cache or tmp), families)
    ev = profile.eval
    test_n = 10000  # CIFAR-10's test split
    n = ev.n or test_n
    images = {"fp64 check": ev.fp64_n, "autoattack crosscheck": ev.crosscheck_n,
              "corruptions": ev.shift_n or n, "natural": ev.shift_n or n}
    # only clean-correct images are attacked: scale the attack families' passes to the real models
    scale = args.target_clean / (sum(clean.values()) / len(clean))
    attacked = {"attacks", "eps sweep", "fp64 check", "autoattack crosscheck"}
    print(f"proxies {args.proxy} at T={args.proxy_T}, clean acc {clean}; passes per image measured on {args.n}; "
          f"attack families scaled by {scale:.2f} to {args.target_clean:.0%} clean")
    for family in attacked & set(per_image):
        per_image[family] = {k: v * scale for k, v in per_image[family].items()}
    if per_attack:
        ranked = sorted(per_attack.items(), key=lambda kv: -kv[1][0])
        print("the attacks family by attack (forward+backward passes per evaluated image, scaled): " +
              ", ".join(f"{k} {f * scale:.0f}+{b * scale:.0f}" for k, (f, b) in ranked))
    print(f"{'family':<24}{'fwd/img':>9}{'bwd/img':>9}{'fp64/img':>9}{'images':>8}")
    for family, kinds in per_image.items():
        fp64 = kinds.get("fp64", 0) + kinds.get("fp64_bwd", 0)
        print(f"{family:<24}{kinds.get('fwd', 0):9.1f}{kinds.get('fwd_bwd', 0):9.1f}{fp64:9.1f}"
              f"{images.get(family, n):8d}")
    # per architecture: training passes from the recipe, evaluation passes from the measurement
    by_arch = defaultdict(list)
    for name in profile.models:
        spec = parse_name(name)
        by_arch[spec.arch_name].append(spec)
    total_s = 0.0
    for arch, specs in by_arch.items():
        g = forward_gflop(arch)
        runs = {s.run.name: s for s in specs}
        train_fwd_eq = 0.0
        for s in runs.values():
            r = profile.recipe_for(s)
            train_n = r.train_subset or 50000
            train_fwd_eq += r.epochs * (train_n // r.batch_size) * r.batch_size * 3 + n  # + the test-acc pass
        eval_fwd_eq = fp64_eq = 0.0
        for family, kinds in per_image.items():
            k = images.get(family, n)
            eval_fwd_eq += (kinds.get("fwd", 0) + kinds.get("fwd_bwd", 0)) * k * len(specs)
            fp64_eq += (kinds.get("fp64", 0) + kinds.get("fp64_bwd", 0)) * k * len(specs)
        t_train = train_fwd_eq * g / 1e3 / args.rate
        t_eval = eval_fwd_eq * g / 1e3 / args.rate
        # float64 has no tensor cores: an H200 does ~1/15 of its bf16 rate in fp64 (67 vs 990 TFLOP/s)
        t_fp64 = fp64_eq * g / 1e3 / (args.rate / 15)
        total_s += t_train + t_eval + t_fp64
        print(f"{arch}: {len(runs)} runs, {len(specs)} models, {g:.3f} GFLOP/forward; training "
              f"{train_fwd_eq / 1e6:.1f}M fwd-eq = {t_train:.0f} s; evaluation {eval_fwd_eq / 1e6:.1f}M = "
              f"{t_eval:.0f} s; fp64 {fp64_eq / 1e6:.2f}M = {t_fp64:.0f} s (at {args.rate:g} TFLOP/s)")
    print(f"model passes in all: {total_s:.0f} s at {args.rate:g} TFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
