"""`make perf`: the harness against the plain alternative, run side by side, medians of repeats.

(a) training images/s: bench.train.train against a plain loop over a torchvision-style dataset
    (uint8 arrays -> PIL -> RandomCrop/RandomHorizontalFlip/ToTensor per sample) and a
    torch DataLoader, on the same architecture, optimiser and number of images;
(b) PGD-10 evaluation images/s: bench.evaluate.evaluate (which also computes the masking
    diagnostics) against a plain torchattacks loop, on the same weights and images.

Runs alternate (harness, plain, harness, ...) so that drift on a noisy machine hits both.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
import torch.nn.functional as F


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


def plain_train(spec, recipe, split, workers: int) -> float:
    from torchvision import transforms

    from bench.train import make_schedule
    from models import build_model
    start = time.perf_counter()
    torch.manual_seed(spec.seed)
    model = build_model(spec).train()
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
            loss = F.cross_entropy(model(x) / spec.T, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - start


def plain_pgd(model, images, labels, batch_size) -> float:
    import torchattacks
    start = time.perf_counter()
    atk = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True)
    correct = 0
    for a in range(0, len(labels), batch_size):
        x, y = images[a:a + batch_size].float() / 255, labels[a:a + batch_size]
        adv = atk(x, y)
        with torch.no_grad():
            correct += int((model(adv).argmax(1) == y).sum())
    return time.perf_counter() - start


def main(argv=None) -> int:
    from attacks import make_attack
    from bench.checkpoints import CheckpointStore, checkpoint_key
    from bench.data import default_cache_dir, load_dataset, stratified_indices
    from bench.evaluate import evaluate
    from bench.profiles import Recipe, load_profile
    from bench.provenance import device_name
    from bench.train import train
    from models import parse_name

    p = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fastnet_T1")
    p.add_argument("--train-images", type=int, default=5120)
    p.add_argument("--eval-images", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loop")
    p.add_argument("--data-root", default=None)
    p.add_argument("--sections", default="train,pgd,corruptions",
                   help="comma list of train, pgd, corruptions")
    p.add_argument("--corruption-images", type=int, default=10000,
                   help="test images to corrupt (19 corruptions x 5 severities)")
    args = p.parse_args(argv)
    sections = set(args.sections.split(","))

    device = torch.device("cpu")
    data = load_dataset(args.data_root)
    spec = parse_name(args.model)
    recipe = Recipe(epochs=1, batch_size=128, lr=0.1, train_subset=args.train_images)
    subset = data.train.subset(stratified_indices(data.train.labels, args.train_images, 0))
    print(f"perf on {device_name(device)}, torch {torch.__version__}, {spec.name}, {data.name}; "
          f"median of {args.repeats} alternating runs", flush=True)

    rows = []
    h_train, p_train = [], []
    for _ in range(args.repeats if "train" in sections else 0):
        h_train.append(args.train_images / train(spec, recipe, data, device).wall_s)
        p_train.append(args.train_images / plain_train(spec, recipe, subset, args.workers))
    test = data.test.subset(stratified_indices(data.test.labels, args.eval_images, 0))
    # A model as accurate as the quick profile's (the harness attacks only correctly classified
    # points, so its speed depends on accuracy): its checkpoint if `make bench` made one, else
    # trained now with the quick recipe. channels_last, as the checkpoint store loads it.
    quick = load_profile("quick").recipe
    found = CheckpointStore(default_cache_dir() / "checkpoints").load(
        spec, checkpoint_key(spec, quick, data.fingerprint, data.num_classes), data.num_classes, device)
    model = found[0] if found else train(spec, quick, data, device).model
    plain_model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    pgd = make_attack("pgd")
    h_pgd, p_pgd, p_pgd_cl = [], [], []
    for _ in range(args.repeats if "pgd" in sections else 0):
        t = time.perf_counter()
        clean = evaluate(model, spec.T, test, [pgd], ["raw"], batch_size=500)[0].metrics["accuracy"]
        h_pgd.append(args.eval_images / (time.perf_counter() - t))
        p_pgd.append(args.eval_images / plain_pgd(plain_model, test.images, test.labels, 500))
        p_pgd_cl.append(args.eval_images / plain_pgd(model, test.images, test.labels, 500))

    # The last row compares with a plain loop on the harness's own channels_last model: what is
    # left is the harness's extra masking-diagnostics pass against its skipping of the points
    # that are misclassified anyway (which scales with the model's error rate).
    if h_train:
        rows.append(("training (img/s)", h_train, p_train))
    if h_pgd:
        rows += [("PGD-10 eval (img/s)", h_pgd, p_pgd), ("  same, plain on NHWC", h_pgd, p_pgd_cl)]
    if rows:
        print(f"{'':<22}{'harness':>10}{'plain':>10}{'ratio':>8}   runs (harness | plain)")
    for name, h, pl in rows:
        hm, pm = statistics.median(h), statistics.median(pl)
        runs = " ".join(f"{v:.0f}" for v in h) + " | " + " ".join(f"{v:.0f}" for v in pl)
        print(f"{name:<22}{hm:>10.0f}{pm:>10.0f}{hm / pm:>8.2f}   {runs}")
    if h_train:
        print(f"plain training: torchvision transforms per sample, DataLoader with {args.workers} workers")
    if h_pgd:
        print("plain PGD: torchattacks.PGD loop on the NCHW model, then on the harness's channels_last model; "
              f"the attacked model has {100 * clean:.1f}% clean accuracy and the harness attacks only those points")
    if "corruptions" in sections:
        corruption_timings(data, args.corruption_images, device)
    return 0


def corruption_timings(data, n: int, device) -> None:
    """Generate all 19 corruptions x 5 severities for n test images, once, and print the time of
    each (the reference generator's per-image loop takes ~74.5 ms per image for all of them)."""
    from attacks.corruptions import BENCHMARK, EXTRA, corrupt
    from bench.data import stratified_indices
    idx = stratified_indices(data.test.labels, n, 0)
    images = data.test.images[idx].to(device)
    total = 0.0
    print(f"corruptions on {n} test images, all 5 severities each (seconds):")
    for name in (*BENCHMARK, *EXTRA):
        t = time.perf_counter()
        for sev in range(1, 6):
            corrupt(images, name, sev, seed=0, indices=idx)
        dt = time.perf_counter() - t
        total += dt
        print(f"  {name:<18}{dt:8.1f}")
    print(f"  {'total':<18}{total:8.1f}   ({1000 * total / n:.1f} ms per image for all 95; reference ~74.5)")


if __name__ == "__main__":
    from bench.errors import BenchError
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
