"""`make perf`: the harness against the plain alternative, run side by side, medians of repeats.

(a) training images/s: bench.train.train against a plain loop over a torchvision-style dataset
    (uint8 arrays -> PIL -> RandomCrop/RandomHorizontalFlip/ToTensor per sample) and a
    torch DataLoader, on the same architecture, optimiser and number of images; then the same
    plain loop on channels_last, the harness's layout;
(b) PGD-10 evaluation images/s: bench.measure.adversarial.evaluate (which also computes the masking
    diagnostics and attacks only the correctly classified points) against a plain torchattacks
    loop on every image, and against the same loop on the correctly classified points only, on the
    same weights and images;
(c) early stop: PGD-20 through the evaluator (early-stopped) against a plain torchattacks PGD-20
    loop on the same model and images, on every image and on the correctly classified ones only
    (the harness's set), with the robust accuracies, on a standard model and on a masked one
    (fastnet_T1, fastnet_T50_lrT); then APGD-T (100 iterations, 9 targets), which leaves a point
    once broken, against torchattacks.APGDT, image by image;
(d) cost: forward and backward passes per image of the quick profile's attack suite against
    AutoAttack standard (its authors' code) and the harness's early-stopped AutoAttack, on the same
    models and images;
(e) corruption generation, per corruption.

Runs alternate (harness, plain, harness, ...) so that drift on a noisy machine hits both, after
one unmeasured run of each side; a row whose runs are more than SPREAD_WARN apart says so.
"""
from __future__ import annotations

import copy
import statistics
import sys
import time
from typing import NamedTuple

import torch
import torch.nn.functional as F

from attacks import apgd, make_attack
from attacks.corruptions import BENCHMARK, EXTRA, corrupt_severities
from attacks.views import PassCount, PassCounter, make_view
from bench.atomic import user_path
from bench.command import Parser, finish
from bench.checkpoints import CheckpointStore, checkpoint_key
from bench.data import default_cache_dir, default_data_root, load_dataset, stratified_indices, to_float
from bench.errors import BenchError
from bench.measure.adversarial import batch_seed_of, evaluate
from bench.measure.eps_sweep import sweep_configs
from bench.profiles import Recipe, load_profile
from bench.provenance import device_name
from bench.store import unpack_bits
from bench.train import make_schedule, train
from models import build_model, parse_name


class TorchvisionStyle(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10.__getitem__ does: PIL image, then the transform."""

    def __init__(self, images, labels, transform):
        self.images = images.permute(0, 2, 3, 1).numpy()  # HWC uint8, as CIFAR10.data
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def plain_train(spec, recipe, split, workers: int, channels_last: bool = False) -> float:
    """``channels_last``: the model and its batches in the layout the harness trains in, which a
    plain loop gets with one line (most of the harness's lead on a CPU: docs/speed.md)."""
    from torchvision import transforms

    start = time.perf_counter()
    torch.manual_seed(spec.seed)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(spec).train().to(memory_format=layout)
    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor()])
    loader = torch.utils.data.DataLoader(TorchvisionStyle(split.images, split.labels, tf),
                                         batch_size=recipe.batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = recipe.epochs * len(loader)
    sched = make_schedule(opt, recipe, steps)
    for _ in range(recipe.epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x.contiguous(memory_format=layout)) / spec.T, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - start


class PlainRun(NamedTuple):
    seconds: float
    robust_acc: float  # over every image, robust meaning correct both clean and under attack, as the harness counts it
    backward_per_image: float  # steps x the fraction attacked
    robust: torch.Tensor  # per image: correct clean and under attack
    clean_seconds: float  # of ``seconds``, the clean passes that choose the points to attack


def plain_pgd_run(model, images, labels, batch_size, steps=10, correct_only=False, seed=None) -> PlainRun:
    """The plain torchattacks PGD loop. ``correct_only``: it attacks only the points the model
    classifies correctly (its clean pass inside the timer), as the harness's evaluate and AutoAttack
    do, so that a ratio against it is the harness's own and not the skip of the misclassified
    points, which scales with the model's error rate. ``seed``: each batch's random start drawn as
    the harness draws its run's with that seed (batch_seed_of); None draws from the global generator as it is."""
    import torchattacks
    start = time.perf_counter()
    atk = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=steps, random_start=True)
    robust = torch.zeros(len(labels), dtype=torch.bool)
    attacked, clean_s = 0, 0.0
    for bi, a in enumerate(range(0, len(labels), batch_size)):
        t = time.perf_counter()
        x, y = to_float(images[a:a + batch_size]), labels[a:a + batch_size]
        with torch.no_grad():
            ok = model(x).argmax(1) == y
        clean_s += time.perf_counter() - t
        todo = ok.nonzero().flatten() if correct_only else torch.arange(len(y))
        if len(todo) == 0:
            continue
        if seed is not None:
            torch.manual_seed(batch_seed_of(seed, bi))  # the evaluator's draw for this batch
        adv = atk(x[todo], y[todo])
        with torch.no_grad():
            robust[a + todo] = (model(adv).argmax(1) == y[todo]) & ok[todo]
        attacked += len(todo)
    n = len(labels)
    return PlainRun(time.perf_counter() - start, int(robust.sum()) / n, steps * attacked / n, robust, clean_s)


