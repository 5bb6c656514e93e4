"""The float64 check: CE-PGD on the raw logits recomputed in float64 on a few images. A softmax
saturated in float32 (p = 1.0 exactly, gradient 0) may still have a gradient in float64: if the
float64 attack is much stronger, the float32 "robustness" was underflow."""
from __future__ import annotations

import copy
import time

import torch

from attacks import AttackConfig
from attacks.views import PassCount
from bench.data import Split, stratified_indices
from bench.measure.adversarial import clean_pass, run_attack
from bench.measure.attack_suite import record_version
from bench.measure.base import Family, Measurement, frac, pct
from bench.store import part_positions


def fp64_check(model, temperature: float, split: Split, pgd: AttackConfig, batch_size: int, seed: int,
               n_classes: int) -> Measurement:
    """The same CE-PGD (raw view, same seeds) in float32 and in float64, on the points float32
    classifies correctly: a point whose clean prediction flipped in float64 would change which
    points each batch attacks, and with them every later random draw of the batch."""
    t0 = time.perf_counter()
    metrics, cost, attacked = {}, PassCount(), None
    for tag, m, dtype in (("fp32", model, None), ("fp64", copy.deepcopy(model).double(), torch.float64)):
        m.eval()
        ok, zero, sat = clean_pass(m, split, batch_size, ["raw"], temperature, dtype=dtype, cost=cost)
        attacked = ok if attacked is None else attacked
        run = run_attack(m, temperature, split, attacked, pgd, "raw", batch_size, seed, n_classes, dtype=dtype)
        robust, spent = run.robust_ok, run.cost
        cost.add(spent)
        metrics.update({f"clean_acc_{tag}": frac(ok), f"robust_acc_{tag}": frac(robust),
                        f"zero_grad_frac_{tag}": frac(zero["raw"]), f"saturated_frac_{tag}": frac(sat["raw"])})
    metrics.update(cost.metrics(len(split)))  # both precisions'
    return Measurement("pgd_fp64", "raw", pgd.eps, pgd.steps, fp64_params(pgd), len(split), metrics,
                       time.perf_counter() - t0, family="diagnostic")


def fp64_params(pgd: AttackConfig) -> dict:
    return dict(pgd.kwargs, attack=pgd.name)


class Fp64Check(Family):
    name = "fp64 check"
    batch_seeded = True
    parts_of_evaluation = True
    # 2: both precisions attack the same points from the same random start (record_version adds
    # the PGD's own revisions: 3 with its summed loss)
    version = 2

    @classmethod
    def version_of(cls, identity):
        return record_version(cls.version, identity[3]["attack"])  # fp64_params names its PGD

    def __init__(self, split: Split, pgd: AttackConfig, positions=None, eval_n: int = 0):
        self.split, self.pgd, self.positions, self.eval_n = split, pgd, positions, eval_n

    @classmethod
    def attacks_of(cls, ev):
        return ("pgd",) if ev.fp64_n else ()

    @staticmethod
    def draw(labels, fp64_n: int):
        """The check's images: their positions in the evaluation whose labels these are."""
        return stratified_indices(labels, min(fp64_n, len(labels)), 1)

    @classmethod
    def prepare(cls, ctx, log):
        ev = ctx.plan.profile.eval
        if not ev.fp64_n:
            return None
        split = ctx.eval_split
        positions = cls.draw(split.labels, ev.fp64_n)
        return cls(split.subset(positions), ctx.plan.profile.attack("pgd"), positions, len(split))

    def planned(self, spec, ctx):
        return [(len(self.split), "pgd_fp64", "raw", fp64_params(self.pgd))]

    def run(self, model, spec, ctx, log):
        ev = ctx.plan.profile.eval
        m = fp64_check(model, spec.T, self.split, self.pgd, ev.batch_size, ev.attack_seed, ctx.data.num_classes)
        # which images of which evaluation, as the cross-check's record says (bench/store.py part_of)
        m.extra["positions"] = part_positions(self.positions, self.eval_n)
        return [m]

    def summary(self, ms):
        x = ms[0].metrics
        return (f"CE-PGD raw fp32 {pct(x['robust_acc_fp32'])} vs fp64 {pct(x['robust_acc_fp64'])} "
                f"(zero grad {pct(x['zero_grad_frac_fp32'])} vs {pct(x['zero_grad_frac_fp64'])})")
