"""The AutoAttack cross-check: torchattacks' AutoAttack against its authors' implementation
(pyautoattack) on the same images, raw view, same seed. The two must agree at any budget; the
record keeps each one's per-image result, so that robust_worst counts both on the images they
covered, and the warnings the authors' code raised (zero gradients, Square beating the gradient
attacks, ...), which the audit shows."""
from __future__ import annotations

import json
import time
from typing import Optional, Sequence

from attacks import AttackConfig
from attacks.views import PassCount
from attacks.autoattack_ref import collect_warnings
from bench.data import Split, stratified_indices
from bench.errors import BenchError
from bench.measure.adversarial import clean_pass, run_attack
from bench.measure.attack_suite import record_version
from bench.measure.base import Family, Measurement, frac, pct
from bench.store import pack_bits, part_positions


def crosscheck_params(ours: AttackConfig, ref: AttackConfig) -> dict:
    return dict(ours.kwargs, attacks=[ours.name, ref.name])


def autoattack_crosscheck(model, temperature: float, split: Split, ours: AttackConfig, ref: AttackConfig,
                          batch_size: int, seed: int, n_classes: int, positions: Optional[Sequence[int]] = None,
                          eval_n: Optional[int] = None) -> Measurement:
    """``split`` is a subset of the ``eval_n``-image evaluation split and ``positions`` its
    images' places there (kept in the record; ``bits``: robust under both)."""
    t0 = time.perf_counter()
    model.eval()
    cost = PassCount()
    ok, _, _ = clean_pass(model, split, batch_size, ["raw"], temperature, cost=cost)
    metrics = {"clean_acc": frac(ok)}
    robust = {}
    with collect_warnings() as warnings:
        for tag, cfg in (("torchattacks", ours), ("pyautoattack", ref)):
            run = run_attack(model, temperature, split, ok, cfg, "raw", batch_size, seed, n_classes)
            robust[tag], spent = run.robust_ok, run.cost
            cost.add(spent)
            metrics[f"robust_acc_{tag}"] = frac(robust[tag])
            metrics.update({f"{k}_{tag}": v for k, v in spent.metrics(len(split)).items() if k.endswith("per_image")})
    metrics["abs_diff"] = abs(metrics["robust_acc_torchattacks"] - metrics["robust_acc_pyautoattack"])
    metrics["aa_warnings"] = len(warnings)
    metrics.update(cost.metrics(len(split)))  # the clean pass and both AutoAttacks
    extra = {f"bits_{tag}": pack_bits(r) for tag, r in robust.items()}
    extra["autoattack_warnings"] = list(warnings)
    # the reference's own budget: the identity names torchattacks' settings only (CrossCheck.stale)
    extra["ref_params"] = dict(ref.kwargs)
    if positions is not None:
        extra["positions"] = part_positions(positions, eval_n)
    return Measurement("autoattack_crosscheck", "raw", ours.eps, ours.steps, crosscheck_params(ours, ref), len(split),
                       metrics, time.perf_counter() - t0, family="diagnostic",
                       bits=pack_bits(robust["torchattacks"] & robust["pyautoattack"]), extra=extra)


class CrossCheck(Family):
    name = "autoattack crosscheck"
    batch_seeded = True

    @classmethod
    def version_of(cls, identity):
        # a revision of either AutoAttack re-measures the cross-check, as PGD's does the fp64 check
        return record_version(record_version(cls.version, "autoattack"), "autoattack_ref")
    parts_of_evaluation = True

    def __init__(self, split: Split, positions, ours: AttackConfig, ref: AttackConfig):
        self.split, self.positions, self.ours, self.ref = split, positions, ours, ref

    @classmethod
    def attacks_of(cls, ev):
        return ("autoattack", "autoattack_ref") if ev.crosscheck_n else ()

    @classmethod
    def check(cls, profile):
        # the record's budget (params, steps, the audit's label) is torchattacks'; a reference at
        # another budget made abs_diff a difference of budgets, not of implementations
        if not profile.eval.crosscheck_n:
            return
        ours, ref = profile.attack("autoattack").kwargs, profile.attack("autoattack_ref").kwargs
        differ = [k for k in ours if ours[k] != ref.get(k)]
        if differ:
            raise BenchError(f"the AutoAttack cross-check compares two implementations at one budget, and "
                             f"autoattack and autoattack_ref differ in {', '.join(differ)} "
                             f"({', '.join(f'{ours[k]} vs {ref.get(k)}' for k in differ)}): give both the same "
                             f"(--param autoattack.KEY=V --param autoattack_ref.KEY=V, or both [attack.*] tables)")

    @classmethod
    def prepare(cls, ctx, log):
        ev = ctx.plan.profile.eval
        if not ev.crosscheck_n:
            return None
        split = ctx.eval_split
        positions = stratified_indices(split.labels, min(ev.crosscheck_n, len(split)), 2)
        return cls(split.subset(positions), positions, ctx.plan.profile.attack("autoattack"),
                   ctx.plan.profile.attack("autoattack_ref"))

    def planned(self, spec, ctx):
        profile = ctx.plan.profile
        if profile.eval.crosscheck_models and spec.name in profile.models \
                and spec.name not in profile.eval.crosscheck_models:
            return []
        return [(len(self.split), "autoattack_crosscheck", "raw", crosscheck_params(self.ours, self.ref))]

    def run(self, model, spec, ctx, log):
        ev = ctx.plan.profile.eval
        return [autoattack_crosscheck(model, spec.T, self.split, self.ours, self.ref, ev.batch_size, ev.attack_seed,
                                      ctx.data.num_classes, self.positions, len(ctx.eval_split))]

    def stale(self, record, identity, ctx):
        """A record of the reference AutoAttack at another budget ([attack.autoattack_ref]), which
        the identity does not name: measured again. One made before the record kept it stands."""
        made = record.get("ref_params")  # as read back from JSON: compared with the settings read back the same way
        return made is not None and made != json.loads(json.dumps(self.ref.kwargs))

    def summary(self, ms):
        m = ms[0]
        return (f"AutoAttack torchattacks {pct(m.metrics['robust_acc_torchattacks'])} vs pyautoattack "
                f"{pct(m.metrics['robust_acc_pyautoattack'])} on {m.n} images")