def main(argv=None) -> int:

    p = Parser(prog="python -m bench.tools.perf", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fastnet_T1")
    p.add_argument("--train-images", type=int, default=5120)
    p.add_argument("--eval-images", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loop")
    p.add_argument("--data-root", type=user_path, default=None)
    p.add_argument("--sections", default="train,pgd,early-stop,cost,corruptions",
                   help="comma list of train, pgd, early-stop, cost, corruptions")
    p.add_argument("--cost-images", type=int, default=200,
                   help="test images for the passes-per-image comparison (AutoAttack standard is slow on CPU)")
    p.add_argument("--corruption-images", type=int, default=10000,
                   help="test images to corrupt (19 corruptions x 5 severities)")
    args = p.parse_args(argv)
    # perf writes no file but the decoded data's cache (whole files): what it printed is all it leaves
    return finish(lambda: run(args), "the tables printed above are complete; rerun, with --sections, for the rest")


SECTIONS = ("train", "pgd", "early-stop", "cost", "corruptions")
MODEL_SECTIONS = {"early-stop", "cost"}  # on perf_model's two models, and --cost-images test images
TRAINING_SECTIONS = {"train"} | MODEL_SECTIONS  # on --train-images (perf_model trains on as many)
EVAL_SECTIONS = {"pgd", "early-stop"}  # on --eval-images test images
TRAIN_BATCH = 128  # the batch of section train's runs; the quick recipe's is perf_model's


def check_args(args) -> set:
    """The sections asked for, once every argument is checked: before the data is decoded into
    the cache (a typo would otherwise cost that, then do nothing or stop mid-way)."""
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sorted(sections - set(SECTIONS))
    if unknown or not sections:
        raise BenchError(f"--sections {args.sections!r}: {'unknown ' + ', '.join(unknown) if unknown else 'names none'}"
                         f"; give a comma list of {', '.join(SECTIONS)}")
    if args.repeats < 1:
        raise BenchError(f"--repeats must be >= 1 (the runs whose median is printed), got {args.repeats}")
    if args.workers < 0:
        raise BenchError(f"--workers must be >= 0, got {args.workers}")
    batch = max(TRAIN_BATCH, load_profile("quick").recipe.batch_size)
    if sections & TRAINING_SECTIONS and args.train_images < batch:
        raise BenchError(f"--train-images must be at least one training batch ({batch} images), "
                         f"got {args.train_images}")
    for flag, n in (("--eval-images", args.eval_images), ("--cost-images", args.cost_images),
                    ("--corruption-images", args.corruption_images)):
        if n < 1:
            raise BenchError(f"{flag} must be >= 1, got {n}")
    parse_name(args.model)  # an unknown name stops here, with the registry's own message
    return sections


def check_sizes(args, sections: set, data) -> None:
    """The image counts the sections use against the data's splits (``data``'s labels are enough)."""
    used = []
    if sections & TRAINING_SECTIONS:
        used.append(("--train-images", args.train_images, data.train))
    if sections & EVAL_SECTIONS:
        used.append(("--eval-images", args.eval_images, data.test))
    if sections & MODEL_SECTIONS:
        used.append(("--cost-images", args.cost_images, data.test))
    if "corruptions" in sections:
        used.append(("--corruption-images", args.corruption_images, data.test))
    for flag, n, split in used:
        try:
            stratified_indices(split.labels, n, 0)
        except BenchError as e:
            raise BenchError(f"{flag} {n} does not fit {data.name} ({e}): lower it") from None


def run(args) -> int:
    sections = check_args(args)
    device = torch.device("cpu")
    data = load_dataset(args.data_root or default_data_root(),
                        check=lambda undecoded: check_sizes(args, sections, undecoded))
    check_sizes(args, sections, data)
    spec = parse_name(args.model)
    recipe = Recipe(epochs=1, batch_size=TRAIN_BATCH, lr=0.1, train_subset=args.train_images)
    print(f"perf on {device_name(device)}, torch {torch.__version__}, {spec.name}, {data.name}; "
          f"median of {args.repeats} alternating runs", flush=True)

    rows = []
    h_train, p_train = [], []
    if "train" in sections:
        subset = data.train.subset(stratified_indices(data.train.labels, args.train_images, 0))
        # one unmeasured run of each first: a process's first training run also pays one-time
        # costs (torch._dynamo's import at the first optimizer step, oneDNN's kernel setup) that
        # an 8-epoch run pays once in minutes, and 5,120 images pay in a second or two
        train(spec, recipe, data, device)
        plain_train(spec, recipe, subset, args.workers)
        plain_train(spec, recipe, subset, args.workers, channels_last=True)
    p_train_cl = []
    for _ in range(args.repeats if "train" in sections else 0):
        h_train.append(args.train_images / train(spec, recipe, data, device).wall_s)
        p_train.append(args.train_images / plain_train(spec, recipe, subset, args.workers))
        p_train_cl.append(args.train_images / plain_train(spec, recipe, subset, args.workers, channels_last=True))
    if sections & EVAL_SECTIONS:
        test = data.test.subset(stratified_indices(data.test.labels, args.eval_images, 0))
    # A model as accurate as the quick profile's (the harness attacks only correctly classified
    # points, so its speed depends on accuracy): its checkpoint if `make bench` made one, else
    # trained now with the quick recipe. channels_last, as the checkpoint store loads it.
    h_pgd, p_pgd, p_pgd_cl, p_pgd_ok = [], [], [], []
    if "pgd" in sections:
        quick = load_profile("quick").recipe
        found = CheckpointStore(default_cache_dir() / "checkpoints").load(
            spec, checkpoint_key(spec, quick, data.fingerprint, data.num_classes), data.num_classes, device)
        model = found[0] if found else train(spec, quick, data, device).model
        plain_model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    # PGD-10 as the plain loop, without the early stop (section early-stop measures that): this
    # row is about the harness's own overheads
    pgd = make_attack("pgd", {"steps": 10, "early_stop": False})
    if "pgd" in sections:
        # one unmeasured run of each side first: a process's first attack pays one-time costs
        # (a first evaluate took 3.15 s where the later ones took 0.67 s), which went to whichever side ran first
        warm = test.subset(torch.arange(min(WARM_IMAGES, len(test))))
        evaluate(model, spec.T, warm, [pgd], ["raw"], batch_size=500)
        for m in (plain_model, model):
            plain_pgd_run(m, warm.images, warm.labels, 500, correct_only=True, seed=0)
    for _ in range(args.repeats if "pgd" in sections else 0):
        t = time.perf_counter()
        clean = evaluate(model, spec.T, test, [pgd], ["raw"], batch_size=500)[0].metrics["accuracy"]
        h_pgd.append(args.eval_images / (time.perf_counter() - t))
        p_pgd.append(args.eval_images / plain_pgd_run(plain_model, test.images, test.labels, 500).seconds)
        p_pgd_cl.append(args.eval_images / plain_pgd_run(model, test.images, test.labels, 500).seconds)
        p_pgd_ok.append(args.eval_images / plain_pgd_run(model, test.images, test.labels, 500, correct_only=True,
                                                         seed=0).seconds)

    # The last row compares with a plain loop on the harness's own channels_last model: what is
    # left is the harness's extra masking-diagnostics pass against its skipping of the points
    # that are misclassified anyway (which scales with the model's error rate).
    if h_train:
        rows += [("training (img/s)", h_train, p_train), ("  same, plain on NHWC", h_train, p_train_cl)]
    if h_pgd:
        rows += [("PGD-10 eval (img/s)", h_pgd, p_pgd), ("  same, plain on NHWC", h_pgd, p_pgd_cl),
                 ("  plain NHWC, correct only", h_pgd, p_pgd_ok)]
    if rows:
        print(f"{'':<28}{'harness':>10}{'plain':>10}{'ratio':>8}   runs (harness | plain)")
    spread = []
    for name, h, pl in rows:
        hm, pm = statistics.median(h), statistics.median(pl)
        runs = _runs((h, pl), ".0f")
        print(f"{name:<28}{hm:>10.0f}{pm:>10.0f}{hm / pm:>8.2f}   {runs}")
        spread += [spread_note(f"{name.strip()}: harness", h), spread_note(f"{name.strip()}: plain", pl)]
    print_spread(spread, "")
    if h_train:
        print(f"plain training: torchvision transforms per sample, DataLoader with {args.workers} workers, the "
              "NCHW model, then the same on channels_last (the harness's layout); each warmed up by one unmeasured run")
        print(budget_scale(h_train))
        if spec.T != 1:  # the softmax of z/T holds subnormals at high T: 3.5x slower arithmetic at T=50
            print(f"at T={spec.T:g} the harness flushes subnormal floats while it trains (bench/train.py) and the "
                  "plain loops do not: part of this ratio is that")
    if h_pgd:
        print("plain PGD: torchattacks.PGD loop on every image, on the NCHW model, then on the harness's "
              "channels_last model; then on that model on the points it classifies correctly only, its clean pass "
              f"timed, as the harness attacks: the attacked model has {100 * clean:.1f}% clean accuracy, and the "
              "ratio against that last row is the harness's own")
    if sections & MODEL_SECTIONS:
        models = [perf_model(name, data, device, args.train_images) for name in ("fastnet_T1", "fastnet_T50_lrT")]
        if "early-stop" in sections:
            early_stop_timings(models, test, args.repeats)
            apgd_timings(models, data.test.subset(stratified_indices(data.test.labels, args.cost_images, 0)),
                         args.repeats)
        if "cost" in sections:
            cost_table(models, data.test.subset(stratified_indices(data.test.labels, args.cost_images, 0)),
                       data.num_classes)
    if "corruptions" in sections:
        corruption_timings(data, args.corruption_images, device, args.repeats)
    return 0


# issue 17's budgets are set on a 2-core AVX2 box whose harness training figure was about this
BUDGET_BOX_IMG_S = 1000.0
# runs further apart than this: the box's pace moved while it measured (shared hosts do, 2x in an
# hour), and a time scaled by the median is no better known than the runs' range
SPREAD_WARN = 1.25
# images of each side's unmeasured first run in the attack sections
WARM_IMAGES = 20


def spread_note(label: str, runs) -> str | None:
    """'label 1.31x' where a row's runs are more than SPREAD_WARN apart (times or rates alike)."""
    lo, hi = min(runs), max(runs)
    return f"{label} {hi / lo:.2f}x" if lo > 0 and hi / lo > SPREAD_WARN else None


def print_spread(notes, indent: str) -> None:
    notes = [x for x in notes if x]
    if notes:
        print(f"{indent}runs more than {SPREAD_WARN:g}x apart, the box's pace moved while it measured: rerun idle "
              f"before reading these medians and ratios ({'; '.join(notes)})")


def _runs(sides, fmt: str = ".1f") -> str:
    """Each side's runs, in the order they ran, the sides apart: "1.6 1.5 | 10.1 9.8"."""
    return " | ".join(" ".join(format(x, fmt) for x in side) for side in sides)


def budget_scale(h_train) -> str:
    """The factor that turns a time measured on this box into the budget box's, with the range of
    the runs behind it, and a warning when they are far apart."""
    med, lo, hi = statistics.median(h_train), min(h_train), max(h_train)
    line = (f"scale a time measured here to the budget's box ({BUDGET_BOX_IMG_S:,.0f} img/s): "
            f"x {med / BUDGET_BOX_IMG_S:.2f} (runs x {lo / BUDGET_BOX_IMG_S:.2f}-{hi / BUDGET_BOX_IMG_S:.2f})")
    if hi / lo > SPREAD_WARN:
        line += (f"; the runs are {hi / lo:.2f}x apart, the box's pace moved while it measured: "
                 "run it again idle before scaling by it")
    return line


def perf_model(name: str, data, device, train_images: int):
    """(spec, model, where it came from): the quick profile's checkpoint if `make bench` made one,
    else trained now with the quick recipe on ``train_images`` images (a minute or two each)."""
    from dataclasses import replace

    spec = parse_name(name)
    quick = load_profile("quick").recipe
    found = CheckpointStore(default_cache_dir() / "checkpoints").load(
        spec, checkpoint_key(spec, quick, data.fingerprint, data.num_classes), data.num_classes, device)
    if found:
        return spec, found[0].eval(), "the quick profile's checkpoint"
    model = train(spec, replace(quick, train_subset=train_images), data, device).model.eval()
    return spec, model, f"trained now, quick recipe on {train_images} images"


def _name_width(models) -> int:
    """The model column of a per-model table: the longest name and two spaces, 17 at least."""
    return max(17, *(len(spec.name) + 2 for spec, _, _ in models))


def early_stop_timings(models, test, repeats: int) -> None:
    """PGD-20 (eps 8/255) through the evaluator, early-stopped, against a plain torchattacks PGD-20
    loop on the same model and view (the harness's channels_last one: only the early stop differs, and the
    harness's summed loss, which breaks more of a saturated model's points) and the same images,
    alternating, median of ``repeats``, each side warmed up by one unmeasured run. The evaluator
    skips the points misclassified clean and drops each attacked point at its first misclassified
    iterate (or a zero gradient). Two plain loops: "plain-all" attacks every image with 20 steps
    (the plain torchattacks loop as one writes it), "plain-ok" only the points the model classifies
    correctly, its clean pass timed, as the harness does: the ratio against plain-all includes the
    skip of the misclassified points (which scales with the model's error rate), the ratio against
    plain-ok is the early stop's alone. A masked model's raw view keeps many points to the end,
    which is why its scaled view (where robust_min comes from) is shown too. Run r draws both
    sides' random starts from seed r, plain-ok each batch's as the evaluator does (batch_seed_of), so
    image by image it starts where the harness's run r starts: column "⊆ plain-ok" checks, over
    every run, that each image robust with the early stop is robust to the plain loop from the same
    start too (images robust with the early stop / to plain-ok, summed over the runs; the two
    trajectories differ by the early stop and the summed loss, so this is a check of the claim, not
    true by construction). One start moves robust accuracy by a few images either way
    (docs/speed.md), so the columns give the mean over the runs' starts and their range, not one
    seed's draw."""
    pgd = make_attack("pgd", {"steps": 20})
    n, w = len(test), _name_width(models)
    warm = test.subset(torch.arange(min(WARM_IMAGES, n)))
    print(f"early stop: PGD-20 on {n} test images, seconds (median of {repeats}), ratio plain / harness (vs plain on "
          "all images, vs plain on the correct ones), robust accuracy (mean over the runs' random starts, range), "
          "backward passes per image")
    print(f"  {'model':<{w}}{'view':<8}{'harness':>9}{'plain-all':>11}{'plain-ok':>10}{'vs all':>8}{'vs ok':>7}"
          f"{'robust':>19}{'plain-all':>19}{'plain-ok':>19}{'bwd/img':>9}{'all':>7}{'ok':>7}{'⊆ plain-ok':>16}"
          "   runs (harness | plain-all | plain-ok)")
    spread, own = [], []
    for spec, model, origin in models:
        views = ["raw"] if spec.T == 1 else ["raw", "scaled"]
        h = {v: [] for v in views}
        ms = {v: [] for v in views}
        p_all = {v: [] for v in views}
        p_ok = {v: [] for v in views}
        diag = {v: [] for v in views}
        for v in views:
            # the plain loop on the same view: the raw one of a masked model is the slower to
            # attack (subnormal gradients) and the weaker, so one raw plain loop beside the
            # harness's scaled row flattered both its ratio and its robust accuracy
            target = make_view(model, v, spec.T)
            evaluate(model, spec.T, warm, [pgd], [v], batch_size=500)
            for correct_only in (False, True):
                plain_pgd_run(target, warm.images, warm.labels, 500, steps=20, correct_only=correct_only, seed=0)
        for r in range(repeats):
            for v in views:
                target = make_view(model, v, spec.T)
                t = time.perf_counter()
                clean, m = evaluate(model, spec.T, test, [pgd], [v], batch_size=500, seed=r)
                h[v].append(time.perf_counter() - t)
                ms[v].append(m)
                diag[v].append(clean.wall_s)
                torch.manual_seed(r)
                p_all[v].append(plain_pgd_run(target, test.images, test.labels, 500, steps=20))
                p_ok[v].append(plain_pgd_run(target, test.images, test.labels, 500, steps=20, correct_only=True,
                                             seed=r))
        for v in views:
            hm = statistics.median(h[v])
            am, om = (statistics.median(x.seconds for x in p[v]) for p in (p_all, p_ok))
            early = [torch.from_numpy(unpack_bits(m.bits, n)).bool() for m in ms[v]]
            n_early, n_ok = sum(int(e.sum()) for e in early), sum(int(x.robust.sum()) for x in p_ok[v])
            if n_early == 0:
                subset = "n/a (0 robust)"
            else:
                broke = any((e & ~x.robust).any() for e, x in zip(early, p_ok[v]))
                subset = f"{'NO' if broke else 'yes'} {n_early}/{n_ok}"
            times = (h[v], [x.seconds for x in p_all[v]], [x.seconds for x in p_ok[v]])
            runs = _runs(times)
            bwd = statistics.mean(x.metrics["backward_per_image"] for x in ms[v])
            bwd_all, bwd_ok = (statistics.mean(x.backward_per_image for x in p[v]) for p in (p_all, p_ok))
            print(f"  {spec.name:<{w}}{v:<8}{hm:>9.1f}{am:>11.1f}{om:>10.1f}{am / hm:>8.2f}{om / hm:>7.2f}"
                  f"{_spread([x.metrics['robust_acc'] for x in ms[v]]):>19}"
                  f"{_spread([x.robust_acc for x in p_all[v]]):>19}{_spread([x.robust_acc for x in p_ok[v]]):>19}"
                  f"{bwd:>9.2f}{bwd_all:>7.2f}{bwd_ok:>7.2f}{subset:>16}   {runs}")
            spread += [spread_note(f"{spec.name} {v} {side}", x)
                       for side, x in zip(("harness", "plain-all", "plain-ok"), times)]
            own.append((spec.name, v, diag[v], [x.wall_s for x in ms[v]],
                        [x.seconds - x.clean_seconds for x in p_ok[v]], [x.clean_seconds for x in p_ok[v]]))
        print(f"  ({spec.name}: {origin}; clean accuracy {100 * ms[views[0]][0].metrics['clean_acc']:.1f}%)")
    print("  (plain-all: torchattacks.PGD on every image of the same view; plain-ok: the same loop on the points the "
          "model classifies correctly, its clean pass timed, as the harness attacks; ⊆ plain-ok: every image robust "
          "with the early stop is robust to plain-ok from the same random start, in every run, else NO; images "
          "robust with the early stop / to plain-ok, summed over the runs)")
    print_spread(spread, "  ")
    early_stop_own(own, w)


def early_stop_own(rows, w: int) -> None:
    """The early stop's own ratio: the attack alone on both sides (each run's attack and the final
    check of its adversarial examples), their clean passes out. The harness's clean pass is not the
    plain loop's: it also takes the input gradient of every image on every view (the masking
    diagnostics: zero_grad_frac, saturated_frac), a backward pass the plain loop does not make, so
    "vs ok" above charges the early stop with an audit the plain loop skips."""
    print("early stop alone: the PGD-20 attack of the rows above without the clean passes, seconds (median), ratio; "
          "the clean passes beside it (the harness's with the masking diagnostics)")
    print(f"  {'model':<{w}}{'view':<8}{'harness':>9}{'plain-ok':>10}{'ratio':>7}{'clean+diag':>12}{'clean':>7}"
          "   runs (harness | plain-ok)")
    for name, v, diag, h, p, p_clean in rows:
        hm, pm = statistics.median(h), statistics.median(p)
        runs = _runs((h, p))
        print(f"  {name:<{w}}{v:<8}{hm:>9.1f}{pm:>10.1f}{pm / hm:>7.2f}{statistics.median(diag):>12.3f}"
              f"{statistics.median(p_clean):>7.3f}   {runs}")


def _spread(fractions) -> str:
    """'1.6% (1.4-1.8)': the mean in percent and the range."""
    pc = [100 * f for f in fractions]
    return f"{statistics.mean(pc):.1f}% ({min(pc):.1f}-{max(pc):.1f})"


def apgd_timings(models, test, repeats: int) -> None:
    """APGD-T at AutoAttack's budget (100 iterations, 9 targets, eps 8/255) as the harness runs it
    (attacks/apgd.py: a point leaves once broken) against torchattacks.APGDT, on the same model,
    clean-correct images and seed, alternating, median of ``repeats``, each warmed up by one
    unmeasured run; column "same": the two leave the same images robust, "n/a" where both leave
    all or none robust (equal then whatever the attacks did)."""
    import torchattacks

    w = _name_width(models)
    print(f"early stop: APGD-T on the clean-correct of {len(test)} test images, seconds (median of {repeats}), "
          "robust accuracy, backward passes per image")
    print(f"  {'model':<{w}}{'harness':>9}{'plain':>9}{'ratio':>7}{'robust':>9}{'plain':>8}{'bwd/img':>9}{'plain':>8}"
          f"{'same':>18}   runs (harness | plain)")
    spread = []
    x_all, y_all = to_float(test.images), test.labels
    for spec, model, _ in models:
        with torch.no_grad():
            ok = model(x_all).argmax(1) == y_all
        x, y = x_all[ok], y_all[ok]
        times = {cls: [] for cls in (apgd.APGDT, torchattacks.APGDT)}
        robust, bwd = {}, {}

        def attack(cls, count):
            return cls(PassCounter(model, count), norm="Linf", eps=8 / 255, steps=100, n_restarts=1, seed=0,
                       n_classes=10, verbose=False)

        for cls in times:
            if len(y):
                attack(cls, PassCount())(x[:WARM_IMAGES], y[:WARM_IMAGES])
        for _ in range(repeats):
            for cls in times:
                count = PassCount()
                atk = attack(cls, count)
                t = time.perf_counter()
                adv = atk(x, y)
                times[cls].append(time.perf_counter() - t)
                with torch.no_grad():
                    robust[cls] = model(adv).argmax(1) == y
                bwd[cls] = count.backward / len(y)
        (h, hr, hb), (p, pr, pb) = ((statistics.median(times[c]), robust[c], bwd[c]) for c in times)
        runs = _runs(times.values())
        print(f"  {spec.name:<{w}}{h:>9.1f}{p:>9.1f}{p / h:>7.1f}{100 * hr.float().mean():>8.1f}%"
              f"{100 * pr.float().mean():>7.1f}%{hb:>9.1f}{pb:>8.1f}{same_robust(hr, pr):>18}   {runs}")
        spread += [spread_note(f"{spec.name} {side}", times[c]) for side, c in zip(("harness", "plain"), times)]
    print_spread(spread, "  ")


def same_robust(a: torch.Tensor, b: torch.Tensor) -> str:
    """Whether two attacks leave the same images robust; "n/a" where both leave all of them or
    none (or there were none): equal then whatever the attacks did, which checks nothing."""
    if not torch.equal(a, b):
        return "NO"
    if len(a) == 0 or not a.any():
        return "n/a (none robust)"
    return "n/a (all robust)" if a.all() else "yes"


def cost_table(models, test, num_classes: int) -> None:
    """Forward and backward passes per image (bench/measure/adversarial.py counts them) of the quick profile's
    attack suite (its attacks on its views, then its eps sweep) against AutoAttack standard at
    full budget (100 iterations, 5,000 queries; raw view) as its authors wrote it, and the
    harness's own AutoAttack at that budget (APGD and APGD-T leave a point once broken), with the
    robust accuracy each gives at 8/255 (the suite: its robust_min)."""

    profile = load_profile("quick")
    ev = profile.eval
    attacks = [profile.attack(a) for a in ev.attacks]
    sweep = sweep_configs(profile)
    # the harness's AutoAttack leaves a point once broken (attacks/registry.py): standard is the authors' code
    aa = profile.attack("autoattack_ref", {"steps": 100, "n_queries": 5000})
    aa_ours = profile.attack("autoattack", {"steps": 100, "n_queries": 5000})
    w = _name_width(models)
    print(f"cost: passes per image on {len(test)} test images (forward / backward), robust accuracy at 8/255, seconds")
    print(f"  {'model':<{w}}{'what':<24}{'fwd/img':>9}{'bwd/img':>9}{'robust':>9}{'s':>8}")
    for spec, model, _ in models:
        rows = []
        for what, configs, views in (("quick suite: attacks", attacks, list(ev.views)),
                                     ("quick suite: eps sweep", sweep, list(ev.sweep_views or ev.views)),
                                     ("AutoAttack standard", [aa], ["raw"]),
                                     ("AutoAttack, early stop", [aa_ours], ["raw"])):
            t = time.perf_counter()
            ms = evaluate(model, spec.T, test, configs, views, batch_size=500, n_classes=num_classes)
            dt = time.perf_counter() - t
            fwd = sum(m.metrics["forward_per_image"] for m in ms)
            bwd = sum(m.metrics["backward_per_image"] for m in ms)
            head = [m.metrics["robust_acc"] for m in ms[1:] if abs(m.eps - 8 / 255) < 1e-9 and
                    m.threat != "pgd_l2"]
            rows.append((what, fwd, bwd, min(head) if head else float("nan"), dt))
        for what, fwd, bwd, robust, dt in rows:
            print(f"  {spec.name:<{w}}{what:<24}{fwd:>9.1f}{bwd:>9.1f}{100 * robust:>8.1f}%{dt:>8.1f}")
    print("  (each line includes its own clean pass: one forward, and one backward per view for the masking "
          "diagnostics; AutoAttack standard is its authors' code, pyautoattack; 'early stop' the harness's "
          "torchattacks one, whose APGD and APGD-T leave a point once broken)")


def corruption_timings(data, n: int, device, repeats: int = 1) -> None:
    """Generate all 19 corruptions x 5 severities for n test images as the harness does (one
    corrupt_severities call per corruption), ``repeats`` times, all of them once a round so that
    drift hits every row, and print the median wall and CPU time of each: CPU time about twice
    the wall time means both threads were busy; wall time well above the CPU time means the
    machine was shared."""
    idx = stratified_indices(data.test.labels, n, 0)
    images = data.test.images[idx].to(device)
    names = (*BENCHMARK, *EXTRA)
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            t, c = time.perf_counter(), time.process_time()
            corrupt_severities(images, name, [1, 2, 3, 4, 5], seed=0, indices=idx)
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    total_wall = [sum(wall[name][r] for name in names) for r in range(repeats)]
    total_cpu = [sum(cpu[name][r] for name in names) for r in range(repeats)]
    print(f"corruptions on {n} test images, all 5 severities each, {torch.get_num_threads()} threads "
          f"(seconds, median of {repeats}: wall, cpu; runs' wall):")
    spread = []
    for name, dt, dc in (*((name, wall[name], cpu[name]) for name in names), ("total", total_wall, total_cpu)):
        print(f"  {name:<18}{statistics.median(dt):8.2f}{statistics.median(dc):8.2f}   "
              + " ".join(f"{x:.2f}" for x in dt))
        spread.append(spread_note(name, dt))
    print(f"  ({1000 * statistics.median(total_wall) / n:.1f} ms per image for all 95)")
    print_spread(spread, "  ")


if __name__ == "__main__":
    sys.exit(main())
